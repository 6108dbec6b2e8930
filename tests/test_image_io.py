"""read_image: RGB order, EXIF orientation, gray/alpha to 3 channels, clear errors."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from build_utils.dataset.image_io import is_image_file, read_image, sniff_image_format
from build_utils.dataset.labels import verify_pair
from build_utils.errors import DatasetError


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


@pytest.mark.parametrize(
    ("head", "fmt"),
    [(b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM6\x00\x00\x00", "BMP"),
     (b"II*\x00\x08\x00", "TIFF"), (b"MM\x00*\x00\x00", "TIFF"), (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WEBP"),
     (b"RIFF\x10\x00\x00\x00WAVEfmt ", None), (b"GIF89a", None), (b"0 0.5 0.5 0.1 0.1", None), (b"", None)],
)
def test_format_sniffed_from_content(head: bytes, fmt: str | None) -> None:
    assert sniff_image_format(head) == fmt


def _png_bytes() -> bytes:
    ok, enc = cv2.imencode(".png", np.full((20, 30, 3), 90, np.uint8))
    assert ok
    return enc.tobytes()


def test_png_named_jpg_decodes_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "really_png.jpg"
    path.write_bytes(_png_bytes())  # no JPEG end-of-image marker anywhere
    assert read_image(path).shape == (20, 30, 3)
    res = verify_pair(str(path), str(tmp_path / "really_png.txt"), nc=None)
    assert res.status == "missing" and res.shape == (20, 30), res.reason


def test_truncated_jpeg_found_by_content_whatever_the_suffix(tmp_path: Path) -> None:
    ok, enc = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    data = enc.tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    res = verify_pair(str(tmp_path / "cut.png"), str(tmp_path / "cut.txt"), nc=None)
    assert res.status == "corrupt" and res.reason.startswith("truncated JPEG")


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"this is a caption, not a photo\n", "not an image: the file starts with text 'this is a caption,"),
     (b"GIF89a\x01\x00\x01\x00\x00\x00\x00", "unrecognised image format (first bytes 47 49 46 38 39 61"),
     (b"\x89PNG\r\n\x1a\n garbage", "unreadable image: PNG data that cannot be decoded")],
)
def test_undecodable_files_get_a_true_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    res = verify_pair(str(path), str(tmp_path / "photo.txt"), nc=None)
    assert res.status == "corrupt" and res.reason.startswith(reason), res.reason
    assert "truncated" not in res.reason
    with pytest.raises(DatasetError, match=rf"photo\.jpg: {re.escape(reason)}"):
        read_image(path)
