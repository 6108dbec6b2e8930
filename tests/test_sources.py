"""Input sources for predict.py: folders with bad files, globs, lists, videos, prefetch shutdown."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from build_utils.dataset.augment import letterbox_chw
from build_utils.errors import DatasetError
from train_val_utils.predict.sources import FramePrefetcher, resolve_source


def _write_jpg(path: Path, h: int, w: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), value, np.uint8)
    img[: h // 2, :, 2] = 255  # red top half in BGR, so channel order is checkable
    assert cv2.imwrite(str(path), img)


def write_video(path: Path, n: int, size_wh: tuple[int, int] = (96, 64), fps: float = 10.0) -> None:
    """A short mp4 whose frame k has brightness 20*k, so frame order survives a round trip."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
    assert writer.isOpened()
    for k in range(n):
        writer.write(np.full((size_wh[1], size_wh[0], 3), min(20 * k + 10, 250), np.uint8))
    writer.release()


@pytest.fixture()
def messy_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    _write_jpg(root / "a.jpg", 40, 60, 50)
    _write_jpg(root / "sub" / "b.png", 30, 20, 100)
    (root / "notes.txt").write_text("not an image\n")
    (root / "empty.jpg").write_bytes(b"")
    good = (root / "a.jpg").read_bytes()
    (root / "sub" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root


def test_folder_reports_bad_files_and_keeps_going(messy_folder: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="train_val_utils.predict.sources"):
        spec = resolve_source(messy_folder)
        loader = FramePrefetcher(spec, maxsize=2)
        frames = list(loader)
    assert [f.rel.as_posix() for f in frames] == ["a.jpg", "sub/b.png"]
    assert frames[0].img.shape == (40, 60, 3) and frames[0].img.dtype == np.uint8
    r, g, b = frames[0].img[0, 0].tolist()
    assert r > 240 and g < 60 and b < 60  # RGB: the red top half (JPEG is lossy)
    assert [f.index for f in frames] == [1, 3] and frames[0].total == 4
    assert {p.name for p, _ in loader.skipped} == {"empty.jpg", "truncated.jpg"}
    text = caplog.text
    for name in ("notes.txt", "empty.jpg", "truncated.jpg"):
        assert name in text, f"{name} was not reported"


def test_glob_and_list_keep_relative_paths(messy_folder: Path, tmp_path: Path) -> None:
    spec = resolve_source(str(messy_folder / "**" / "*.png"))
    assert [spec.rel(p).as_posix() for p in spec.files] == ["b.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/a.jpg\n\n# comment\nimgs/sub/b.png\n")
    spec = resolve_source(listing)
    assert [spec.rel(p).as_posix() for p in spec.files] == ["a.jpg", "sub/b.png"]
    single = resolve_source(messy_folder / "sub" / "b.png")
    assert single.rel(single.files[0]) == Path("b.png")


def test_bad_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        resolve_source(tmp_path / "missing")
    (tmp_path / "only.txt").write_text("x")
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetError, match="no images or videos"):
        resolve_source(tmp_path / "d")
    assert resolve_source("0").camera == 0


def test_video_frames_in_order_with_transform(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, 6)
    loader = FramePrefetcher(resolve_source(video), transform=lambda img: letterbox_chw(img, 64), maxsize=2)
    frames = list(loader)
    assert [f.frame for f in frames] == [1, 2, 3, 4, 5, 6]
    assert all(f.kind == "video" and f.net_input.chw.shape == (3, 64, 64) for f in frames)
    assert frames[0].frames == 6 and frames[0].fps == pytest.approx(10.0)
    means = [float(f.img.mean()) for f in frames]
    assert means == sorted(means) and abs(means[-1] - 110) < 8  # lossy codec: order and level survive


def test_consumer_stopping_early_stops_the_thread(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, 30)
    loader = FramePrefetcher(resolve_source(video), maxsize=1)
    for frame in loader:
        if frame.frame == 2:
            break
    assert loader._thread is None  # closed and joined, not left blocking on a full queue
