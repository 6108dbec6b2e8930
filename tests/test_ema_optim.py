"""ModelEMA update math and state round trip; optimizer groups; warm-up and cosine schedule values."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from train_val_utils.training.ema import ModelEMA
from train_val_utils.training.optim import apply_warmup, build_optimizer, cosine_lr_lambda, warmup_iterations

HYP = {"lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
       "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.Flatten(),
                         nn.Linear(2 * 6 * 6, 3))


def test_ema_update_math():
    model = _net()
    ema = ModelEMA(model, decay=0.9, tau=10)
    assert not ema.ema.training and not any(p.requires_grad for p in ema.ema.parameters())
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1 / 10))
    assert ema.updates == 1
    assert torch.allclose(ema.ema[0].weight, d * w0 + (1 - d) * (w0 + 1))
    assert ema.ema[1].num_batches_tracked.item() == 7  # integer buffers are copied
    assert ema.ema[0].weight is not model[0].weight


def test_ema_unwraps_dataparallel_and_round_trips():
    model = _net()
    ema = ModelEMA(nn.DataParallel(model), decay=0.5, tau=1)
    with torch.no_grad():
        model[2].bias.fill_(2.0)
    ema.update(nn.DataParallel(model))
    assert set(ema.ema.state_dict()) == set(model.state_dict())  # no "module." prefix
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    restored = ModelEMA(_net(), decay=0.5, tau=1)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert restored.updates == 1
    assert torch.equal(restored.ema[2].bias, ema.ema[2].bias)
    assert ema.checkpoint_items()["ema_updates"] == 1


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizer_groups(name):
    model = _net()
    opt = build_optimizer(model, name, HYP)
    norm, weights, bias = opt.param_groups
    assert {id(p) for p in norm["params"]} == {id(model[1].weight)}
    conv_linear = {id(model[0].weight), id(model[2].weight), id(model[4].weight)}
    assert {id(p) for p in weights["params"]} == conv_linear
    assert {id(p) for p in bias["params"]} == {id(model[1].bias), id(model[2].bias), id(model[4].bias)}
    assert norm["weight_decay"] == 0 and bias["weight_decay"] == 0 and weights["weight_decay"] == 0.0005
    assert bias["is_bias"] and not weights["is_bias"]
    assert all(g["initial_lr"] == 0.01 for g in opt.param_groups)
    if name == "sgd":
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
        assert opt.defaults["momentum"] == 0.937
    else:
        assert opt.defaults["betas"] == (0.937, 0.999)
    assert isinstance(opt, torch.optim.AdamW) == (name == "adamw")


def test_frozen_parameters_and_bad_name():
    model = _net()
    model[0].weight.requires_grad_(False)
    opt = build_optimizer(model, "sgd", HYP)
    assert all(p is not model[0].weight for g in opt.param_groups for p in g["params"])
    with pytest.raises(ValueError, match="sgd, adam, adamw"):
        build_optimizer(model, "rmsprop", HYP)


def test_cosine_lambda_values():
    f = cosine_lr_lambda(10, 0.01)
    assert f(0) == pytest.approx(1.0)
    assert f(5) == pytest.approx(0.505)
    assert f(10) == pytest.approx(0.01)
    assert all(f(e) > f(e + 1) for e in range(10))


def test_warmup_iterations():
    assert warmup_iterations(100, HYP) == 300
    assert warmup_iterations(1000, HYP) == 3000
    assert warmup_iterations(20, {**HYP, "warmup_epochs": 1.5}) == 100  # the floor
    assert warmup_iterations(100, HYP, 600) == 200  # at most a third of the run
    assert warmup_iterations(1000, {**HYP, "warmup_epochs": 0.0}) == 0


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_apply_warmup_values(name):
    opt = build_optimizer(_net(), name, HYP)
    norm, weights, bias = opt.param_groups

    def mom(g):
        return g["momentum"] if name == "sgd" else g["betas"][0]

    apply_warmup(opt, 0, 500, 1.0, HYP)
    assert norm["lr"] == 0 and weights["lr"] == 0 and bias["lr"] == pytest.approx(0.1)
    assert mom(weights) == pytest.approx(0.8)
    apply_warmup(opt, 250, 500, 0.5, HYP)  # half way, scheduler factor 0.5 -> target lr 0.005
    assert weights["lr"] == pytest.approx(0.0025)
    assert bias["lr"] == pytest.approx((0.1 + 0.005) / 2)
    assert mom(norm) == pytest.approx((0.8 + 0.937) / 2)
    apply_warmup(opt, 500, 500, 1.0, HYP)
    assert all(g["lr"] == pytest.approx(0.01) for g in opt.param_groups) and mom(bias) == pytest.approx(0.937)


def test_lambda_lr_with_initial_lr():
    opt = build_optimizer(_net(), "sgd", HYP)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lr_lambda(4, HYP["lrf"]))
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[1]["lr"])
    assert lrs[-1] == pytest.approx(0.01 * 0.01)
    assert lrs[1] == pytest.approx(0.01 * 0.505)
