"""export.py: ONNX / TorchScript parity with PyTorch on a real photo, and .weights <-> .pt conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import export
from build_utils.cli import run_cli
from modules import export_utils
from modules.checkpoint import load_checkpoint
from modules.loading import load_model

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / "cfg" / "yolov3-tiny.cfg"
NO_EXTRA = "the export extra is not installed (pip install -e '.[export]')"


def args_for(weights: Path, fmt: str, out: Path, *extra: str):
    return export.get_args_parser().parse_args(
        ["--weights", str(weights), "--cfg", str(TINY_CFG), "--format", fmt, "--out", str(out), *extra])


def test_onnx_matches_pytorch_on_a_photo(tmp_path: Path, tiny_weights: Path, darknet_dir: Path) -> None:
    onnx = pytest.importorskip("onnx", reason=NO_EXTRA)
    pytest.importorskip("onnxruntime", reason=NO_EXTRA)
    dog = darknet_dir / "dog.jpg"
    out = export.main(args_for(tiny_weights, "onnx", tmp_path / "t.onnx", "--img-size", "320", "--dynamic",
                               "--verify-image", str(dog)))
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    model, _ = load_model(tiny_weights, TINY_CFG, "cpu", fuse=True)
    x = export_utils.example_input(320, dog, batch=2)  # the dynamic batch axis takes 2
    ref = export_utils.reference_output(model, x)  # (2, N, 85)
    got = export_utils.onnx_outputs(out, x)
    assert got.shape == ref.shape == (2, 3 * (10 * 10 + 20 * 20), 85)
    raw, norm = export_utils.max_abs_diff(got, ref, 320)
    assert norm < 1e-4 and raw < 5e-3
    assert np.abs(got[..., 4:] - ref[..., 4:]).max() < 1e-4  # scores compared as they are
    assert ref[0, :, 4].max() > 0.5  # a real photo: confident cells exist, the check is not on noise


def test_torchscript_matches_pytorch(tmp_path: Path, tiny_weights: Path, darknet_dir: Path) -> None:
    dog = darknet_dir / "dog.jpg"
    out = export.main(args_for(tiny_weights, "torchscript", tmp_path / "t.torchscript", "--img-size", "256",
                               "--verify-image", str(dog)))
    model, _ = load_model(tiny_weights, TINY_CFG, "cpu", fuse=True)
    x = export_utils.example_input(256, dog)
    raw, _ = export_utils.max_abs_diff(export_utils.torchscript_outputs(out, x),
                                       export_utils.reference_output(model, x), 256)
    assert raw < 1e-4


def test_weights_pt_weights_round_trip(tmp_path: Path, tiny_weights: Path) -> None:
    pt = export.main(args_for(tiny_weights, "pt", tmp_path / "tiny.pt"))
    ckpt = load_checkpoint(pt)  # weights_only=True: plain types and tensors only
    assert ckpt["epoch"] == -1 and ckpt["cfg_name"] == "yolov3-tiny.cfg" and ckpt["ema"] is None
    assert len(ckpt["class_names"]) == 80 and ckpt["class_names"][16] == "dog"
    back = export.main(export.get_args_parser().parse_args(
        ["--weights", str(pt), "--format", "darknet", "--out", str(tmp_path / "back.weights")]))
    assert back.read_bytes() == tiny_weights.read_bytes()  # header (images seen) and every float kept
    from_pt, names = load_model(pt, fuse=True)
    from_weights, _ = load_model(tiny_weights, TINY_CFG, fuse=True)
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(from_pt(x)[0], from_weights(x)[0])
    assert names == ckpt["class_names"]


def test_names_flag_and_user_errors(tmp_path: Path, tiny_weights: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    names = tmp_path / "my.names"
    names.write_text("".join(f"thing{i}\n" for i in range(80)))
    pt = export.main(args_for(tiny_weights, "pt", tmp_path / "n.pt", "--names", str(names)))
    assert load_checkpoint(pt)["class_names"][3] == "thing3"
    if not torch.cuda.is_available():
        assert run_cli(export.main, args_for(tiny_weights, "onnx", tmp_path / "h.onnx", "--half")) == 2
        assert "--half" in capsys.readouterr().err
    same = export.get_args_parser().parse_args(["--weights", str(pt), "--format", "pt"])
    assert run_cli(export.main, same) == 2
    assert "overwrite" in capsys.readouterr().err
