"""Command-line misuse of train/predict/validation/export: every case exits 2 with one `error:` line naming
the flag or folder (no traceback), before any work. The table runs in-process through `run_cli`; one
case runs as a real subprocess to check the exit code and stderr as a user sees them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, error_line

import export
import predict
import train
import validation
from build_utils.cli import check_fraction, check_img_size, check_positive, run_cli, setup_logging
from build_utils.errors import UserError
from build_utils.run_dir import make_run_dir
from modules.model import DarkNet
from modules.weights import save_darknet_weights

DEMO_CFG = REPO / "cfg" / "yolov3-demo.cfg"
SCRIPTS = {"train": train, "predict": predict, "validation": validation, "export": export}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_shapes: Path) -> dict[str, Path]:
    """Demo-cfg weights, a regular file to put folders under, an image, a folder of unreadable images."""
    root = tmp_path_factory.mktemp("misuse")
    torch.manual_seed(0)
    save_darknet_weights(DarkNet(DEMO_CFG), root / "demo.weights")
    (root / "afile").write_text("a regular file, not a folder\n")
    bad = root / "unreadable"
    bad.mkdir()
    for name in ("a.jpg", "b.png"):
        (bad / name).write_bytes(b"\x00\x01 not an image at all")
    image = next((tiny_shapes.parent / "val" / "images").glob("*.jpg"))
    return {"root": root, "weights": root / "demo.weights", "file": root / "afile", "image": image,
            "unreadable": bad, "data": tiny_shapes}


def _base(script: str, env: dict[str, Path]) -> list[str]:
    w, data = str(env["weights"]), str(env["data"])
    project = str(env["root"] / "runs" / script)
    return {
        "train": ["--cfg", str(DEMO_CFG), "--data", data, "--hyp", str(REPO / "cfg/hyp-demo.yaml"),
                  "--img-size", "64", "--batch-size", "2", "--epochs", "1", "--device", "cpu",
                  "--workers", "0", "--project", project],
        "predict": ["--weights", w, "--cfg", str(DEMO_CFG), "--source", str(env["image"]), "--device", "cpu",
                    "--project", project],
        "validation": ["--weights", w, "--cfg", str(DEMO_CFG), "--data", data, "--img-size", "64",
                       "--device", "cpu", "--workers", "0", "--project", project],
        "export": ["--weights", w, "--cfg", str(DEMO_CFG), "--format", "torchscript",
                   "--out", str(env["root"] / "out" / "demo.torchscript")],
    }[script]


# (script, extra arguments, what the error line must name); "{file}" is a regular file, "{root}" a
# scratch folder, "{unreadable}" a folder of undecodable images. Later flags override the base ones.
CASES = [
    # output folder under a regular file, or the output folder itself a regular file
    ("train", ["--project", "{file}/runs"], ["{file}", "regular file", "--project"]),
    ("train", ["--project", "{root}", "--name", "afile", "--exist-ok"], ["{file}", "regular file"]),
    ("predict", ["--project", "{file}/runs"], ["{file}", "regular file", "--project"]),
    ("predict", ["--project", "{root}", "--name", "afile", "--exist-ok"], ["{file}", "regular file"]),
    ("validation", ["--project", "{file}/runs"], ["{file}", "regular file", "--project"]),
    ("validation", ["--project", "{root}", "--name", "afile", "--exist-ok"], ["{file}", "regular file"]),
    ("validation", ["--project", "{file}"], ["{file}", "regular file"]),
    ("export", ["--out", "{file}/sub/x.torchscript"], ["{file}", "regular file", "--out"]),
    ("export", ["--out", "{file}/x.onnx", "--format", "onnx"], ["{file}", "regular file", "--out"]),
    # train options
    ("train", ["--img-size", "0"], ["--img-size 0"]),
    ("train", ["--img-size", "-64"], ["--img-size -64"]),
    ("train", ["--img-size", "100"], ["--img-size 100", "multiple of 32"]),
    ("train", ["--epochs", "0"], ["--epochs 0"]),
    ("train", ["--batch-size", "0"], ["--batch-size 0"]),
    ("train", ["--nbs", "0"], ["--nbs 0"]),
    ("train", ["--workers", "-1"], ["--workers -1"]),
    ("train", ["--patience", "-2"], ["--patience -2"]),
    ("train", ["--weights", "{root}/missing.pt"], ["missing.pt", "not found"]),
    ("train", ["--resume", "{root}/missing/last.pt"], ["missing/last.pt", "not found"]),
    ("train", ["--data", "{root}/missing.data"], ["missing.data"]),
    ("train", ["--cfg", "{root}/missing.cfg"], ["missing.cfg"]),
    ("train", ["--hyp", "{root}/missing.yaml"], ["missing.yaml"]),
    # validation options
    ("validation", ["--batch-size", "0"], ["--batch-size 0"]),
    ("validation", ["--img-size", "0"], ["--img-size 0"]),
    ("validation", ["--img-size", "-64"], ["--img-size -64"]),
    ("validation", ["--img-size", "100"], ["--img-size 100"]),
    ("validation", ["--conf-thres", "2"], ["--conf-thres 2", "[0, 1]"]),
    ("validation", ["--conf-thres", "-0.1"], ["--conf-thres -0.1"]),
    ("validation", ["--conf-thres", "nan"], ["--conf-thres nan"]),
    ("validation", ["--iou-thres", "1.5"], ["--iou-thres 1.5"]),
    ("validation", ["--iou-thres", "-1"], ["--iou-thres -1"]),
    ("validation", ["--workers", "-1"], ["--workers -1"]),
    ("validation", ["--weights", "{root}/missing.weights"], ["missing.weights", "not found"]),
    ("validation", ["--data", "{root}/missing.data"], ["missing.data"]),
    # predict options and inputs
    ("predict", ["--img-size", "0"], ["--img-size 0"]),
    ("predict", ["--img-size", "-64"], ["--img-size -64"]),
    ("predict", ["--conf-thres", "2"], ["--conf-thres 2"]),
    ("predict", ["--conf-thres", "-1"], ["--conf-thres -1"]),
    ("predict", ["--iou-thres", "2"], ["--iou-thres 2"]),
    ("predict", ["--iou-thres", "-0.5"], ["--iou-thres -0.5"]),
    ("predict", ["--max-det", "0"], ["--max-det 0"]),
    ("predict", ["--batch-size", "0"], ["--batch-size 0"]),
    ("predict", ["--line-thickness", "0"], ["--line-thickness 0"]),
    ("predict", ["--source", "7"], ["--source 7", "camera7", "no image or frame could be read"]),
    ("predict", ["--source", "{unreadable}"], ["--source {unreadable}", "no image or frame could be read"]),
    ("predict", ["--source", "{root}/nothing"], ["--source {root}/nothing"]),
    ("predict", ["--names", "{file}"], ["{file}", "class names"]),
    ("predict", ["--weights", "{root}/missing.pt"], ["missing.pt", "not found"]),
    # export options
    ("export", ["--img-size", "0"], ["--img-size 0"]),
    ("export", ["--img-size", "-32"], ["--img-size -32"]),
    ("export", ["--img-size", "100"], ["--img-size 100"]),
    ("export", ["--out", "{weights}"], ["overwrite"]),
    ("export", ["--weights", "{root}/missing.weights"], ["missing.weights", "not found"]),
    ("export", ["--cfg", "{root}/missing.cfg"], ["missing.cfg"]),
]


def _fill(text: str, env: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in env.items()})


@pytest.mark.parametrize(("script", "extra", "named"), CASES,
                         ids=[f"{s}{''.join(e)}"[:60] for s, e, _ in CASES])
def test_misuse_is_one_line_exit_2(script: str, extra: list[str], named: list[str], env: dict[str, Path],
                                   capsys: pytest.CaptureFixture) -> None:
    argv = _base(script, env) + [_fill(a, env) for a in extra]
    args = SCRIPTS[script].get_args_parser().parse_args(argv)
    setup_logging()  # log to this test's captured stderr, as the script does to a terminal's
    capsys.readouterr()
    assert run_cli(SCRIPTS[script].main, args) == 2
    error_line(capsys.readouterr().err, *(_fill(n, env) for n in named))


def test_valid_base_commands_run(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """The control for the table: the same base commands without the misuse succeed."""
    for script in ("predict", "export"):
        assert run_cli(SCRIPTS[script].main, SCRIPTS[script].get_args_parser().parse_args(
            _base(script, env))) == 0, capsys.readouterr().err


def test_shared_checks() -> None:
    check_img_size(416)
    check_img_size(100, multiple=None)
    check_fraction(0.0, "conf_thres")
    check_fraction(1.0, "iou_thres")
    check_positive(0, "workers", minimum=0)
    with pytest.raises(UserError, match=r"--img-size 100: must be a positive multiple of 32.*--img-size 96"):
        check_img_size(100)
    with pytest.raises(UserError, match=r"--iou-thres 1.01: must lie in \[0, 1\]"):
        check_fraction(1.01, "iou_thres")
    with pytest.raises(UserError, match="--max-det 0: must be at least 1"):
        check_positive(0, "max_det")


def test_make_run_dir_numbers_and_names_the_blocker(tmp_path: Path) -> None:
    assert make_run_dir(tmp_path, "exp") == tmp_path / "exp"
    assert make_run_dir(tmp_path, "exp") == tmp_path / "exp2"
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=rf"{tmp_path / 'f' / 'a'}.*{tmp_path / 'f'} is a regular file"):
        make_run_dir(tmp_path / "f" / "a", "exp")


def test_run_cli_keeps_tracebacks_of_real_bugs() -> None:
    def buggy(_: object) -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        run_cli(buggy, None)


def test_subprocess_exit_code_and_stderr(env: dict[str, Path]) -> None:
    """As a user runs it: `python validation.py --conf-thres 2` exits 2 with one error line, no traceback."""
    argv = [sys.executable, str(REPO / "validation.py"), *_base("validation", env), "--conf-thres", "2"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --conf-thres 2.0: must lie in [0, 1] (e.g. --conf-thres 0.25)"]
