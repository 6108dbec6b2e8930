"""Kills at every instant of a save, and SIGTERM mid-epoch: after `--resume` the run finishes with best.pt
holding the best epoch and last.pt recording it (tests/kill_harness.py plants each kill exactly)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from modules.checkpoint import load_checkpoint

HARNESS = REPO / "tests" / "kill_harness.py"
pytestmark = pytest.mark.slow  # ten short training runs as subprocesses


def _argv(data: Path, project: Path, *extra: str) -> list[str]:
    return ["--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data", str(data), "--hyp",
            str(REPO / "cfg/hyp-demo.yaml"), "--img-size", "64", "--batch-size", "2", "--nbs", "4",
            "--device", "cpu", "--workers", "0", "--no-channels-last", "--project", str(project),
            "--name", "exp", "--epochs", "2", *extra]


def _harness(at: str, epoch: int, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HARNESS), at, str(epoch), "--", *argv], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})


# (kill instant, what best.pt holds right after the kill (epoch), last.pt's epoch right after)
KILLS = [
    ("best_tmp", 0, 0),  # killed while epoch 1's best.pt temp file is written: both files are epoch 0's
    ("after_best", 1, 0),  # best.pt of epoch 1 committed, last.pt still epoch 0: best.pt is ahead
    ("last_tmp", 1, 0),  # killed while epoch 1's last.pt temp file is written
    ("after_last", 1, 1),  # both committed, killed before the results row and finalisation
]


@pytest.mark.parametrize(("at", "best_after_kill", "last_after_kill"), KILLS)
def test_kill_during_a_save_loses_nothing(tiny_shapes: Path, tmp_path: Path, at: str, best_after_kill: int,
                                          last_after_kill: int) -> None:
    weights = tmp_path / "exp" / "weights"
    proc = _harness(at, 1, _argv(tiny_shapes, tmp_path))
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_checkpoint(weights / "best.pt")["epoch"] == best_after_kill
    last = load_checkpoint(weights / "last.pt")
    assert last["epoch"] == last_after_kill
    assert last["best_epoch"] == last_after_kill  # every epoch improves, so last.pt's best is itself
    resumed = _harness("none", 0, _argv(tiny_shapes, tmp_path, "--resume", str(weights / "last.pt")))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    best, last = load_checkpoint(weights / "best.pt"), load_checkpoint(weights / "last.pt")
    assert best["epoch"] == 1 and last["best_epoch"] == 1 and last["finished"] is True
    assert best["best_fitness"] == pytest.approx(0.1 * 0.2 + 0.9 * 0.2)
    assert f"final evaluation of {weights / 'best.pt'}" in resumed.stderr
    assert not list(weights.glob(".*.tmp"))


def test_sigterm_mid_epoch_is_like_ctrl_c(tiny_shapes: Path, tmp_path: Path) -> None:
    weights = tmp_path / "exp" / "weights"
    proc = _harness("sigterm", 1, _argv(tiny_shapes, tmp_path))
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"terminated (SIGTERM): resume with: python train.py --resume {weights / 'last.pt'}" in proc.stderr
    assert load_checkpoint(weights / "last.pt")["epoch"] == 0
    assert load_checkpoint(weights / "best.pt")["epoch"] == 0
    assert not (tmp_path / "exp" / ".run.lock").exists()  # released on the way out
    resumed = _harness("none", 0, _argv(tiny_shapes, tmp_path, "--resume", str(weights / "last.pt")))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(weights / "best.pt")["epoch"] == 1
