"""Nothing a real user meets ends in a traceback or a silent loss: one table per class of mistake.

Bad items among many (images, label caches) are a warning and a count; one bad input for the whole
command (a damaged export, a storage URL, a search-space file, --classes) is one `error:` line; files
keep the umask; one live run per folder; an edited cfg refuses --resume; sizes that cannot fit are
refused before allocation. Kills and SIGTERM are in test_kill_resume.py (they train for real).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_inputs import BAD_IMAGES, model_file_variants, write_bad_image
from conftest import REPO, error_line

import export
import predict
from build_utils.atomic import atomic_write
from build_utils.cli import run_cli, setup_logging
from build_utils.dataset.image_io import MAX_PIXELS_ENV, read_image
from build_utils.dataset.labels import verify_all
from build_utils.datasets import LoadImagesAndLabels
from build_utils.errors import DatasetError, DiskFullError, UserError
from build_utils.run_dir import LOCK_NAME, RunLock, check_writable
from modules.backends import load_backend
from modules.export_utils import save_as_darknet
from modules.model import DarkNet
from train_val_utils.training.resume import check_cfg_unchanged

DEMO_CFG = REPO / "cfg" / "yolov3-demo.cfg"


def _cli(main, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:  # noqa: ANN001
    parser = {predict.main: predict.get_args_parser, export.main: export.get_args_parser}[main]
    setup_logging()
    capsys.readouterr()
    rc = run_cli(main, parser().parse_args(argv))
    return rc, capsys.readouterr().err


def _shapes_copy(tiny_shapes: Path, dst: Path) -> Path:
    """A private copy of the tiny dataset's training split (images/ and labels/)."""
    root = tiny_shapes.parent
    shutil.copytree(root / "train" / "images", dst / "images")
    shutil.copytree(root / "train" / "labels", dst / "labels")
    return dst / "images"


# ---- one bad image among many ------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_is_one_skipped_item(tiny_shapes: Path, tmp_path: Path, name: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    images = _shapes_copy(tiny_shapes, tmp_path)
    bad = write_bad_image(images, name)
    with pytest.raises(DatasetError, match=str(bad)):
        read_image(bad)
    with caplog.at_level(logging.INFO):
        ds = LoadImagesAndLabels(str(images), img_size=64, augment=False, nc=5)
    assert len(ds.img_files) == 4 and str(bad) not in ds.img_files
    assert any(str(bad) in r.message and "skipped" in r.message for r in caplog.records)
    assert any("1 corrupt (skipped)" in r.message for r in caplog.records)


def test_pixel_limit_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(__import__("cv2").imencode(".png", np.zeros((40, 50, 3), np.uint8))[1].tobytes())
    assert read_image(path).shape == (40, 50, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1999")
    with pytest.raises(DatasetError, match="50x40 pixels .2,000.*limit of 1,999"):
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "2000")
    assert read_image(path).shape == (40, 50, 3)  # the limit is inclusive: 20000x20000 loads at 4e8


# ---- label caches ------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["[1, 2]", "3", '"text"', "null", '{"version": 3, "pairs": 7}',
                                     '{"version": 3, "hash": "x"'])
def test_bad_label_cache_is_rebuilt(tiny_shapes: Path, tmp_path: Path, content: str,
                                    caplog: pytest.LogCaptureFixture) -> None:
    images = _shapes_copy(tiny_shapes, tmp_path)
    LoadImagesAndLabels(str(images), img_size=64, augment=False, nc=5)
    cache = next((tmp_path / "labels").glob("*.labels.cache"))
    cache.write_text(content)
    with caplog.at_level(logging.WARNING):
        ds = LoadImagesAndLabels(str(images), img_size=64, augment=False, nc=5)
    assert len(ds.img_files) == 4
    assert any(str(cache) in r.message and "rebuilding" in r.message for r in caplog.records)
    assert json.loads(cache.read_text())["version"] == 3  # rewritten whole


