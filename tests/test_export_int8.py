"""export.py --int8: the calibrated int8 ONNX benchmark.py makes, written by export.py with its metadata,
and run by predict.py and validation.py like any other export."""

from __future__ import annotations

from pathlib import Path

import pytest

import export
import predict
import validation
from build_utils.cli import run_cli
from modules.backends import load_backend
from tests.test_backends import coco_data, subset

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / "cfg" / "yolov3-tiny.cfg"

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install -e '.[export]')")


def export_args(weights: Path, out: Path, *extra: str):
    return export.get_args_parser().parse_args(
        ["--weights", str(weights), "--cfg", str(TINY_CFG), "--format", "onnx", "--out", str(out), *extra])


def test_int8_user_errors(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(export.main, export_args(tiny_weights, tmp_path / "a.onnx", "--int8")) == 2
    assert "--int8 needs calibration images: pass --data" in capsys.readouterr().err
    ts = export.get_args_parser().parse_args(["--weights", str(tiny_weights), "--cfg", str(TINY_CFG),
                                              "--format", "torchscript", "--int8", "--data", "x.data"])
    assert run_cli(export.main, ts) == 2
    assert "--format onnx" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before any file was written


@pytest.mark.slow
def test_int8_export_runs_in_predict_and_validation(tmp_path: Path, tiny_weights: Path, coco128: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    onnx = pytest.importorskip("onnx")
    monkeypatch.setenv("YOLOV3_CACHE", str(tmp_path / "cache"))
    images = subset(tmp_path / "mini", coco128, 8)
    data = coco_data(tmp_path / "mini.data", images, REPO)
    out = export.main(export_args(tiny_weights, tmp_path / "tiny.int8.onnx", "--int8", "--data", str(data),
                                  "--calib-images", "4", "--img-size", "160", "--dynamic"))
    assert out == tmp_path / "tiny.int8.onnx"
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [out.name]  # the float32 step is removed
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["precision"] == "int8" and meta["calibration_images"] == "4"
    assert meta["export_img_size"] == "160" and meta["cfg_name"] == "yolov3-tiny.cfg"
    assert out.stat().st_size < 0.4 * 35.4e6  # int8 weights: about a quarter of the float32 file
    backend = load_backend(out)
    assert backend.precision == "int8" and backend.nc == 80 and backend.names[16] == "dog"

    results = validation.main(validation.get_args_parser().parse_args(
        ["--weights", str(out), "--data", str(data), "--img-size", "160", "--batch-size", "4",
         "--workers", "0", "--no-plots", "--project", str(tmp_path / "val")]))
    assert results["map50"] > 0.1  # the official weights still find coco128's objects at 160
    stats = predict.main(predict.get_args_parser().parse_args(
        ["--weights", str(out), "--source", str(images), "--img-size", "160", "--device", "cpu", "--nosave",
         "--save-txt", "--project", str(tmp_path / "pred")]))
    assert stats.images == 8 and len(list((tmp_path / "pred" / "exp" / "labels").glob("*.txt"))) >= 4
