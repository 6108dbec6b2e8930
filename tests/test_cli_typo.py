"""A typo'd flag is one line naming the closest valid flag, in every script (`cli.ArgumentParser`)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data" / "scripts"))  # the data scripts import as modules too

# (script module, a required flag set so only the typo is wrong, the typo, the flag it must suggest)
CASES = (
    ("train", [], "--img-sze", "--img-size"),
    ("predict", ["--weights", "w.pt", "--source", "x"], "--conf-thresh", "--conf-thres"),
    ("validation", ["--weights", "w.pt", "--data", "d.data"], "--batchsize", "--batch-size"),
    ("export", ["--weights", "w.pt", "--format", "onnx"], "--dynamc", "--dynamic"),
    ("benchmark", ["--weights", "w.pt", "--data", "d.data"], "--calib-imgs", "--calib-images"),
    ("make_data", ["--root", "r"], "--base_cfg", "--base-cfg"),
    ("coco2yolo", ["--out", "o"], "--val-jsn", "--val-json"),
)


@pytest.mark.parametrize(("script", "required", "typo", "closest"), CASES)
def test_typo_is_one_line_with_the_closest_flag(script: str, required: list[str], typo: str, closest: str,
                                                capsys: pytest.CaptureFixture) -> None:
    parser = importlib.import_module(script).get_args_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*required, typo, "1"])
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: unrecognized arguments"), err
    assert f"did you mean {closest}?" in err[0] and "usage:" not in err[0]


def test_other_mistakes_are_one_line_too(capsys: pytest.CaptureFixture) -> None:
    parser = importlib.import_module("predict").get_args_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--weights", "w.pt", "--source", "x", "--nms", "merg"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "invalid choice: 'merg'" in err[0]
