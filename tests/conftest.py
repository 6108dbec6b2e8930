"""Shared test fixtures: paths to the repository and to `../shared/reference`.

Tests that need the official Darknet files, weights or coco128 take the fixtures below; where
`../shared/reference` is absent they are skipped with a reason that says so.
"""

from __future__ import annotations

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
