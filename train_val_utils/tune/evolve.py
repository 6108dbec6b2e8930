"""`train.py --evolve N`: hyperparameter search as an Optuna study of short training runs.

Each trial draws the keys of the search space (`cfg/evolve.yaml`: per key low/high/log; keys not
listed keep the `--hyp` value), trains in-process with its own run folder under the evolve folder
(`trialK/`), and reports the fitness of every epoch (`trainer.fitness`, evaluated each epoch whatever
`--notest` says) so a pruner can stop bad trials early. The study lives in a storage: by default a
SQLite file in the evolve folder; a shared PostgreSQL/MySQL URL lets any number of machines run
trials of one study (Optuna hands out trial numbers, so none is used twice), and re-running with the
same storage and name continues the study. After every trial the evolve folder gets `evolve.csv`,
`hyp_evolved.yaml` (the best hyp so far, a complete file for `--hyp`) and the plots (`evolve_report.py`).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from build_utils.errors import ConfigError, UserError
from build_utils.hyp import SCHEMA, validate_hyp
from build_utils.project_files import locate
from build_utils.text_io import read_yaml_file
from train_val_utils.training.distributed_utils import DistInfo
from train_val_utils.training.run_config import RunConfig

logger = logging.getLogger(__name__)

INSTALL_HINT = ("--evolve needs Optuna, which is not installed: pip install -e '.[tune]' "
                "(or pip install 'optuna>=3.5' 'cmaes>=0.10')")
SAMPLERS = ("tpe", "cmaes", "ga")
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
DEFAULT_STUDY_NAME = "evolve"


def import_optuna() -> Any:
    """The optuna module, or a `UserError` whose one line says how to install the `[tune]` extra."""
    try:
        import optuna
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return optuna


@dataclass(frozen=True)
class SearchKey:
    """One searched hyperparameter: uniform (or log-uniform) in [low, high]."""

    name: str
    low: float
    high: float
    log: bool = False


def load_search_space(path: str | Path) -> list[SearchKey]:
    """Read and check `cfg/evolve.yaml`; every problem raises one `ConfigError` naming the file and key."""
    path = locate(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search-space file not found; pass --evolve-space cfg/evolve.yaml")
    raw = read_yaml_file(path, ConfigError, "start from cfg/evolve.yaml") or {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected `key: {{low: .., high: .., log: ..}}` lines "
                          "(see cfg/evolve.yaml)")
    keys = []
    for name, spec in raw.items():
        where = f"{path}: {name}"
        if name not in SCHEMA:
            raise ConfigError(f"{where}: not a numeric key of cfg/hyp.yaml; use one of {', '.join(SCHEMA)}")
        allowed = {"low", "high", "log"}
        if not isinstance(spec, dict) or not {"low", "high"} <= set(spec) or set(spec) - allowed:
            raise ConfigError(f"{where}: expected {{low: <number>, high: <number>, log: <true|false>}}")
        try:
            key = SearchKey(name, float(spec["low"]), float(spec["high"]), bool(spec.get("log", False)))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: low and high must be numbers") from None
        rule = SCHEMA[name]
        if not key.low < key.high or not (rule.ok(key.low) and rule.ok(key.high)):
            raise ConfigError(f"{where}: need low < high inside the allowed range {rule.describe()}")
        if key.log and key.low <= 0:
            raise ConfigError(f"{where}: log: true needs low > 0")
        keys.append(key)
    return keys


def make_sampler(name: str, seed: int | None) -> Any:
    """Optuna's TPE, CMA-ES or genetic (NSGA-II) sampler."""
    optuna = import_optuna()
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  (CmaEsSampler needs it only when it samples)
        except ImportError:
            raise UserError("--evolve-sampler cmaes needs the cmaes package: "
                            "pip install -e '.[tune]'") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "ga":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise UserError(f"--evolve-sampler {name!r}: expected one of {', '.join(SAMPLERS)}")


def default_pruner() -> Any:
    """Median pruning once 3 trials finished, never on a trial's first epoch (its fitness is noise)."""
    return import_optuna().pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


SQLITE_MAGIC = b"SQLite format 3\x00"
# A trial process killed with -9 stops beating; when the study next runs, Optuna marks its trial FAIL
# once no heartbeat came for the grace period (it would otherwise stay RUNNING forever).
HEARTBEAT_S, GRACE_S = 60, 180


