"""One model, one answer: `predict --save-json` writes the same predictions.json from a `.pt` and from its
`.onnx`, `.torchscript` and int8 `.onnx`: the same COCO category ids (the model's ids are COCO's, so class 62
is id 72, not 62), and boxes within 1e-2 px (int8 aside: its boxes move, its id space must not). Exports
print no TracerWarning unless one is not known to be benign."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_backends import by_image, predictions

import export
from build_utils.data_cfg import parse_data_cfg
from modules import export_utils
from modules.backends import load_backend
from modules.model import DarkNet
from modules.quantize import quantize_int8

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install -e '.[export]')")

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / "cfg" / "yolov3-tiny.cfg"
# coco128 images holding a tv (class 62, COCO id 72) and chairs (class 56, COCO id 62)
IMAGES = ("000000000595.jpg", "000000000643.jpg", "000000000110.jpg", "000000000164.jpg")


def do_export(weights: Path, fmt: str, out: Path, *extra: str) -> Path:
    cfg = ["--cfg", str(TINY_CFG)] if weights.suffix == ".weights" else []
    return export.main(export.get_args_parser().parse_args(
        ["--weights", str(weights), *cfg, "--format", fmt, "--out", str(out), *extra]))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, coco128: Path) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for name in IMAGES:
        (folder / name).symlink_to(coco128 / "images" / "train" / name)
    return folder


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path, images: Path) -> dict[str, Path]:
    """The official tiny weights as a .pt with COCO category ids (from data/coco128.data), and its exports."""
    tmp = tmp_path_factory.mktemp("formats")
    pt = do_export(tiny_weights, "pt", tmp / "tiny.pt", "--names", str(REPO / "data" / "coco128.data"))
    onnx = do_export(pt, "onnx", tmp / "tiny.onnx", "--dynamic")
    int8 = quantize_int8(onnx, tmp / "tiny.int8.onnx", sorted(images.glob("*.jpg")), 416)
    return {"pt": pt, "onnx": onnx, "torchscript": do_export(pt, "torchscript", tmp / "tiny.torchscript"),
            "int8": int8}


def test_every_export_carries_the_category_ids(formats: dict[str, Path]) -> None:
    coco_ids = parse_data_cfg(REPO / "data" / "coco128.data")["category_ids"]
    for fmt, path in formats.items():
        backend = load_backend(path)
        assert backend.category_ids == coco_ids, fmt
        assert backend.category_ids[62] == 72 and backend.names[62] == "tv"
        assert backend.strides == [32, 16] and backend.nc == 80, fmt


@pytest.mark.slow
def test_predictions_json_is_the_same_from_every_format(formats: dict[str, Path], images: Path,
                                                         tmp_path: Path) -> None:
    dets = {fmt: by_image(predictions(path, images, tmp_path / fmt)) for fmt, path in formats.items()}
    ref = dets["pt"]
    ids = {int(c) for v in ref.values() for c in v[:, 0]}
    assert 72 in ids and 62 in ids, ids  # a tv and chairs, written with COCO's ids
    for fmt in ("onnx", "torchscript"):
        assert dets[fmt].keys() == ref.keys(), fmt
        for name, want in ref.items():
            got = dets[fmt][name]
            assert got.shape == want.shape, (fmt, name)
            np.testing.assert_array_equal(got[:, 0], want[:, 0])
            assert np.abs(got[:, 1:5] - want[:, 1:5]).max() < 1e-2, (fmt, name)
    int8_ids = {int(c) for v in dets["int8"].values() for c in v[:, 0]}
    assert 72 in int8_ids and int8_ids <= set(load_backend(formats["pt"]).category_ids)  # COCO ids
    assert len(int8_ids & ids) >= 0.7 * len(ids)


class _FloatInTrace(torch.nn.Module):
    """A model whose trace really is input-specific: float(x.sum()) becomes a constant."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x.flatten(1)[:, None] * float(x.sum()), None


def _tracer_warnings(model: torch.nn.Module, path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_utils.export_torchscript(model, torch.rand(1, 3, 64, 64), path)
    return [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


def test_exports_silence_only_the_known_benign_tracer_warning(tmp_path: Path) -> None:
    tiny = DarkNet(TINY_CFG).eval()  # its stride-1 maxpool decides its pad at trace time: benign
    assert _tracer_warnings(tiny, tmp_path / "tiny.torchscript") == []
    other = _tracer_warnings(_FloatInTrace(), tmp_path / "other.torchscript")  # not on the list: shown
    assert len(other) == 1 and "Python float" in other[0]
