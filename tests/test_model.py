"""DarkNet: the guide's parameter/GFLOPs table, train/eval contracts, fuse, grids, bias init, v4 layers."""

from __future__ import annotations

import math

import pytest
import torch

from build_utils.errors import ConfigError
from build_utils.parse_config import parse_model_cfg
from modules.model import DarkNet

TABLE = {  # cfg: (parameters, {img_size: GFLOPs})
    "yolov3-spp.cfg": (62_998_749, {320: 39.2, 416: 66.2, 512: 100.3, 608: 141.4}),
    "yolov3.cfg": (61_949_149, {608: 140.7}),
    "yolov3-tiny.cfg": (8_852_366, {}),
}


@pytest.fixture(scope="module")
def tiny(repo_root) -> DarkNet:
    torch.manual_seed(0)
    return DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg")


@pytest.mark.parametrize("name", list(TABLE))
def test_parameters_and_gflops_match_guide(repo_root, name):
    model = DarkNet(repo_root / "cfg" / name)
    params, gflops = TABLE[name]
    assert sum(p.numel() for p in model.parameters()) == params
    for size, expected in gflops.items():
        info = model.info(size)
        assert info["parameters"] == params and info["layers"] == len(model.module_defs)
        assert abs(info["gflops"] - expected) / expected < 0.01, (size, info)


def test_structure_of_spp(repo_root):
    model = DarkNet(repo_root / "cfg" / "yolov3-spp.cfg")
    assert len(model.module_list) == len(model.module_defs) == 114
    assert model.yolo_layers == [89, 101, 113] and model.nc == 80
    heads = model.yolo_modules()
    assert [h.stride for h in heads] == [32, 16, 8]
    assert heads[0].anchors.tolist() == [[116, 90], [156, 198], [373, 326]]
    assert all(h.na == 3 and h.no == 85 for h in heads)
    assert model.net_info["width"] == 608 and "cfg_text" not in model.state_dict()