def check_storage(url: str) -> str:
    """Accept sqlite:///path, postgresql://..., mysql://... (optional +driver), refusing what would lose
    or scatter the study: an in-memory SQLite (kept nowhere), a SQLite file in a folder that does not
    exist (a typo would silently start a new study elsewhere), and a file that is not a SQLite database."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in STORAGE_SCHEMES:
        raise UserError(f"--evolve-storage {url!r}: expected sqlite:///path/study.db, "
                        "postgresql://user:pw@host/db or mysql://user:pw@host/db")
    if scheme != "sqlite":
        return url
    db = url.split("://", 1)[1][1:].split("?", 1)[0] if url.split("://", 1)[1].startswith("/") else ""
    if db in ("", ":memory:") or "mode=memory" in url:
        raise UserError(f"--evolve-storage {url!r}: an in-memory SQLite study is kept nowhere; name a file, "
                        "e.g. sqlite:///runs/evolve/study.db")
    path = Path(db)
    if not path.parent.is_dir():
        raise UserError(f"--evolve-storage {url!r}: the folder {path.parent} does not exist; create it or "
                        "name a file in an existing folder")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                raise UserError(f"--evolve-storage {url!r}: {path} is not a SQLite database; name a new file "
                                "or the study.db an earlier --evolve wrote")
    return url


def open_study(storage: str, name: str, sampler: Any, pruner: Any, attempts: int = 5,
               heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> Any:
    """Create the study or load it (continue); retries the race of two processes creating it at once.

    The storage runs Optuna's heartbeat, so trials of killed processes are marked FAIL (logged) when
    the study continues instead of staying RUNNING forever.
    """
    optuna = import_optuna()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is flagged experimental (Optuna 3-5)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=heartbeat_s,
                                                 grace_period=grace_s)
            return optuna.create_study(storage=rdb, study_name=name, sampler=sampler, pruner=pruner,
                                       direction="maximize", load_if_exists=True)
        except Exception as err:  # noqa: BLE001 - the DB driver's own error types (locked, exists)
            if attempt == attempts - 1:
                raise UserError(f"--evolve-storage {storage}: cannot open study {name!r} ({err})") from None
            logger.info("study %s busy (%s); retrying", name, err)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def fail_killed_trials(study: Any) -> list[int]:
    """Mark FAIL (and log) the RUNNING trials whose process stopped beating, e.g. killed with -9; returns
    their numbers. Optuna repeats this before each new trial, for kills during this run."""
    optuna = import_optuna()
    running = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
    with warnings.catch_warnings():  # flagged experimental too
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = sorted(t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
                    if t.number in running)
    if failed:
        logger.warning("evolve: trial(s) %s stopped beating (their process was killed); marked FAIL",
                       ", ".join(map(str, failed)))
    return failed


def trial_run_config(run: RunConfig, hyp_path: Path, evolve_dir: Path, number: int) -> RunConfig:
    """The trial's options: its hyp file and run folder, evaluated every epoch, never evolving itself."""
    return replace(run, hyp=str(hyp_path), notest=False, evolve=0, resume=None, project=str(evolve_dir),
                   name=f"trial{number}", exist_ok=True)


class EvolveObjective:
    """Optuna objective: suggest the searched keys, train one run, report per-epoch fitness, prune."""

    def __init__(self, run: RunConfig, base_hyp: dict[str, Any], space: list[SearchKey], evolve_dir: Path,
                 dist_info: DistInfo) -> None:
        self.run, self.base_hyp, self.space = run, base_hyp, space
        self.evolve_dir, self.dist = evolve_dir, dist_info

    def __call__(self, trial: Any) -> float:
        from train_val_utils.trainer import Trainer

        optuna = import_optuna()
        hyp = validate_hyp({**self.base_hyp, **{k.name: trial.suggest_float(k.name, k.low, k.high, log=k.log)
                                                for k in self.space}}, f"trial {trial.number}")
        trial_dir = self.evolve_dir / f"trial{trial.number}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        hyp_path = trial_dir / "hyp.yaml"
        hyp_path.write_text(yaml.safe_dump(hyp, sort_keys=False))
        trial.set_user_attr("run_dir", str(trial_dir))
        pruned_at: list[int] = []

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> bool:
            fit = float(metrics["fitness"])
            if fit != fit:  # NaN: not evaluated
                return False
            if fit >= float(trial.user_attrs.get("fitness", -1.0)):
                for key in ("fitness", "map50", "map"):
                    trial.set_user_attr(key, float(metrics[key]))
            trial.report(fit, epoch)
            if trial.should_prune():
                pruned_at.append(epoch)
                return True
            return False

        trainer = Trainer(trial_run_config(self.run, hyp_path, self.evolve_dir, trial.number), self.dist,
                          epoch_callback=on_epoch)
        trainer.fit()
        if pruned_at:
            raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {pruned_at[0]}")
        return float(trainer.best_fitness)


def run_evolve(run: RunConfig, base_hyp: dict[str, Any], space: list[SearchKey], evolve_dir: Path,
               dist_info: DistInfo, n_trials: int, storage: str | None = None, study_name: str | None = None,
               sampler: str = "tpe", pruner: Any = None, keep_weights: bool = False) -> Any:
    """Run `n_trials` trials of the study (created or continued); returns the Optuna study. Unless
    `keep_weights`, only the best trial keeps its weights (`trial_weights.py`)."""
    from train_val_utils.tune.evolve_report import write_outputs
    from train_val_utils.tune.trial_weights import prune_trial_weights

    import_optuna()
    if dist_info.distributed:
        raise UserError("--evolve runs its trials in one process; start it without torchrun (run several "
                        "--evolve processes on one --evolve-storage to use more GPUs or machines)")
    evolve_dir.mkdir(parents=True, exist_ok=True)
    url = check_storage(storage or f"sqlite:///{(evolve_dir / 'study.db').resolve()}")
    # a shared storage has several workers: seeding them alike would repeat the same suggestions
    seed = None if storage else run.seed
    study = open_study(url, study_name or DEFAULT_STUDY_NAME, make_sampler(sampler, seed),
                       pruner if pruner is not None else default_pruner())
    fail_killed_trials(study)
    before = len(study.trials)
    logger.info("evolve: study %r in %s (%d trials so far), %d more with the %s sampler; results in %s",
                study.study_name, url, before, n_trials, sampler, evolve_dir)
    objective = EvolveObjective(run, base_hyp, space, evolve_dir, dist_info)
    callbacks = [lambda s, _t: write_outputs(s, base_hyp, space, evolve_dir)]
    if not keep_weights:
        callbacks.append(lambda s, _t: prune_trial_weights(s, evolve_dir))
    study.optimize(objective, n_trials=n_trials, catch=(), callbacks=callbacks)
    write_outputs(study, base_hyp, space, evolve_dir)
    return study
