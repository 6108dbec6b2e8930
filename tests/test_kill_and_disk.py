"""Kills and full disks on a real (tiny) training run: a full disk is one line naming the last good
checkpoint and loses nothing, results.csv is never ahead of last.pt, stale temp files go away on resume,
and `--resume` finishes a run killed during its finalisation (then refuses it as finished)."""

from __future__ import annotations

import csv
import errno
import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import REPO, error_line

import train
from build_utils.atomic import atomic_write, disk_full_cause, remove_stale_temp_files
from build_utils.cli import run_cli, setup_logging
from build_utils.errors import DiskFullError
from modules import checkpoint
from modules.checkpoint import load_checkpoint, save_checkpoint
from train_val_utils.trainer import Trainer


def _argv(data: Path, project: Path, *extra: str) -> list[str]:
    return ["--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data", str(data), "--hyp",
            str(REPO / "cfg/hyp-demo.yaml"), "--img-size", "64", "--batch-size", "2", "--nbs", "4",
            "--device", "cpu", "--workers", "0", "--notest", "--no-channels-last", "--project", str(project),
            "--name", "exp", *extra]


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    setup_logging()
    capsys.readouterr()
    rc = run_cli(train.main, train.get_args_parser().parse_args(argv))
    return rc, capsys.readouterr().err


def _csv_epochs(run: Path) -> list[int]:
    with open(run / "results.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


class FullDisk:
    """A file whose writes fail with ENOSPC after `room` bytes, as on a full disk."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data: bytes) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_full_disk_then_kill_in_finalisation_then_resume(tiny_shapes: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run, weights = tmp_path / "exp", tmp_path / "exp" / "weights"
    saves: list[str] = []

    @contextmanager
    def disk_full_at_second_last_pt(path):
        saves.append(Path(path).name)
        with atomic_write(path) as f:
            yield FullDisk(f, 1000) if saves.count("last.pt") == 2 else f

    # 1. epoch 1's last.pt meets a full disk: one line, epoch 0's checkpoint intact, csv not ahead
    monkeypatch.setattr(checkpoint, "atomic_write", disk_full_at_second_last_pt)
    rc, err = _run(_argv(tiny_shapes, tmp_path, "--epochs", "2"), capsys)
    assert rc == 2
    error_line(err, f"no space left writing {weights / 'last.pt'}", "the last good checkpoint is epoch 0",
               f"--resume {weights / 'last.pt'}")
    assert load_checkpoint(weights / "last.pt")["epoch"] == 0
    assert _csv_epochs(run) == [0]  # the failed epoch's row was never written
    assert not list(weights.glob(".*.tmp"))
    monkeypatch.undo()

    # 2. resume; a stale temp file from an earlier kill is removed; killed during finalisation
    (weights / ".last.pt.k1ll3d.tmp").write_bytes(b"\0" * 3_000_000)
    monkeypatch.setattr(Trainer, "finalize", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    rc, err = _run(_argv(tiny_shapes, tmp_path, "--resume", str(weights / "last.pt")), capsys)
    assert rc == 130
    assert "removed 1 stale temporary file(s)" in err and "(3.0 MB freed)" in err
    assert not (weights / ".last.pt.k1ll3d.tmp").exists()
    ckpt = load_checkpoint(weights / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["finished"] is False and _csv_epochs(run) == [0, 1]
    monkeypatch.undo()

    # 3. --resume of a run whose epochs are done but finalisation is not: only the finalisation runs
    rc, err = _run(_argv(tiny_shapes, tmp_path, "--resume", str(weights / "last.pt")), capsys)
    assert rc == 0, err
    assert "final evaluation did not run" in err and "final evaluation of" in err
    ckpt = load_checkpoint(weights / "last.pt")
    assert ckpt["finished"] is True and ckpt["epoch"] == 1 and _csv_epochs(run) == [0, 1]

    # 4. now it is finished: refused as before
    rc, err = _run(_argv(tiny_shapes, tmp_path, "--resume", str(weights / "last.pt")), capsys)
    assert rc == 2
    error_line(err, str(weights / "last.pt"), "already finished")


def test_ulimit_file_size_is_one_line(tiny_shapes: Path, tmp_path: Path) -> None:
    """A real `ulimit -f` (SIGXFSZ ignored, so the write fails with EFBIG) during a subprocess run."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))  # last.pt is ~7 MB

    argv = [sys.executable, str(REPO / "train.py"), *_argv(tiny_shapes, tmp_path, "--epochs", "1")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, preexec_fn=limit,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    # best.pt is committed before the last.pt that records it, so it meets the limit first
    line = error_line(proc.stderr, f"no space left writing {tmp_path / 'exp/weights/best.pt'}",
                      "File too large", "no epoch was saved yet")
    assert "ulimit -f" in line
    assert not list((tmp_path / "exp/weights").glob(".*.tmp"))
    assert _csv_epochs(tmp_path / "exp") == []


def test_torch_wrapped_disk_error_is_found(tmp_path: Path) -> None:
    """torch.save turns the failed write into a RuntimeError ('unexpected pos'); the cause is still found."""
    @contextmanager
    def full(path):
        with atomic_write(path) as f:
            yield FullDisk(f, 100)

    with pytest.raises(DiskFullError, match=f"no space left writing {tmp_path / 'x.pt'}"):
        with full(tmp_path / "x.pt") as f:
            import torch

            torch.save({"a": torch.zeros(10_000)}, f)
    assert list(tmp_path.iterdir()) == []
    assert disk_full_cause(RuntimeError("unrelated")) is None


def test_remove_stale_temp_files_keeps_everything_else(tmp_path: Path) -> None:
    save_checkpoint({"epoch": 0}, tmp_path / "last.pt")
    for name in (".last.pt.a1.tmp", ".best.pt.b2.tmp", ".other.c3.tmp", "notes.tmp"):
        (tmp_path / name).write_bytes(b"x" * 10)
    assert remove_stale_temp_files(tmp_path, ("last.pt", "best.pt")) == (2, 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.c3.tmp", "last.pt", "notes.tmp"]
