"""--evolve keeps every trial's metrics but only the best trial's weights (--evolve-keep-weights: all)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_train_runs import _train_cmd, shapes  # noqa: F401 (fixture)

import train
from build_utils.hyp import load_hyp
from modules.loading import load_model
from train_val_utils.training.distributed_utils import DistInfo
from train_val_utils.training.run_config import RunConfig
from train_val_utils.tune.evolve import load_search_space, run_evolve
from train_val_utils.tune.trial_weights import best_complete_trial, prune_trial_weights

REPO = Path(__file__).resolve().parents[1]


def _trial(number: int, state: str, value: float | None, root: Path) -> SimpleNamespace:
    (root / f"trial{number}" / "weights").mkdir(parents=True)
    (root / f"trial{number}" / "weights" / "last.pt").write_bytes(b"x")
    (root / f"trial{number}" / "results.csv").write_text("epoch\n0\n")
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), value=value,
                           user_attrs={"run_dir": str(root / f"trial{number}")})


def test_only_finished_trials_lose_their_weights_and_the_best_keeps_them(tmp_path: Path) -> None:
    trials = [_trial(0, "COMPLETE", 0.2, tmp_path), _trial(1, "COMPLETE", 0.5, tmp_path),
              _trial(2, "PRUNED", None, tmp_path), _trial(3, "RUNNING", None, tmp_path),
              _trial(4, "FAIL", None, tmp_path)]
    study = SimpleNamespace(get_trials=lambda deepcopy=False: trials)
    assert best_complete_trial(study).number == 1
    removed = prune_trial_weights(study, tmp_path)
    assert sorted(p.parent.name for p in removed) == ["trial0", "trial2", "trial4"]
    kept = sorted(p.parent.name for p in tmp_path.glob("trial*/weights"))
    assert kept == ["trial1", "trial3"]  # the best, and one still running
    assert len(list(tmp_path.glob("trial*/results.csv"))) == 5  # metrics stay


def test_keep_weights_flag_reaches_the_run_config() -> None:
    args = train.get_args_parser().parse_args(["--evolve", "2", "--evolve-keep-weights"])
    assert RunConfig.from_options(vars(args)).evolve_keep_weights is True
    assert train.get_args_parser().parse_args([]).evolve_keep_weights is False


@pytest.mark.slow
def test_evolve_4_leaves_the_best_trials_weights_only(shapes: Path, tmp_path: Path) -> None:  # noqa: F811
    args = train.get_args_parser().parse_args(_train_cmd(shapes, tmp_path, "--epochs", "1")[2:])
    space = tmp_path / "space.yaml"
    space.write_text("lr0: {low: 0.001, high: 0.05, log: true}\n")
    study = run_evolve(RunConfig.from_options(vars(args)), load_hyp(REPO / "cfg/hyp-demo.yaml"),
                       load_search_space(space), tmp_path / "ev", DistInfo(0, 1, 0, torch.device("cpu")), 4)
    assert len(study.trials) == 4
    best = best_complete_trial(study)
    assert [p.parent.name for p in (tmp_path / "ev").glob("trial*/weights")] == [f"trial{best.number}"]
    assert len(list((tmp_path / "ev").glob("trial*/results.csv"))) == 4  # every trial's metrics stay
    model, names = load_model(tmp_path / "ev" / f"trial{best.number}" / "weights" / "best.pt")
    assert model.nc == 5 and len(names) == 5
