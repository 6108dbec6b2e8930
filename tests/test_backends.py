"""Backends: `.pt`, `.torchscript` and `.onnx` give the same detections and mAP; exports describe themselves.

The agreement test uses the official yolov3-tiny weights on coco128: detections after NMS on four
images through predict.py, and mAP through validation.py on the first 32 images (the full 128 takes
minutes per format on the 2-core development machine; 32 images already hold ~280 objects).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import export
import predict
import validation
from modules import export_utils
from modules.backends import OnnxBackend, TorchScriptBackend, load_backend
from modules.layers import DarknetMaxPool
from modules.loading import load_model

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install -e '.[export]')")

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / "cfg" / "yolov3-tiny.cfg"


def subset(root: Path, coco128: Path, n: int) -> Path:
    """The first `n` coco128 images with their labels, symlinked under `root`."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for img in sorted((coco128 / "images" / "train").glob("*.jpg"))[:n]:
        (root / "images" / img.name).symlink_to(img)
        label = coco128 / "labels" / "train" / f"{img.stem}.txt"
        if label.exists():
            (root / "labels" / label.name).symlink_to(label)
    return root / "images"


def coco_data(path: Path, images: Path, repo_root: Path) -> Path:
    """A .data file with `images` as both train and valid split, COCO names."""
    names = repo_root / "data" / "coco.names"
    path.write_text(f"classes=80\ntrain={images}\nvalid={images}\nnames={names}\n")
    return path


def do_export(weights: Path, fmt: str, out: Path, *extra: str) -> Path:
    cfg = ["--cfg", str(TINY_CFG)] if weights.suffix == ".weights" else []
    return export.main(export.get_args_parser().parse_args(
        ["--weights", str(weights), *cfg, "--format", fmt, "--out", str(out), *extra]))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> dict[str, Path]:
    """The official tiny weights as .pt, a dynamic .onnx and a .torchscript (exported at 416)."""
    tmp = tmp_path_factory.mktemp("tiny")
    pt = do_export(tiny_weights, "pt", tmp / "tiny.pt")
    return {"pt": pt, "onnx": do_export(pt, "onnx", tmp / "tiny.onnx", "--dynamic"),
            "torchscript": do_export(pt, "torchscript", tmp / "tiny.torchscript")}


def predictions(weights: Path, source: Path, project: Path) -> list[dict]:
    args = predict.get_args_parser().parse_args(
        ["--weights", str(weights), "--source", str(source), "--img-size", "416", "--device", "cpu",
         "--save-json", "--nosave", "--no-half", "--project", str(project)])
    return json.loads(predict.main(args).json_path.read_text())


def by_image(records: list[dict]) -> dict[str, np.ndarray]:
    """file name -> (n, 6) [class, x, y, w, h, score] sorted by class then box."""
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r["file_name"], []).append([r["category_id"], *r["bbox"], r["score"]])
    return {k: np.array(sorted(v)) for k, v in out.items()}


def test_metadata_makes_exports_self_describing(tiny_files: dict[str, Path]) -> None:
    onnx = load_backend(tiny_files["onnx"])  # no cfg, no names
    ts = load_backend(tiny_files["torchscript"])
    assert isinstance(onnx, OnnxBackend) and isinstance(ts, TorchScriptBackend)
    for b in (onnx, ts):
        assert b.nc == 80 and len(b.names) == 80 and b.names[0] == "person"
        assert b.strides == [32, 16] and b.stride == 32 and b.img_size == 416 and b.dynamic
        assert b.input_dtype == torch.float32 and b.info.cfg_name == "yolov3-tiny.cfg"


