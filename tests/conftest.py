"""Shared test fixtures: paths to the repository and to `../shared/reference`.

Tests that need the official Darknet files, weights or coco128 take the fixtures below; where
`../shared/reference` is absent they are skipped with a reason that says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (it ships beside the checkout as ../shared)")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def darknet_dir() -> Path:
    """Official Darknet cfgs, names and sample photos."""
    return _need(REFERENCE / "darknet")


@pytest.fixture(scope="session")
def tiny_weights() -> Path:
    """Official yolov3-tiny.weights (COCO)."""
    return _need(REFERENCE / "weights" / "yolov3-tiny.weights")


@pytest.fixture(scope="session")
def coco128() -> Path:
    """Real coco128: images/train/*.jpg and labels/train/*.txt."""
    return _need(REFERENCE / "coco128")


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-image, 64-px shapes dataset (5 classes, fits cfg/yolov3-demo.cfg); returns its .data file."""
    import os
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("tiny_shapes")
    subprocess.run([sys.executable, str(REPO / "data/scripts/make_shapes.py"), "--out", str(out),
                    "--n-train", "4", "--n-val", "2", "--img-size", "64", "--seed", "3", "--workers", "1"],
                   check=True, capture_output=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return out / "shapes.data"


def error_line(err: str, *names: object) -> str:
    """Assert `err` (captured stderr) ends in exactly one `error: ...` line, holds no traceback and
    names each of `names`; returns that line."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for name in names:
        assert str(name) in errors[0], (name, errors[0])
    return errors[0]



def signal_on_line(proc: subprocess.Popen, text: str, sig: int,
                   pid_of: Callable[[str], int | None] | None = None) -> list[str]:
    """Read `proc`'s stderr until a line holds `text`, then send `sig` to `proc` (or to the pid that
    `pid_of(line)` found in an earlier line, e.g. one rank of a torchrun job); returns the lines read."""
    import os

    lines, pid = [], None
    for line in proc.stderr:
        lines.append(line)
        pid = (pid_of(line) if pid_of is not None else None) or pid
        if text in line:
            os.kill(pid if pid_of is not None else proc.pid, sig)
            break
    return lines
