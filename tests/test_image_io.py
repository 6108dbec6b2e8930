"""read_image: RGB order, EXIF orientation, gray/alpha to 3 channels, clear errors."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from build_utils.errors import DatasetError
from build_utils.image_io import is_image_file, read_image


def _exif_orientation_segment(orientation: int) -> bytes:
    """A minimal APP1 EXIF segment (big-endian TIFF) holding only the Orientation tag."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def test_rgb_order(tmp_path: Path) -> None:
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    img = read_image(tmp_path / "red.png")
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    assert img[..., 0].min() == 255 and img[..., 2].max() == 0


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = 255  # left half white (wide image)
    ok, enc = cv2.imencode(".jpg", img)
    assert ok
    data = enc.tobytes()
    (tmp_path / "rot.jpg").write_bytes(data[:2] + _exif_orientation_segment(6) + data[2:])
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape[:2] == (80, 40)  # orientation 6 = rotate 90 degrees clockwise: tall now
    assert out[:35].mean() > 200 and out[45:].mean() < 50  # white half moved to the top


def test_gray_and_alpha_become_three_channels(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "g.png"), np.full((12, 14), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((12, 14, 4), 200, np.uint8))
    g, a = read_image(tmp_path / "g.png"), read_image(tmp_path / "a.png")
    assert g.shape == (12, 14, 3) and int(g[0, 0, 1]) == 77
    assert a.shape == (12, 14, 3)


def test_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    for name in ("empty.jpg", "junk.jpg", "missing.jpg"):
        with pytest.raises(DatasetError, match=name):
            read_image(tmp_path / name)


def test_image_suffixes_any_case() -> None:
    assert all(is_image_file(f"x.{s}") for s in ("JPG", "jpeg", "Png", "bmp", "TIF", "tiff", "webp"))
    assert not is_image_file("x.txt")
