"""benchmark.py: every format gets a row on 8 coco128 images at 160 px with the official tiny weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import benchmark
from tests.test_backends import coco_data, subset
from train_val_utils.benchmarks.format_benchmark import FORMATS, FormatRow, run_format

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install -e '.[export]')")


@pytest.mark.slow
def test_benchmark_table_has_every_format(tmp_path: Path, coco128: Path, tiny_weights: Path, repo_root: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLOV3_CACHE", str(tmp_path / "cache"))
    images = subset(tmp_path / "mini", coco128, 8)
    data = coco_data(tmp_path / "mini.data", images, repo_root)
    args = benchmark.get_args_parser().parse_args(
        ["--weights", str(tiny_weights), "--cfg", str(repo_root / "cfg" / "yolov3-tiny.cfg"), "--data",
         str(data), "--img-size", "160", "--batch-size", "4", "--calib-images", "4", "--workers", "0",
         "--project", str(tmp_path / "runs")])
    rows = benchmark.main(args)
    assert [r.format for r in rows] == list(FORMATS)
    assert all(r.error == "" for r in rows), [r.error for r in rows]
    ref = rows[0]
    assert ref.map50 > 0.2 and ref.img_s > 0
    for r in rows[1:4]:  # fused, TorchScript and ONNX fp32 score what PyTorch scores
        assert abs(r.map - ref.map) < 1e-4 and abs(r.map50 - ref.map50) < 1e-4, r
    int8 = rows[4]
    assert int8.file_mb < 0.4 * rows[3].file_mb  # int8 weights: about a quarter of float32
    assert abs(int8.map50 - ref.map50) < 0.1 and int8.forward_ms > 0
    run_dir = tmp_path / "runs" / "exp"
    with (run_dir / "results.csv").open() as f:
        assert [r["format"] for r in csv.DictReader(f)] == list(FORMATS)
    md = (run_dir / "results.md").read_text()
    assert all(f"| {fmt} |" in md for fmt in FORMATS) and "mAP@0.5:0.95" in md
    assert (run_dir / "yolov3-tiny.onnx").is_file() and (run_dir / "yolov3-tiny.int8.onnx").is_file()


def test_a_failing_format_keeps_its_row_with_the_reason() -> None:
    def build(fmt: str) -> object:
        raise RuntimeError("no such provider\nsecond line")

    row = run_format("ONNX Runtime int8", build, lambda b: {}, lambda fmt: None)
    assert isinstance(row, FormatRow) and row.error == "RuntimeError: no such provider"
    assert row.map != row.map  # NaN: not measured