@pytest.mark.parametrize("size", [320, 416, 512, 608])
def test_eval_output_shapes(tiny, size):
    tiny.eval()
    with torch.no_grad():
        pred, raw = tiny(torch.rand(1, 3, size, size))
    cells = sum((size // s) ** 2 for s in (32, 16))
    assert pred.shape == (1, 3 * cells, 85)
    assert [r.shape for r in raw] == [(1, 3, size // 32, size // 32, 85), (1, 3, size // 16, size // 16, 85)]
    assert 0 <= pred[..., 4:].min() and pred[..., 4:].max() <= 1


def test_train_output_and_non_square(tiny):
    tiny.train()
    out = tiny(torch.rand(2, 3, 192, 320))  # H=192, W=320
    assert [o.shape for o in out] == [(2, 3, 6, 10, 85), (2, 3, 12, 20, 85)]
    tiny.eval()
    with torch.no_grad():
        pred, raw = tiny(torch.rand(1, 3, 192, 320))
    assert pred.shape == (1, 3 * (60 + 240), 85)
    head = tiny.yolo_modules()[0]
    # decoding is the documented formula: centre of cell (x=9, y=5) of anchor 1 at stride 32
    p = raw[0][0, 1, 5, 9]
    cx = (torch.sigmoid(p[0]) + 9) * 32
    h = torch.exp(p[3]) * head.anchors[1, 1]
    idx = 1 * 60 + 5 * 10 + 9
    assert torch.allclose(pred[0, idx, 0], cx) and torch.allclose(pred[0, idx, 3], h)
    assert (6, 10, torch.device("cpu"), torch.float32, False) in head._grids
    info = tiny.info((192, 320))
    assert abs(info["gflops"] - tiny.info(416)["gflops"] * 192 * 320 / 416**2) < 0.05


def test_half_precision_raw_decodes_in_float32(tiny):
    head = tiny.yolo_modules()[0].eval()
    raw = torch.randn(1, 3 * 85, 2, 2).half()
    pred, p = head(raw)
    assert pred.dtype == torch.float32 and p.dtype == torch.float16


def test_grid_cache_follows_dtype(tiny):
    tiny.eval()
    head = tiny.yolo_modules()[1]
    with torch.no_grad():
        tiny(torch.rand(1, 3, 64, 64))
    assert any(k[:2] == (4, 4) for k in head._grids)
    model64 = tiny.double()
    assert head._grids == {}
    with torch.no_grad():
        pred, _ = model64(torch.rand(1, 3, 64, 64, dtype=torch.float64))
    assert pred.dtype == torch.float64
    tiny.float()


def test_inference_mode_then_grad_mode(tiny):
    tiny.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        ref, _ = tiny(x)
    pred, _ = tiny(x)  # grad mode after inference mode: cached grids must not break autograd
    pred[..., 2].sum().backward()
    assert torch.allclose(pred.detach(), ref)
    tiny.zero_grad()


def test_input_not_multiple_of_stride_is_explained(tiny):
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny(torch.rand(1, 3, 100, 64))


def test_fuse_matches_unfused(repo_root):
    torch.manual_seed(1)
    model = DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg").eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(2, 3, 160, 224)
    with torch.no_grad():
        ref, _ = model(x)
        fused, _ = model.fuse()(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(fused, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_predictor_bias_init(tiny):
    for i in tiny.yolo_layers:
        bias = tiny.module_list[i - 1].conv.bias.view(3, 85)
        assert torch.all(bias[:, 4] == -4.5)
        assert torch.allclose(bias[:, 5:], torch.full_like(bias[:, 5:], math.log(0.6 / (80 - 0.99))))


V4_STYLE = """[net]
width=64
height=64
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=mish
[route]
layers=-1
groups=2
group_id=1
[convolutional]
filters=4
size=1
stride=1
pad=1
activation=swish
[route]
layers=-1,-3
[maxpool]
size=2
stride=2
[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear
[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
scale_x_y=1.05
"""


def test_v4_style_route_groups_and_scale_xy():
    model = DarkNet.from_cfg_text(V4_STYLE, "v4.cfg").eval()
    assert model.cfg_name == "v4.cfg" and model.nc == 2
    head = model.yolo_modules()[0]
    assert head.stride == 4 and head.scale_x_y == 1.05
    x = torch.rand(1, 3, 64, 64)
    first = model.module_list[0](x)
    routed = model.module_list[1](first, [first])
    assert torch.equal(routed, first[:, 4:])
    with torch.no_grad():
        pred, raw = model(x)
    assert pred.shape == (1, 3 * 16 * 16, 7)
    p = raw[0][0, 0, 0, 0]
    assert torch.allclose(pred[0, 0, 0], (torch.sigmoid(p[0]) * 1.05 - 0.025) * 4)


def test_darknet_maxpool_size2_stride1_keeps_size_and_ignores_border():
    cfg = V4_STYLE.replace("[maxpool]\nsize=2\nstride=2", "[maxpool]\nsize=2\nstride=1")
    model = DarkNet.from_cfg_text(cfg, "v4.cfg")
    pool = model.module_list[4]
    x = -torch.rand(1, 1, 4, 4) - 1  # all negative: zero padding would leak 0 into the border
    y = pool(x)
    assert y.shape == x.shape and torch.equal(y[..., -1, -1], x[..., -1, -1])


def test_build_errors():
    with pytest.raises(ConfigError, match="disagree on classes"):
        text = V4_STYLE + "[convolutional]\nsize=1\nfilters=24\nactivation=linear\n[yolo]\nmask=0,1,2\n" \
                          "anchors=10,14, 23,27, 37,58\nclasses=3\nnum=3\n"
        DarkNet.from_cfg_text(text, "v4.cfg")
    with pytest.raises(ConfigError, match="equal channels"):
        DarkNet.from_cfg_text(V4_STYLE.replace("[maxpool]", "[shortcut]\nfrom=-3\n[maxpool]"), "v4.cfg")


def test_built_from_the_parser_output(repo_root, tmp_path):
    """One cfg parser: module_defs/net_info are parse_model_cfg's sections; errors name path:line."""
    path = repo_root / "cfg" / "yolov3-tiny.cfg"
    model = DarkNet(path)
    assert [model.net_info, *model.module_defs] == parse_model_cfg(path)
    assert model.cfg_text == path.read_text(encoding="utf-8") and model.cfg_name == "yolov3-tiny.cfg"
    again = DarkNet.from_cfg_text(model.cfg_text, "ckpt.pt")
    assert again.module_defs == model.module_defs and again.cfg_name == "ckpt.pt"
    with pytest.raises(ConfigError, match=r"nope\.cfg:0: cfg file not found"):
        DarkNet(tmp_path / "nope.cfg")
    bad = model.cfg_text.replace("filters=255", "filters=254", 1)
    line = bad.splitlines().index("filters=254") + 1
    with pytest.raises(ConfigError, match=rf"^bad\.cfg:{line}: \[convolutional\]"):
        DarkNet.from_cfg_text(bad, "bad.cfg")
