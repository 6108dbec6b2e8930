"""Channel pruning: coupled masks (shortcut, route, groups route), zero-scale folding, cfg and weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from build_utils.cfg_edit import format_cfg
from build_utils.parse_config import parse_model_cfg_text
from modules.graph_check import check_graph
from modules.model import DarkNet
from modules.prune import (
    class_scores,
    layer_masks,
    percent_threshold,
    seed_bn_scales,
    select_kept,
    trace_channels,
)
from modules.prune_apply import prune_model, slim_model

REPO = Path(__file__).resolve().parents[1]

# 1x1 convs after every prunable layer (so zero-scale folding is exact everywhere), a shortcut,
# a `groups` route (yolov4-tiny style), concatenating routes, maxpools, an upsample and two heads
def _conv(filters: int, size: int = 1, bn: bool = True) -> str:
    norm = "batch_normalize=1\n" if bn else ""
    act = "leaky" if bn else "linear"
    return f"[convolutional]\n{norm}filters={filters}\nsize={size}\nstride=1\npad=1\nactivation={act}\n"


def _head(mask: str) -> str:
    anchors = "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"
    return _conv(24, bn=False) + f"[yolo]\nmask={mask}\nanchors={anchors}\nclasses=3\nnum=6\n"


MAXPOOL = "[maxpool]\nsize=2\nstride=2\n"
GROUPS_CFG = ("[net]\nwidth=64\nheight=64\nchannels=3\n" + _conv(16, 3) + _conv(16)  # 0, 1
              + "[shortcut]\nfrom=-2\nactivation=linear\n" + MAXPOOL + _conv(32)  # 2, 3, 4
              + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n" + _conv(16)  # 5, 6
              + "[route]\nlayers=-1,-3\n" + _conv(24) + MAXPOOL  # 7, 8, 9
              + "[upsample]\nstride=2\n[route]\nlayers=-1,7\n" + _head("0,1,2")  # 10, 11, 12, 13
              + "[route]\nlayers=9\n" + _head("3,4,5"))  # 14, 15, 16


@pytest.fixture(scope="module")
def spp() -> DarkNet:
    return seed_bn_scales(DarkNet(REPO / "cfg/yolov3-spp.cfg"))


def _conv_in(model: DarkNet, i: int) -> int:
    return model.module_list[i].conv.in_channels


def test_shortcut_chains_share_one_mask_in_yolov3_spp(spp: DarkNet) -> None:
    graph = trace_channels(spp)
    kept = select_kept(graph, class_scores(spp, graph), percent_threshold(class_scores(spp, graph), 50))
    masks = layer_masks(spp, graph, kept)
    shortcuts = [i for i, m in enumerate(spp.module_defs) if m["type"] == "shortcut"]
    assert len(shortcuts) == 23
    for i in shortcuts:
        (j,) = spp.module_defs[i]["_from"]
        # the conv just before the shortcut and the one producing layer j (a conv or an earlier shortcut)
        src = j if spp.module_defs[j]["type"] == "convolutional" else j - 1
        assert torch.equal(masks[i - 1], masks[src]), f"shortcut {i}"
    # the whole first residual stage (64 channels: convs 1, 3) is one mask, pruned to a multiple of 8
    assert torch.equal(masks[1], masks[3]) and int(masks[1].sum()) % 8 == 0 and 8 <= int(masks[1].sum()) < 64
    pruned = slim_model(spp, graph, kept)
    for i in shortcuts:
        assert pruned.module_defs[i - 1]["filters"] == int(masks[i - 1].sum())


def test_route_layers_map_channels_in_tiny_and_spp(spp: DarkNet) -> None:
    tiny = seed_bn_scales(DarkNet(REPO / "cfg/yolov3-tiny.cfg"), seed=1)
    p_tiny, summary, _ = prune_model(tiny, percent=50)
    f = p_tiny.module_defs
    # tiny layer 20 = route -1, 8 (upsampled 18 + 8) feeds conv 21
    assert _conv_in(p_tiny, 21) == f[18]["filters"] + f[8]["filters"] < 128 + 256
    assert f[15]["filters"] == f[22]["filters"] == 255  # predictor convs keep their filters
    assert summary.gflops_after < summary.gflops_before
    p_spp, _, _ = prune_model(spp, percent=50)
    g = p_spp.module_defs
    # SPP: route -1,-3,-5,-6 joins conv 77 and its three maxpools for conv 84
    assert _conv_in(p_spp, 84) == 4 * g[77]["filters"] < 4 * 512
    assert _conv_in(p_spp, 94) == g[91]["filters"] + g[60]["filters"]  # upsampled conv 91 + shortcut 61
    for model in (p_tiny, p_spp):
        check_graph(model.module_defs, model.net_info, "pruned")
        model.eval()
        with torch.no_grad():
            pred, _ = model(torch.rand(1, 3, 64, 64))
        assert pred.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2) if model is p_spp else 3 * (4 * 4 + 2 * 2), 85)


def _zero_some_scales(model: DarkNet, layers: dict[int, list[int]]) -> None:
    with torch.no_grad():
        for i, channels in layers.items():
            model.module_list[i].bn.weight[channels] = 0.0


def test_zero_scale_channels_fold_into_the_next_layer_exactly() -> None:
    model = seed_bn_scales(DarkNet.from_cfg_text(GROUPS_CFG, "groups.cfg"), seed=2)
    # conv 0 and conv 1 are joined by the shortcut: zero both for channels 3, 7 (and one more in 1 only,
    # which must stay); conv 4 feeds the groups route: channel 5 and 21 (= 5 + 16) form one class
    _zero_some_scales(model, {0: [3, 7], 1: [3, 7, 9], 4: [5, 21, 30], 6: list(range(0, 16, 2)), 8: [1, 2]})
    graph = trace_channels(model)
    kept = select_kept(graph, class_scores(model, graph), threshold=1e-12, floor=0.01, multiple=1)
    pruned = slim_model(model, graph, kept)
    filters = [d.get("filters") for d in pruned.module_defs]
    assert filters[0] == filters[1] == 14 and filters[4] == 31 - 1 and filters[6] == 8 and filters[8] == 22
    assert filters[12] == filters[15] == 24  # the predictors keep their filters
    first = model.module_list[0]
    assert (first.act(first.bn.bias[[3, 7]]).abs() > 1e-3).all()  # the removed channels output non-zero
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref, ref_raw = model(x)
        got, got_raw = pruned(x)
    for a, b in zip(got_raw, ref_raw):  # the heads' raw outputs (bs, na, ny, nx, 5+nc)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-6)  # decoded boxes are in pixels


def test_zero_scales_in_tiny_fold_into_the_next_batch_norm() -> None:
    tiny = DarkNet(REPO / "cfg/yolov3-tiny.cfg")
    weights = REPO.parent / "shared/reference/weights/yolov3-tiny.weights"
    if weights.is_file():
        from modules.weights import load_darknet_weights

        load_darknet_weights(tiny, weights)
    else:
        seed_bn_scales(tiny)
    tiny.eval()
    _zero_some_scales(tiny, {12: list(range(0, 1024, 3))})  # conv 12 (3x3, 1024) feeds conv 13 (1x1, BN)
    graph = trace_channels(tiny)
    kept = select_kept(graph, class_scores(tiny, graph), threshold=1e-12, floor=0.01, multiple=1)
    pruned = slim_model(tiny, graph, kept)
    assert pruned.module_defs[12]["filters"] == 1024 - 342 and _conv_in(pruned, 13) == 682
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        (got, got_raw), (ref, ref_raw) = pruned(x), tiny(x)
    for a, b in zip(got_raw, ref_raw):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-6)


def test_cfg_writer_round_trips_every_cfg() -> None:
    for path in sorted((REPO / "cfg").glob("*.cfg")):
        sections = parse_model_cfg_text(path.read_text(), str(path))
        text = format_cfg(sections)
        again = parse_model_cfg_text(text, "written")
        def values(ss: list[dict]) -> list[dict]:
            return [{k: v for k, v in s.items() if not k.startswith("_")} for s in ss]

        assert values(sections) == values(again), path.name
        assert format_cfg(again) == text


def test_prune_script_writes_cfg_pt_and_weights_that_round_trip(tmp_path: Path) -> None:
    from data.scripts import prune
    from modules.loading import load_model
    from modules.weights import load_darknet_weights, save_darknet_weights

    model = seed_bn_scales(DarkNet(REPO / "cfg/yolov3-tiny.cfg"), seed=3)
    save_darknet_weights(model, tmp_path / "tiny.weights")
    args = prune.get_args_parser().parse_args(
        ["--weights", str(tmp_path / "tiny.weights"), "--cfg", str(REPO / "cfg/yolov3-tiny.cfg"),
         "--names", str(REPO / "data/coco.names"), "--target-flops", "0.5",
         "--out", str(tmp_path / "small.v1")])
    out = prune.main(args)
    assert out["cfg"] == str(tmp_path / "small.v1.cfg")  # a dot in --out is no suffix to replace
    cfg_model = DarkNet(out["cfg"])  # parser + graph check
    load_darknet_weights(cfg_model, out["weights"])
    pt_model, names = load_model(out["pt"])
    assert names is not None and len(names) == 80
    assert abs(pt_model.info(416)["gflops"] / model.info(416)["gflops"] - 0.5) < 0.05
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(cfg_model.eval()(x)[0], pt_model(x)[0], atol=0, rtol=0)
    save_darknet_weights(cfg_model, tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == Path(out["weights"]).read_bytes()
    with pytest.raises(SystemExit):
        prune.get_args_parser().parse_args(["--weights", "x.pt"])  # needs --percent or --target-flops


def test_prune_script_names_the_sparsity_runs_start_as_the_teacher(tmp_path: Path) -> None:
    from data.scripts.prune import teacher_hint

    start = tmp_path / "start.weights"
    start.write_bytes(b"\0" * 20)
    for options, want in (({"weights": str(start), "cfg": "cfg/yolov3-tiny.cfg"},
                           f" --teacher {start} --teacher-cfg cfg/yolov3-tiny.cfg"),
                          ({"weights": str(tmp_path / "gone.pt"), "cfg": "x.cfg"}, ""),
                          ({"weights": "", "cfg": "x.cfg"}, "")):
        torch.save({"options": options}, tmp_path / "sparse.pt")
        assert teacher_hint(tmp_path / "sparse.pt") == want
    torch.save({"options": {"weights": str(tmp_path / "sparse.pt"), "cfg": "x.cfg"}}, tmp_path / "b.pt")
    assert teacher_hint(tmp_path / "b.pt") == f" --teacher {tmp_path / 'sparse.pt'}"  # a .pt has its cfg
    assert teacher_hint(start) == ""  # Darknet weights record no training options
