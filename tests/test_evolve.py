"""train.py --evolve: Optuna studies of short shapes runs (2 processes on one SQLite study, pruning,
continuing a study, the search-space file, and the one-line hint when optuna is missing)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_runs import ENV, _train_cmd, shapes  # noqa: F401 (fixture)

import train
from build_utils.cli import run_cli
from build_utils.errors import ConfigError
from build_utils.hyp import load_hyp
from train_val_utils.training.distributed_utils import DistInfo
from train_val_utils.training.run_config import RunConfig
from train_val_utils.tune.evolve import load_search_space, run_evolve

REPO = Path(__file__).resolve().parents[1]
SPACE = "lr0: {low: 0.001, high: 0.05, log: true}\nmomentum: {low: 0.8, high: 0.95}\n"


def _space(tmp: Path) -> Path:
    path = tmp / "space.yaml"
    path.write_text(SPACE)
    return path


def _evolve_cmd(data: Path, tmp: Path, n: int, sampler: str) -> list[str]:
    return _train_cmd(data, tmp / "evolve", "--epochs", "1", "--batch-size", "4", "--evolve", str(n),
                      "--evolve-sampler", sampler, "--evolve-storage", f"sqlite:///{tmp / 'study.db'}",
                      "--evolve-name", "shapes", "--evolve-space", str(_space(tmp)), "--name", "exp",
                      "--exist-ok", "--no-channels-last")


@pytest.mark.slow
def test_two_processes_share_one_study_and_a_rerun_continues_it(shapes: Path,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    import optuna

    procs = [subprocess.Popen(_evolve_cmd(shapes, tmp_path, 2, s), env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for s in ("ga", "cmaes")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    trials = optuna.load_study(study_name="shapes", storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # both processes' trials, no number twice
    assert all(t.state.name == "COMPLETE" and 0.001 <= t.params["lr0"] <= 0.05 for t in trials)
    run_dir = tmp_path / "evolve" / "exp"
    assert {f"trial{i}" for i in range(4)} <= {p.name for p in run_dir.iterdir()}
    hyp = load_hyp(run_dir / "hyp_evolved.yaml")  # always a complete, valid --hyp file
    best = max(trials, key=lambda t: t.value)
    assert hyp["lr0"] == pytest.approx(best.params["lr0"])
    assert hyp["giou"] == load_hyp(REPO / "cfg/hyp-demo.yaml")["giou"]  # keys not searched stay fixed

    again = subprocess.run(_evolve_cmd(shapes, tmp_path, 1, "tpe"), env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = list(csv.DictReader((run_dir / "evolve.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3, 4] and {r["state"] for r in rows} == {"COMPLETE"}
    assert {"lr0", "momentum", "fitness", "map50", "map"} <= set(rows[0])
    for name in ("evolve_history.png", "evolve_importance.png", "evolve_params.png"):
        assert (run_dir / name).stat().st_size > 0, name


@pytest.mark.slow
def test_pruned_trial_is_recorded_as_pruned(shapes: Path, tmp_path: Path) -> None:  # noqa: F811
    import optuna

    args = train.get_args_parser().parse_args(_train_cmd(shapes, tmp_path, "--epochs", "2")[2:])
    run = RunConfig.from_options(vars(args))
    dist = DistInfo(0, 1, 0, torch.device("cpu"))
    pruner = optuna.pruners.ThresholdPruner(lower=10.0)  # fitness never reaches 10: pruned at epoch 0
    study = run_evolve(run, load_hyp(REPO / "cfg/hyp-demo.yaml"), load_search_space(_space(tmp_path)),
                       tmp_path / "ev", dist, 1, pruner=pruner)
    (trial,) = study.trials
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [0]
    rows = list(csv.DictReader((tmp_path / "ev" / "evolve.csv").open()))
    assert rows[0]["state"] == "PRUNED"
    assert (tmp_path / "ev" / "study.db").is_file()  # the default storage
    assert "no complete trial" in (tmp_path / "ev" / "hyp_evolved.yaml").read_text()


def test_missing_optuna_gives_one_install_line(shapes: Path, tmp_path: Path,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    args = train.get_args_parser().parse_args(_train_cmd(shapes, tmp_path, "--evolve", "2")[2:])
    assert run_cli(train.main, args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "pip install -e '.[tune]'" in err[0]


def test_search_space_mistakes_name_the_key(tmp_path: Path) -> None:
    keys = load_search_space(REPO / "cfg/evolve.yaml")
    assert {"lr0", "momentum", "hsv_s"} <= {k.name for k in keys} and all(k.low < k.high for k in keys)
    bad = tmp_path / "bad.yaml"
    cases = (("lr00: {low: 0.1, high: 0.2}", "lr00"),
             ("weight_decay: {low: 0, high: 0.1, log: true}", "low > 0"),
             ("momentum: {low: 0.5, high: 1.5}", "allowed range"), ("lr0: 3", "expected"))
    for text, needle in cases:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_search_space(bad)
