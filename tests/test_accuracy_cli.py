"""validation.py --augment / --nms merge / --task study|speed and predict.py --augment / --nms, on
the official yolov3-tiny weights (8 coco128 images, dog.jpg)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_predict import run as run_predict
from test_validation import base_args, mini, private_cache, run, write_data  # noqa: F401 (fixtures)


def test_validation_merge_and_tta_are_recorded(tmp_path: Path, tiny_weights: Path, mini: Path,  # noqa: F811
                                                repo_root: Path) -> None:
    data = write_data(tmp_path, mini, repo_root)
    args = base_args(tiny_weights, repo_root, data, tmp_path / "runs") + ["--img-size", "320", "--no-plots"]
    plain = run(args)
    both = run(args + ["--nms", "merge", "--augment"])
    assert (plain["nms"], plain["augment"]) == ("plain", False)
    assert (both["nms"], both["augment"]) == ("merge", True)
    saved = json.loads((tmp_path / "runs" / "exp2" / "metrics.json").read_text())
    assert (saved["nms"], saved["augment"]) == ("merge", True)
    assert "NMS: merge, TTA on" in (tmp_path / "runs" / "exp2" / "record_mAP.txt").read_text()
    assert both["map"] != plain["map"]
    assert both["speed_ms"]["inference"] > plain["speed_ms"]["inference"]  # three views


def test_study_writes_csv_and_plot(tmp_path: Path, tiny_weights: Path, mini: Path,  # noqa: F811
                                   repo_root: Path) -> None:
    data = write_data(tmp_path, mini, repo_root)
    args = base_args(tiny_weights, repo_root, data, tmp_path / "runs")
    out = run(args + ["--task", "study", "--study-sizes", "224", "320"])
    rows = list(csv.DictReader((tmp_path / "runs" / "exp" / "study.csv").open()))
    assert [int(r["img_size"]) for r in rows] == [224, 320] and len(out["study"]) == 2
    assert all(0 <= float(r["map"]) <= 1 and float(r["ms_per_img"]) > 0 for r in rows)
    assert rows[0]["map"] != rows[1]["map"]
    assert (tmp_path / "runs" / "exp" / "study.png").stat().st_size > 0
    from build_utils.errors import ConfigError

    with pytest.raises(ConfigError, match="multiples of 32"):
        run(args + ["--task", "study", "--study-sizes", "300"])


def test_speed_prints_only_the_timing_split(tmp_path: Path, tiny_weights: Path, mini: Path,  # noqa: F811
                                            repo_root: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_data(tmp_path, mini, repo_root)
    args = base_args(tiny_weights, repo_root, data, tmp_path / "runs") + ["--save-json"]
    out = run(args + ["--task", "speed", "--img-size", "320"])
    stdout = capsys.readouterr().out.strip().splitlines()
    assert len(stdout) == 1 and stdout[0].startswith("Speed:") and "NMS per image" in stdout[0]
    assert set(out["speed_ms"]) == {"pre", "inference", "nms"} and "map" not in out
    assert not (tmp_path / "runs").exists()  # no run folder, no JSON


def test_predict_augment_and_merge_change_boxes(tmp_path: Path, tiny_weights: Path,
                                                darknet_dir: Path) -> None:
    dog = darknet_dir / "dog.jpg"
    outs = {}
    for name, extra in (("plain", ()), ("merge", ("--nms", "merge")), ("tta", ("--augment",))):
        run_predict(tmp_path / name, tiny_weights, dog, "--save-txt", "--nosave", *extra)
        outs[name] = (tmp_path / name / "exp" / "labels" / "dog.txt").read_text().splitlines()
    assert outs["plain"] and outs["merge"] and outs["tta"]
    assert outs["merge"] != outs["plain"] and outs["tta"] != outs["plain"]
    classes = lambda lines: sorted(line.split()[0] for line in lines)  # noqa: E731
    assert classes(outs["merge"]) == classes(outs["plain"])  # merging moves boxes, never drops them