def test_label_edited_with_same_size_and_mtime_is_not_read_stale(tiny_shapes: Path, tmp_path: Path) -> None:
    images = _shapes_copy(tiny_shapes, tmp_path)
    ds = LoadImagesAndLabels(str(images), img_size=64, augment=False, nc=5)
    label = Path(ds.label_files[0])
    st = label.stat()
    text = label.read_text()
    first = text.split()[0]
    edited = ("1" if first != "1" else "2") + text[len(first):]  # another class, same byte count
    label.write_text(edited)
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert label.stat().st_size == st.st_size and label.stat().st_mtime_ns == st.st_mtime_ns
    again = LoadImagesAndLabels(str(images), img_size=64, augment=False, nc=5)
    assert again.labels[0][0, 0] == float(edited.split()[0]) != ds.labels[0][0, 0]


# ---- damaged and renamed model files -----------------------------------------------------------
@pytest.fixture(scope="module")
def demo_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    pytest.importorskip("onnxruntime")
    tmp = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    weights = save_as_darknet(DarkNet(DEMO_CFG), tmp / "demo.weights")
    names = tmp / "demo.names"
    names.write_text("".join(f"c{i}\n" for i in range(5)))
    out = {}
    for fmt in ("pt", "onnx", "torchscript"):
        out[fmt] = export.main(export.get_args_parser().parse_args(
            ["--weights", str(weights), "--cfg", str(DEMO_CFG), "--names", str(names), "--format", fmt,
             "--out", str(tmp / f"demo.{fmt}"), "--img-size", "64"]))
    bad = tmp / "bad"
    bad.mkdir()
    return {**model_file_variants(bad, out["pt"], out["onnx"], out["torchscript"]),
            **{f"good.{k}": (v, "") for k, v in out.items()}}


MODEL_FILES = ["truncated.onnx", "pt_renamed.onnx", "truncated.torchscript", "pt_renamed.torchscript",
               "ts_renamed.pt", "onnx_renamed.pt", "onnx_renamed.torchscript", "ts_renamed.onnx", "text.onnx",
               "empty.onnx", "empty.torchscript", "truncated.pt", "garbage.onnx"]


