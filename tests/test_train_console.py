"""What a training run prints: the epoch bar's `targets` is results.csv's `targets`, a whole-run ETA after
each epoch, and `--notest` epochs say they were not evaluated instead of `fitness nan, best -1.0000`."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from train_val_utils.evaluation.reporting import eta_text

REPO = Path(__file__).resolve().parents[1]


def test_eta_text_extrapolates_the_pace() -> None:
    assert eta_text(120.0, 2, 8) == "run ETA 8.0 min (8 epochs left at 1.0 min each, evaluation included)"
    assert "(1 epoch left at" in eta_text(120.0, 2, 1)
    assert eta_text(7200.0, 1, 3).startswith("run ETA 6.0 h")


@pytest.mark.slow
def test_console_targets_eta_and_notest(tiny_shapes: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "train.py"), "--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data",
           str(tiny_shapes), "--hyp", str(REPO / "cfg/hyp-demo.yaml"), "--img-size", "64", "--batch-size",
           "2", "--epochs", "3", "--notest", "--workers", "0", "--device", "cpu", "--project", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    assert "nan" not in err and "best -1" not in err
    assert err.count("not evaluated (--notest)") == 2 and err.count("run ETA") == 2
    rows = list(csv.DictReader((tmp_path / "exp" / "results.csv").open()))
    for row in rows:  # the bar's last text for the epoch shows the epoch's whole count
        texts = [s.split() for s in re.split(r"[\r\n]", err) if s.split()[:1] == [f"{row['epoch']}/2"]]
        assert texts and texts[-1][6] == row["targets"], (texts[-1:], row["targets"])


def test_close_mosaic_reaches_the_training_dataset(tiny_shapes: Path, tmp_path: Path, monkeypatch,
                                                    caplog) -> None:
    """train.py --close-mosaic N builds the training set with mosaic_epochs = epochs - N and says so."""
    import train
    from build_utils.datasets import LoadImagesAndLabels
    from train_val_utils import trainer

    built: list[LoadImagesAndLabels] = []

    class Recording(LoadImagesAndLabels):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(trainer, "LoadImagesAndLabels", Recording)
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text((REPO / "cfg/hyp-demo.yaml").read_text().replace("mosaic: 0.0", "mosaic: 1.0"))
    argv = ["--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data", str(tiny_shapes), "--hyp", str(hyp),
            "--img-size", "64", "--batch-size", "2", "--epochs", "3", "--close-mosaic", "1", "--notest",
            "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs")]
    with caplog.at_level("INFO"):
        train.main(train.get_args_parser().parse_args(argv))
    assert [d.mosaic_epochs for d in built] == [2]
    assert "mosaic (p=1) in epochs 0-1, whole images in the last 1 (--close-mosaic 1)" in caplog.text
