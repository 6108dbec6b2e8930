"""Mid-epoch checkpoints: the resumable sampler, the save period, the refusals, and a run killed right
after a mid-epoch save that resumes to the same weights as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import signal_on_line
from torch.utils.data import RandomSampler

from build_utils.errors import UserError
from modules.checkpoint import load_checkpoint, rng_state
from train_val_utils.training.distributed_utils import DistInfo
from train_val_utils.training.mid_epoch import ResumeSampler, SavePeriod, mid_epoch_entry, restore_position

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SINGLE = DistInfo(0, 1, 0, torch.device("cpu"))


def test_resume_sampler_skips_the_trained_batches_of_one_epoch_only() -> None:
    inner = RandomSampler(range(10), generator=torch.Generator().manual_seed(5))
    order = list(ResumeSampler(RandomSampler(range(10), generator=torch.Generator().manual_seed(5))))
    sampler = ResumeSampler(inner)
    sampler.skip_next_epoch(4)
    assert len(sampler) == 6
    assert list(sampler) == order[4:]  # the same (seed, epoch) order, minus the first 4 indices
    assert len(sampler) == 10 and len(list(sampler)) == 10  # the next epoch is whole again


def test_save_period_counts_steps_and_minutes() -> None:
    steps = SavePeriod(steps=3, minutes=0)
    assert steps.enabled and [steps.due(SINGLE) for _ in range(3)] == [False, False, True]
    steps.reset()
    assert not steps.due(SINGLE)
    assert not SavePeriod(0, 0).enabled
    timed = SavePeriod(steps=0, minutes=1.0)
    assert not timed.due(SINGLE)
    timed.last -= 61  # a minute has passed since the last save
    assert timed.due(SINGLE)


def test_restore_position_refuses_another_layout_and_restores_rng() -> None:
    torch.manual_seed(11)
    saved = rng_state()
    expected = torch.rand(3)
    loop = {"last_step": 4, "size": 64}
    ckpt = {"mid_epoch": mid_epoch_entry(2, 5, 1, 4, [{**loop, "rng": saved}])}
    torch.manual_seed(0)
    position = restore_position(ckpt, "last.pt", SINGLE, 4)
    assert (position.epoch, position.batch, position.loop) == (2, 5, loop)
    assert torch.equal(torch.rand(3), expected)  # this rank's RNG continues where the save left it
    with pytest.raises(UserError, match="same process count and --batch-size"):
        restore_position(ckpt, "last.pt", SINGLE, 8)
    assert restore_position({"epoch": 3}, "last.pt", SINGLE, 4) is None


def _train(data: Path, project: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), "--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data",
            str(data), "--hyp", str(REPO / "cfg/hyp-demo.yaml"), "--img-size", "64", "--batch-size", "1",
            "--nbs", "2", "--device", "cpu", "--workers", "0", "--no-amp", "--epochs", "2", "--notest",
            "--deterministic", "--seed", "2", "--multi-scale", "--project", str(project), *extra]


def _model(last: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(last)
    return {f"{key}.{k}": v for key in ("model", "ema") for k, v in ckpt[key].items()}


@pytest.mark.slow
def test_sigkill_after_a_mid_epoch_save_resumes_bit_for_bit(tiny_shapes: Path, tmp_path: Path) -> None:
    full = subprocess.run(_train(tiny_shapes, tmp_path / "full"), env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert full.returncode == 0, full.stderr[-2000:]
    proc = subprocess.Popen(_train(tiny_shapes, tmp_path / "cut", "--save-period-steps", "1"), env=ENV,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    # 4 images, batch 1, accumulate 2: steps after batches 1 and 3; the one after 1 is mid-epoch
    signal_on_line(proc, "mid-epoch save: epoch 1, step 2", signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    last = tmp_path / "cut" / "exp" / "weights" / "last.pt"
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 0 and ckpt["mid_epoch"]["epoch"] == 1 and ckpt["mid_epoch"]["batch"] == 2
    resumed = subprocess.run(_train(tiny_shapes, tmp_path / "cut", "--resume", str(last)), env=ENV,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "inside epoch 1 at batch 2" in resumed.stderr
    a, b = _model(tmp_path / "full" / "exp" / "weights" / "last.pt"), _model(last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_full, rows_cut = load_checkpoint(tmp_path / "full" / "exp" / "weights" / "last.pt")["results"], \
        load_checkpoint(last)["results"]
    assert [r["total_loss"] for r in rows_full] == [r["total_loss"] for r in rows_cut]  # the loss meters too