@pytest.mark.slow
def test_pt_onnx_torchscript_agree_on_coco128(tiny_files: dict[str, Path], coco128: Path, tmp_path: Path,
                                              repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOV3_CACHE", str(tmp_path / "cache"))
    # detections after NMS on four images: same classes, boxes within 1e-2 px
    few = subset(tmp_path / "few", coco128, 4)
    dets = {fmt: by_image(predictions(path, few, tmp_path / fmt)) for fmt, path in tiny_files.items()}
    assert sum(len(v) for v in dets["pt"].values()) >= 5
    for fmt in ("onnx", "torchscript"):
        assert dets[fmt].keys() == dets["pt"].keys()
        for name, ref in dets["pt"].items():
            got = dets[fmt][name]
            assert got.shape == ref.shape, (fmt, name)
            np.testing.assert_array_equal(got[:, 0], ref[:, 0])
            assert np.abs(got[:, 1:5] - ref[:, 1:5]).max() < 1e-2, (fmt, name)
    # mAP on 32 images agrees to 1e-4
    images = subset(tmp_path / "val", coco128, 32)
    data = coco_data(tmp_path / "coco.data", images, repo_root)
    maps = {}
    for fmt, path in tiny_files.items():
        args = validation.get_args_parser().parse_args(
            ["--weights", str(path), "--data", str(data), "--img-size", "416", "--batch-size", "8",
             "--workers", "0", "--device", "cpu", "--no-plots", "--project", str(tmp_path / "val_runs")])
        res = validation.main(args)
        maps[fmt] = (res["map"], res["map50"])
    assert maps["pt"][1] > 0.2, maps
    for fmt in ("onnx", "torchscript"):
        assert abs(maps[fmt][0] - maps["pt"][0]) < 1e-4 and abs(maps[fmt][1] - maps["pt"][1]) < 1e-4, maps


def test_static_onnx_letterboxes_to_its_size(tiny_files: dict[str, Path], tmp_path: Path, darknet_dir: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    static = do_export(tiny_files["pt"], "onnx", tmp_path / "static.onnx", "--img-size", "256")
    backend = load_backend(static)
    assert backend.fixed_hw == (256, 256) and not backend.dynamic and backend.fixed_batch == 1
    with pytest.raises(ValueError, match="exported for input"):
        backend(torch.zeros(1, 3, 320, 320))
    out, _ = backend(torch.zeros(3, 3, 256, 256))  # a fixed batch of 1 serves 3 images in chunks
    assert out.shape == (3, 3 * (8 * 8 + 16 * 16), 85)
    capsys.readouterr()
    args = predict.get_args_parser().parse_args(
        ["--weights", str(static), "--source", str(darknet_dir / "dog.jpg"), "--img-size", "416",
         "--project", str(tmp_path / "runs"), "--nosave", "--save-txt"])
    stats = predict.main(args)
    assert stats.images == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if "fixed input size" in line]
    assert len(warnings) == 1 and "letterboxing every image to 256x256" in warnings[0]
    assert (tmp_path / "runs" / "exp" / "labels" / "dog.txt").read_text().strip()


def test_dynamic_graphs_match_pytorch_at_other_sizes(tiny_files: dict[str, Path], tiny_weights: Path,
                                                     darknet_dir: Path) -> None:
    """Exported at 416, run at 320, 608 and 256x416: the traced maxpool pad decision still holds."""
    model, _ = load_model(tiny_weights, TINY_CFG, "cpu", fuse=True)
    for size in (320, 608):
        x = export_utils.example_input(size, darknet_dir / "dog.jpg", batch=2)
        ref = export_utils.reference_output(model, x)
        for fmt in ("onnx", "torchscript"):
            got = load_backend(tiny_files[fmt])(x)[0].numpy()
            assert got.shape == ref.shape
            assert export_utils.max_abs_diff(got, ref, size)[1] < 1e-4, (fmt, size)
    x = export_utils.example_input(416, darknet_dir / "dog.jpg")[..., 80:336, :]  # (1, 3, 256, 416)
    ref = export_utils.reference_output(model, x)
    got = load_backend(tiny_files["onnx"])(x)[0].numpy()
    assert export_utils.max_abs_diff(got, ref, 416)[1] < 1e-4


def test_maxpool_pad_branch_is_the_same_for_every_multiple_of_32() -> None:
    """The trace fixes DarknetMaxPool's pad test; it must not depend on the size within yolov3-tiny."""
    pool_2_1, pool_2_2 = DarknetMaxPool(2, 1), DarknetMaxPool(2, 2)
    for size in range(32, 1025, 32):
        for level in range(5):  # tiny halves the map 5 times before the stride-1 pool
            d = size >> level
            assert not pool_2_2._pad_reaches_a_window(d, d)  # even inputs: no window reads the pad
        d = size // 32
        assert pool_2_1._pad_reaches_a_window(d, d)  # size 2, stride 1 always pads right/bottom
        x = torch.arange(d * d, dtype=torch.float32).reshape(1, 1, d, d)
        assert pool_2_1(x).shape[-2:] == (d, d)


def test_maxpool_fast_path_equals_max_pool2d_and_export_keeps_it(tmp_path: Path, tiny_weights: Path) -> None:
    """No autograd: the strided-quarters max gives max_pool2d's values (NaN included) in both memory
    formats; an ONNX export still writes MaxPool nodes, since a trace never takes the fast path."""
    pool = DarknetMaxPool(2, 2)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 8, 16, 12).contiguous(memory_format=fmt)
        x[0, 0, 0, 0] = float("nan")
        slow = torch.nn.functional.max_pool2d(x, 2, 2)
        with torch.inference_mode():
            assert pool._quarters_apply(x)
            fast = pool(x)
        assert torch.equal(fast.nan_to_num(-9.0), slow.nan_to_num(-9.0)) and fast.shape == (2, 8, 8, 6)
        assert not pool._quarters_apply(x.requires_grad_())  # training keeps max_pool2d's backward
    onnx = pytest.importorskip("onnx")
    model = load_model(tiny_weights, TINY_CFG, fuse=True)[0]
    path = export_utils.export_onnx(model, torch.zeros(1, 3, 64, 64), tmp_path / "t.onnx", True, {})
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "MaxPool" in ops and "Max" not in ops
