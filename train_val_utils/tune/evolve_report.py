"""The files an `--evolve` study leaves in its folder, rewritten after every trial from the storage.

- `evolve.csv`: one row per trial of the whole study (every worker's): number, state, the searched
  hyp values, fitness, mAP@0.5, mAP@0.5:0.95 (of the trial's best epoch);
- `hyp_evolved.yaml`: the full validated hyp with the best complete trial's values, written atomically,
  so it is always a valid `--hyp` file;
- `evolve_history.png` (fitness per trial and the best so far), `evolve_importance.png` (Optuna's
  parameter importances, once 2 trials completed), `evolve_params.png` (each key against fitness).
Plots are matplotlib files (no browser); a failing plot is logged, never fatal to the study.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import yaml

from build_utils.atomic import atomic_write
from build_utils.hyp import validate_hyp

logger = logging.getLogger(__name__)


def trial_rows(study: Any, keys: list[str]) -> list[dict[str, Any]]:
    """One dict per trial: number, state, searched values, fitness, map50, map (NaN when unknown)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        fit = t.value if t.value is not None else attrs.get("fitness", math.nan)
        rows.append({"number": t.number, "state": t.state.name,
                     **{k: t.params.get(k, math.nan) for k in keys},
                     "fitness": fit, "map50": attrs.get("map50", math.nan),
                     "map": attrs.get("map", math.nan)})
    return rows


def best_hyp(study: Any, base_hyp: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(the full hyp with the best complete trial's values, that trial) or (base hyp, None)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return dict(base_hyp), None
    best = max(complete, key=lambda t: t.value)
    return validate_hyp({**base_hyp, **best.params}, f"trial {best.number}"), best


def write_csv(rows: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["number", "state", *keys, "fitness", "map50", "map"])
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(path) as f:
        f.write(buf.getvalue().encode())


def write_best_hyp(study: Any, base_hyp: dict[str, Any], path: Path) -> None:
    hyp, best = best_hyp(study, base_hyp)
    name = study.study_name
    head = (f"# Best of study {name!r}: trial {best.number}, fitness {best.value:.5f}\n" if best is not None
            else f"# Study {name!r} has no complete trial yet: the base hyp\n")
    head += "# Written by train.py --evolve; use it as: python train.py --hyp <this file>\n"
    with atomic_write(path) as f:
        f.write((head + yaml.safe_dump(hyp, sort_keys=False)).encode())


def _save_figure(fig: Any, path: Path) -> None:
    """Atomic PNG write: several workers of one study may redraw the same file at once."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def plot_history(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED") and not math.isnan(r["fitness"])]
    fig, ax = plt.subplots(figsize=(6, 4), tight_layout=True)
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        pts = [r for r in done if r["state"] == state]
        ax.scatter([r["number"] for r in pts], [r["fitness"] for r in pts], marker=marker,
                   label=state.lower())
    complete = sorted((r for r in done if r["state"] == "COMPLETE"), key=lambda r: r["number"])
    best, xs, ys = -math.inf, [], []
    for r in complete:
        best = max(best, r["fitness"])
        xs.append(r["number"])
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel="fitness (0.1 mAP@0.5 + 0.9 mAP@0.5:0.95)", title="optimisation history")
    ax.legend()
    _save_figure(fig, path)


def plot_importance(study: Any, path: Path) -> None:
    """Optuna's parameter importances; needs 2 complete trials (otherwise a note is logged)."""
    import matplotlib.pyplot as plt
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        logger.info("evolve: parameter importances need 2 complete trials (have %d); %s skipped",
                    len(complete), path.name)
        return
    importances = optuna.importance.get_param_importances(study)
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(importances) + 1.5), tight_layout=True)
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance (fANOVA)", title="hyperparameter importances")
    _save_figure(fig, path)


def plot_params(rows: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["state"] == "COMPLETE"]
    cols = min(len(keys), 4) or 1
    nrows = math.ceil(len(keys) / cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 2.6 * nrows), tight_layout=True, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.scatter([r[key] for r in done], [r["fitness"] for r in done], s=12)
        ax.set(xlabel=key, ylabel="fitness")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    _save_figure(fig, path)


def write_outputs(study: Any, base_hyp: dict[str, Any], space: list[Any], evolve_dir: Path) -> None:
    """Rewrite evolve.csv, hyp_evolved.yaml and the plots from the study's current trials."""
    import matplotlib

    matplotlib.use("Agg")
    keys = [k.name for k in space]
    rows = trial_rows(study, keys)
    write_csv(rows, keys, evolve_dir / "evolve.csv")
    write_best_hyp(study, base_hyp, evolve_dir / "hyp_evolved.yaml")
    for fn, args in ((plot_history, (rows, evolve_dir / "evolve_history.png")),
                     (plot_importance, (study, evolve_dir / "evolve_importance.png")),
                     (plot_params, (rows, keys, evolve_dir / "evolve_params.png"))):
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - a plot must not end a study that took hours
            logger.warning("evolve: %s failed (%s)", fn.__name__, err)
