"""Accumulation, the loss scale and optimizer steps, exactly: `loss x bs / nbs` per batch, the warm-up
ramp of batches per step counted by hand, and a real `--nbs 8 --batch-size 3` run accumulating
round(8 / 3) = 3 batches (floor would give 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.hyp import load_hyp
from modules.model import DarkNet
from train_val_utils.engine import StepSchedule, TrainKit, train_one_epoch
from train_val_utils.loss import YoloLoss
from train_val_utils.training.distributed_utils import DistInfo
from train_val_utils.training.optim import optimizer_steps

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def hyp() -> dict:
    return load_hyp(REPO / "cfg" / "hyp.yaml")


def _demo_model(nc: int = 5) -> DarkNet:
    text = rewrite_cfg_classes((REPO / "cfg" / "yolov3-demo.cfg").read_text(), nc)
    return DarkNet.from_cfg_text(text, source="demo.cfg")


def test_one_step_applies_the_gradient_of_loss_times_batch_over_nbs(hyp: dict) -> None:
    """Plain SGD at lr 1: the weights move by exactly (bs / nbs) x the loss gradient (bs 3, nbs 8)."""
    torch.manual_seed(0)
    model = _demo_model()
    imgs = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [2, 4, 0.3, 0.6, 0.2, 0.2]])
    loss_fn = YoloLoss(model, hyp, 64)
    reference = _demo_model()
    reference.load_state_dict(model.state_dict())
    reference.train()
    loss_fn_ref = YoloLoss(reference, hyp, 64)
    loss_fn_ref(reference(imgs.float() / 255), targets)[0].backward()
    weight = model.module_list[0].conv.weight
    before = weight.detach().clone()
    kit = TrainKit(model=model, loss_fn=loss_fn, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                   scaler=torch.amp.GradScaler("cpu", enabled=False), ema=None, device=CPU,
                   dist=DistInfo(0, 1, 0, CPU))
    schedule = StepSchedule(accumulate=1, nbs=8, warmup_iters=0, img_size=64)
    train_one_epoch(kit, [(imgs, targets, ["a", "b", "c"], None)], 0, 1, 1.0, schedule)
    grad = reference.module_list[0].conv.weight.grad
    step = before - weight.detach()  # (16, 3, 3, 3)
    # equal up to float32 summation order (different conv kernels): 1e-3 of the step, where a wrong
    # factor (1, 1/8, 1/3) is off by 60% or more
    assert grad.norm() > 0 and (step - 3 / 8 * grad).norm() < 1e-3 * (3 / 8 * grad).norm()


def test_optimizer_steps_follow_the_warmup_ramp_hand_counted() -> None:
    """3 batches per epoch, 2 epochs, 2 warm-up iterations: the batches per step ramp 1 -> accumulate.
    accumulate 3: epoch 0 steps at batch 0 (ramp 1) and at its last batch; epoch 1 only at its last.
    accumulate 2: epoch 1 also steps at batch 1."""
    assert optimizer_steps(3, 2, 2, 3) == 3
    assert optimizer_steps(3, 2, 2, 2) == 4
    assert optimizer_steps(3, 2, 0, 3) == 2 and optimizer_steps(3, 2, 0, 2) == 4
    assert optimizer_steps(10, 1, 0, 4) == 3  # batches 3, 7 and the last one


@pytest.mark.slow  # a real 2-epoch run (~10 s)
def test_nbs_8_batch_3_accumulates_3_and_takes_3_steps(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """accumulate = round(8 / 3) = 3 (floor would give 2). 9 images at batch 3 are 3 batches per epoch;
    cfg/hyp.yaml's warm-up is capped at a third of the 6 iterations (2), so the steps are the ones
    counted by hand above: 3. EMA updates once per optimizer step, so ema_updates counts them."""
    import train
    from modules.checkpoint import load_checkpoint

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(REPO / "data/scripts/make_shapes.py"), "--out", str(tmp_path / "d"),
                    "--n-train", "9", "--n-val", "1", "--img-size", "64", "--seed", "3", "--workers", "1"],
                   check=True, capture_output=True, timeout=120, env=env)
    args = train.get_args_parser().parse_args([
        "--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data", str(tmp_path / "d" / "shapes.data"),
        "--hyp", str(REPO / "cfg/hyp.yaml"), "--img-size", "64", "--epochs", "2", "--batch-size", "3",
        "--nbs", "8", "--device", "cpu", "--workers", "0", "--project", str(tmp_path / "runs"), "--no-amp",
        "--notest"])
    train.main(args)
    text = capfd.readouterr().err  # train.py logs to stderr
    assert "accumulate 3 (nominal batch 8)" in text, text
    assert "warm-up 2 of 6 iterations" in text and "3 optimizer steps in all" in text, text
    ckpt = load_checkpoint(tmp_path / "runs" / "exp" / "weights" / "last.pt")
    assert ckpt["ema_updates"] == 3