@pytest.mark.parametrize("name", MODEL_FILES)
def test_damaged_model_file_is_one_line(demo_exports: dict, name: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    path, phrase = demo_exports[name]
    img = tmp_path / "a.jpg"
    img.write_bytes(__import__("cv2").imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
    rc, err = _cli(predict.main, ["--weights", str(path), "--source", str(img), "--nosave"], capsys)
    assert rc == 2
    error_line(err, path, phrase)


def test_good_exports_and_their_modes(demo_exports: dict) -> None:
    for fmt in ("pt", "onnx", "torchscript"):
        path = demo_exports[f"good.{fmt}"][0]
        assert load_backend(path).nc == 5
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # not mkstemp's 0600


# ---- one bad input for the whole command -------------------------------------------------------
@pytest.mark.parametrize(("classes", "ok"), [(["80"], False), (["999"], False), (["-1"], False),
                                             (["0", "5"], False), (["0", "4"], True)])
def test_classes_outside_the_model(demo_exports: dict, tmp_path: Path, classes: list[str], ok: bool,
                                   capsys: pytest.CaptureFixture) -> None:
    img = tmp_path / "a.png"
    img.write_bytes(__import__("cv2").imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
    rc, err = _cli(predict.main, ["--weights", str(demo_exports["good.onnx"][0]), "--source", str(img),
                                  "--nosave", "--classes", *classes], capsys)
    if ok:
        assert rc == 0, err
    else:
        assert rc == 2
        error_line(err, "--classes", "has 5 classes, indices 0 to 4")


def test_absurd_size_is_refused_before_allocation(demo_exports: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    img = tmp_path / "a.png"
    img.write_bytes(__import__("cv2").imencode(".png", np.zeros((64, 64, 3), np.uint8))[1].tobytes())
    start = time.process_time()
    rc, err = _cli(predict.main, ["--weights", str(demo_exports["good.pt"][0]), "--source", str(img),
                                  "--nosave", "--img-size", "320000"], capsys)
    assert rc == 2 and time.process_time() - start < 5
    error_line(err, "inference at batch 1 and 320000x320000 needs at least", "GB", "--img-size")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_keep_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        with atomic_write(tmp_path / "f.pt") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.pt").stat().st_mode) == mode


# ---- one live run per folder, writability ------------------------------------------------------
def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


@pytest.mark.parametrize(("owner", "outcome"), [
    ("live", "in use by a live run"), ("dead", "taken over"), ("other-host", "in use by a run on host"),
    ("self", "taken over silently"), ("garbage", "taken over")])
def test_run_lock(tmp_path: Path, owner: str, outcome: str, caplog: pytest.LogCaptureFixture) -> None:
    lock = tmp_path / LOCK_NAME
    host = socket.gethostname()
    pids = {"live": os.getppid(), "dead": _dead_pid(), "other-host": 1, "self": os.getpid(), "garbage": 0}
    pid = pids[owner]
    content = {"pid": pid, "host": "gpu-node-7" if owner == "other-host" else host}
    lock.write_text("{not json" if owner == "garbage" else json.dumps(content))
    if outcome.startswith("in use"):
        with pytest.raises(UserError, match=outcome):
            RunLock(tmp_path).acquire()
        return
    with caplog.at_level(logging.WARNING):
        held = RunLock(tmp_path).acquire()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    warned = any("taking over the lock" in r.message for r in caplog.records)
    assert warned == (owner != "self")
    held.release()
    assert not lock.exists()


@pytest.mark.parametrize(("err", "expected"), [(errno.EACCES, UserError), (errno.EROFS, UserError),
                                               (errno.ENOSPC, DiskFullError), (errno.EDQUOT, DiskFullError)])
def test_unwritable_folder_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int,
                                                 expected: type) -> None:
    real_open = open

    def refusing(path, *args, **kwargs):  # noqa: ANN001, ANN202 - root ignores chmod: inject the error
        if ".write_test." in str(path):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing)
    with pytest.raises(expected, match=str(tmp_path)):
        check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---- an edited cfg under a run -----------------------------------------------------------------
@pytest.mark.parametrize(("edit", "line"), [
    (lambda t: t.replace("filters=16", "filters=17", 1), "filters=17"),
    (lambda t: t.rstrip("\n") + "\n[maxpool]\n", "is now '[maxpool]', the run was trained with the end"),
    (lambda t: t.replace("activation=leaky", "activation=mish", 1), "activation=mish"),
    (lambda t: "\n".join(t.rstrip("\n").splitlines()[:-1]) + "\n", "is now the end of the file"),
])
def test_resume_refuses_an_edited_cfg(tmp_path: Path, edit, line: str) -> None:  # noqa: ANN001
    stored = DEMO_CFG.read_text()
    cfg = tmp_path / "run.cfg"
    cfg.write_text(edit(stored))
    with pytest.raises(UserError, match=f"{cfg}:[0-9]+: the cfg changed since .*last.pt") as info:
        check_cfg_unchanged({"cfg_text": stored}, tmp_path / "last.pt", str(cfg))
    assert line in str(info.value)


def test_resume_uses_the_stored_cfg_text(tmp_path: Path) -> None:
    stored, last = DEMO_CFG.read_text(), tmp_path / "last.pt"
    assert check_cfg_unchanged({"cfg_text": stored}, last, str(tmp_path / "gone.cfg")) == stored
    (tmp_path / "same.cfg").write_text(stored)
    assert check_cfg_unchanged({"cfg_text": stored}, last, str(tmp_path / "same.cfg")) == stored


def test_sigterm_exits_143(capsys: pytest.CaptureFixture) -> None:
    def main(_: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    assert run_cli(main, None) == 143
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_verify_all_never_raises_on_a_bomb(tmp_path: Path) -> None:
    bad = write_bad_image(tmp_path, "bomb_png.png")
    (result,) = verify_all([str(bad)], [str(tmp_path / "bomb_png.txt")], 5, None, workers=1)
    assert result.status == "corrupt" and "header claims 60000x60000" in result.reason


def test_video_cut_short_is_reported(demo_exports: dict, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    import cv2

    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(40):
        writer.write(np.full((64, 64, 3), i * 6, np.uint8))
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[: len(data) * 6 // 10])
    rc, err = _cli(predict.main, ["--weights", str(demo_exports["good.onnx"][0]), "--source", str(video),
                                  "--nosave"], capsys)
    assert rc == 0, err
    line = next(ln for ln in err.splitlines() if ln.startswith(f"skipped {video}: only "))
    decoded = int(line.split(": only ")[1].split()[0])
    assert 0 < decoded < 38 and "of its 40 frames could be decoded" in line
    assert "1 file(s) skipped or incomplete" in err
