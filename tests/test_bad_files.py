"""12 bad weights/checkpoint files x train/predict/validation/export: each ends in one `error:` line that
names the file and the cause (exit 2, no traceback), and no pickled payload ever runs.

The scripts run in-process through `run_cli` (as `python <script>.py` does), on a 64-px shapes dataset
and cfg/yolov3-demo.cfg, so the table stays fast.
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import REPO, error_line

import export
import predict
import train
import validation
from build_utils.cli import run_cli, setup_logging
from modules.checkpoint import load_checkpoint, load_matching_state_dict
from modules.model import DarkNet
from modules.weights import save_darknet_weights

DEMO_CFG = REPO / "cfg" / "yolov3-demo.cfg"
HEADER = "shorter than a Darknet .weights header"
PICKLED = "refused: it carries pickled Python objects"


class Payload:
    """Unpickling this would create the folder `marker` (the stand-in for running an attacker's code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def _checkpoint(net: DarkNet, **changes: object) -> dict:
    return {"format": "yolov3-suite/1", "cfg_text": net.cfg_text, "cfg_name": net.cfg_name,
            "class_names": [f"c{i}" for i in range(net.nc)], "model": net.state_dict(), "ema": None,
            "epoch": -1, **changes}


def make_bad_files(folder: Path, marker: Path) -> dict[str, tuple[Path, tuple[str, ...], tuple[str, ...]]]:
    """name -> (file, substrings every script's error holds, substrings it must not hold)."""
    model = DarkNet(DEMO_CFG)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.weights").write_bytes(b"")
    (folder / "ten.weights").write_bytes(b"\x00" * 10)
    (folder / "fourteen.weights").write_bytes(b"\x00" * 14)
    (folder / "text.pt").write_text("these are not the weights you are looking for\n")
    torch.save(_checkpoint(model, ema="a string"), folder / "ema_string.pt")
    wrong = {k: torch.zeros(*(s + 1 for s in v.shape)) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}  # every float tensor one larger on each axis
    torch.save(_checkpoint(model, model=wrong), folder / "wrong_shapes.pt")
    (folder / "random.pt").write_bytes(os.urandom(4096))
    torch.save({"model": Payload(marker)}, folder / "pickle_zip.pt")
    torch.save({"model": {"a": [1, {"b": Payload(marker)}]}}, folder / "pickle_nested.pt")
    torch.save({"model": Payload(marker)}, folder / "pickle_legacy.pt", _use_new_zipfile_serialization=False)
    (folder / "pickle_raw.pt").write_bytes(pickle.dumps({"model": Payload(marker)}))
    torch.save(_checkpoint(model), folder / "whole.pt")
    whole = (folder / "whole.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    table = {
        "empty.weights": ((HEADER, "0 bytes"), ()),
        "ten.weights": ((HEADER, "10 bytes"), ()),
        "fourteen.weights": ((HEADER, "14 bytes"), ()),
        "text.pt": (("not a PyTorch checkpoint", "text file"), ()),
        "ema_string.pt": (("'ema' entry is a str",), ()),
        "wrong_shapes.pt": ((), ()),  # per script, below
        "random.pt": (("not a PyTorch checkpoint",), ("pickled",)),
        "pickle_zip.pt": ((PICKLED, "mkdir"), ()),
        "pickle_nested.pt": ((PICKLED, "mkdir"), ()),
        "pickle_legacy.pt": ((PICKLED, "mkdir"), ()),
        "pickle_raw.pt": ((PICKLED,), ()),
        "truncated.pt": (("truncated or damaged",), ("pickled",)),
    }
    return {name: (folder / name, must, must_not) for name, (must, must_not) in table.items()}


def _args(script: str, weights: Path, data: Path, tmp: Path) -> argparse.Namespace:
    cfg = ["--cfg", str(DEMO_CFG)] if weights.suffix == ".weights" else []
    image = next((data.parent / "val" / "images").glob("*.jpg"))
    argv = {
        "train": ["--cfg", str(DEMO_CFG), "--data", str(data), "--hyp", str(REPO / "cfg/hyp-demo.yaml"),
                  "--weights", str(weights), "--img-size", "64", "--batch-size", "2", "--epochs", "1",
                  "--device", "cpu", "--workers", "0", "--project", str(tmp / "train")],
        "predict": ["--weights", str(weights), *cfg, "--source", str(image), "--device", "cpu",
                    "--project", str(tmp / "predict")],
        "validation": ["--weights", str(weights), *cfg, "--data", str(data), "--img-size", "64",
                       "--device", "cpu", "--workers", "0", "--project", str(tmp / "val")],
        "export": ["--weights", str(weights), *cfg, "--format", "torchscript", "--out", str(tmp / "x.ts")],
    }[script]
    return SCRIPTS[script].get_args_parser().parse_args(argv)


SCRIPTS = {"train": train, "predict": predict, "validation": validation, "export": export}
BAD = ("empty.weights", "ten.weights", "fourteen.weights", "text.pt", "ema_string.pt", "wrong_shapes.pt",
       "random.pt", "pickle_zip.pt", "pickle_nested.pt", "pickle_legacy.pt", "pickle_raw.pt", "truncated.pt")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("bad")
    marker = folder / "PAYLOAD_RAN"
    return make_bad_files(folder / "files", marker), marker


@pytest.mark.parametrize("script", sorted(SCRIPTS))
@pytest.mark.parametrize("name", BAD)
def test_bad_file_is_one_line(script: str, name: str, bad_files: tuple[dict, Path], tiny_shapes: Path,
                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files, marker = bad_files
    path, must, must_not = files[name]
    if name == "wrong_shapes.pt":  # training loads what matches; the others rebuild the file's own cfg
        must = ("only", "BN counters", "yolov3-demo.cfg") if script == "train" else \
            ("do not fit the cfg it carries", "file (")
    setup_logging()  # log to this test's captured stderr, as the script does to a terminal's
    capsys.readouterr()
    assert run_cli(SCRIPTS[script].main, _args(script, path, tiny_shapes, tmp_path)) == 2
    line = error_line(capsys.readouterr().err, path, *must)
    assert not any(word in line for word in must_not), line
    assert not marker.exists(), "a pickled payload ran"


def test_weights_that_mostly_match_still_load(tmp_path: Path) -> None:
    """The threshold refuses only next-to-nothing: a donor of another class count (predictor convs
    differ) loads, and the log names what was re-initialised."""
    model = DarkNet(DEMO_CFG)
    donor = DarkNet.from_cfg_text(model.cfg_text.replace("classes=5", "classes=7")
                                  .replace("filters=30", "filters=36"), "donor.cfg")
    n, skipped = load_matching_state_dict(model, donor.state_dict(), "donor.pt")
    assert skipped and all("module_list" in k for k in skipped) and n > len(skipped)


def test_good_files_pass_the_same_scripts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The control: real .weights of the demo cfg convert to a .pt that loads, through the same CLI path."""
    model = DarkNet(DEMO_CFG)
    save_darknet_weights(model, tmp_path / "good.weights")
    args = export.get_args_parser().parse_args(["--weights", str(tmp_path / "good.weights"), "--cfg",
                                                str(DEMO_CFG), "--format", "pt", "--out",
                                                str(tmp_path / "g.pt")])
    assert run_cli(export.main, args) == 0
    assert load_checkpoint(tmp_path / "g.pt")["cfg_name"] == model.cfg_name
    assert "error:" not in capsys.readouterr().err
