"""train.py --sr: L1 on the batch-norm scales, its option checks and the run's bn_scales.png."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import train
from build_utils.errors import UserError
from modules.checkpoint import load_checkpoint
from train_val_utils.training.sparsity import add_bn_l1_grad, bn_scales

REPO = Path(__file__).resolve().parents[1]


def _net() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.5, -2.0, 0.0, 1.5]))
    return net


def test_l1_adds_sr_times_sign_to_the_scale_gradients_only() -> None:
    net = _net()
    net(torch.rand(2, 3, 4, 4)).sum().backward()
    before = {n: p.grad.clone() for n, p in net.named_parameters()}
    add_bn_l1_grad(net, 0.01, grad_scale=4.0)
    want = torch.tensor([0.04, -0.04, 0.0, 0.04])
    torch.testing.assert_close(net[1].weight.grad - before["1.weight"], want)
    for name in ("0.weight", "1.bias", "2.weight", "2.bias"):
        assert torch.equal(dict(net.named_parameters())[name].grad, before[name])
    add_bn_l1_grad(net, 0.0)  # off: nothing changes
    torch.testing.assert_close(net[1].weight.grad - before["1.weight"], want)
    net[1].weight.requires_grad_(False)  # frozen scales stay untouched
    add_bn_l1_grad(net, 1.0)
    assert sorted(bn_scales(net).tolist()) == [0.0, 0.5, 1.5, 2.0]


def test_sr_option_is_checked_and_recorded(tiny_shapes: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--sr -0.1"):
        train.main(train.get_args_parser().parse_args(["--sr", "-0.1"]))
    args = train.get_args_parser().parse_args(
        ["--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data", str(tiny_shapes),
         "--hyp", str(REPO / "cfg/hyp-demo.yaml"), "--img-size", "64", "--batch-size", "4", "--nbs", "4",
         "--epochs", "1", "--device", "cpu", "--workers", "0",
         "--project", str(tmp_path), "--name", "sr", "--sr", "0.5", "--notest", "--no-ema"])
    result = train.main(args)
    run = Path(result["save_dir"])
    assert (run / "bn_scales.png").stat().st_size > 1000
    ckpt = load_checkpoint(run / "weights" / "last.pt")
    assert ckpt["options"]["sr"] == 0.5
    # one nesterov SGD step at lr 0.01 (momentum 0.937) pulls each scale from 1.0 down by
    # 0.01 x 0.5 x 1.937 = 0.0097 plus its (much smaller, either-signed) loss gradient
    gammas = torch.cat([v.float() for k, v in ckpt["model"].items() if k.endswith("bn.weight")])
    assert 0.009 < float((1.0 - gammas).median()) < 0.0105


def test_sr_keep_leaves_the_largest_scales_one_percent_of_the_pull() -> None:
    net = _net()  # |gamma| 0.5, 2.0, 0.0, 1.5
    net(torch.rand(2, 3, 4, 4)).sum().backward()
    before = net[1].weight.grad.clone()
    add_bn_l1_grad(net, 0.1, keep_share=0.5)  # the two largest (2.0 and 1.5) are the kept half
    torch.testing.assert_close(net[1].weight.grad - before, torch.tensor([0.1, -0.001, 0.0, 0.001]))


def test_sr_keep_switches_on_at_the_runs_half(tiny_shapes: Path, tmp_path: Path) -> None:
    def run(name: str, *extra: str) -> torch.Tensor:
        args = train.get_args_parser().parse_args(
            ["--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data", str(tiny_shapes),
             "--hyp", str(REPO / "cfg/hyp-demo.yaml"), "--img-size", "64", "--batch-size", "4", "--nbs", "4",
             "--epochs", "2", "--device", "cpu", "--workers", "0", "--no-amp",
             "--project", str(tmp_path), "--name", name, "--sr", "0.5", "--notest", "--no-ema", *extra])
        ckpt = load_checkpoint(Path(train.main(args)["save_dir"]) / "weights" / "last.pt")
        return torch.cat([v.float() for k, v in ckpt["model"].items() if k.endswith("bn.weight")])

    uniform, kept = run("uniform"), run("keep", "--sr-keep", "0.5")
    # epoch 0 is the same in both runs; in epoch 1 half the scales lose ~99% of their pull, so they
    # end higher than in the uniform run, and the other half end where the uniform run puts them
    higher = kept - uniform
    share = float((higher > 0.002).float().mean())
    assert 0.4 < share < 0.6, share
    assert float(higher.abs().min()) < 1e-3


@pytest.mark.parametrize(("flags", "message"), [
    (["--sr", "0.1", "--sr-keep", "50"], "--sr-keep 50.0: a share"),
    (["--sr", "0.1", "--sr-keep", "-0.1"], "--sr-keep -0.1: a share"),
    (["--sr-keep", "0.5"], "--sr-keep 0.5 without --sr"),
])
def test_sr_keep_is_checked(flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        train.main(train.get_args_parser().parse_args(flags))
