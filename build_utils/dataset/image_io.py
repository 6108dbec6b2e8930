"""The one image decoder: every loader (datasets, predict, tests) reads pixels through `read_image`.

Having one decoder means EXIF orientation, grayscale and alpha handling and the RGB channel order
are decided once; the classic ports mixed BGR (cv2) and RGB (PIL) and silently trained on
sideways phone photos.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from build_utils.errors import DatasetError

LOGGER = logging.getLogger(__name__)

IMG_FORMATS = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")
HEAD_BYTES = 32  # every signature `sniff_image_format` knows, and enough text to recognise a text file


def is_image_file(path: str | Path) -> bool:
    """True when the suffix (any case) is an image type the loaders accept."""
    return Path(path).suffix.lower() in IMG_FORMATS


def read_image(path: str | Path) -> np.ndarray:
    """Decode `path` into an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Grayscale and 4-channel images become 3-channel (IMREAD_COLOR drops alpha and replicates
    gray). Bytes are read by numpy and decoded by `cv2.imdecode`, so non-ASCII paths work on
    every platform. Raises `DatasetError` naming the file when it is missing, empty or undecodable.
    """
    return cv2.cvtColor(_decode_bgr(Path(path)), cv2.COLOR_BGR2RGB)  # (H, W, 3) RGB


def read_image_resized(path: str | Path, long_side: int, area_when_shrinking: bool = True) -> np.ndarray:
    """`read_image` then resize so the long side is `long_side`: (h, w, 3) uint8 RGB.

    The colour conversion runs after the resize (on fewer pixels): same result, less work in the
    loader's hottest function. Area interpolation when shrinking (if asked), linear otherwise.
    """
    img = _decode_bgr(Path(path))
    h0, w0 = img.shape[:2]
    r = long_side / max(h0, w0)
    if r != 1:
        interp = cv2.INTER_AREA if r < 1 and area_when_shrinking else cv2.INTER_LINEAR
        img = cv2.resize(img, (max(1, round(w0 * r)), max(1, round(h0 * r))), interpolation=interp)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_image_bytes(data: bytes, source: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from encoded bytes (e.g. fetched from a URL); `source` names them in errors."""
    return cv2.cvtColor(_decode_buffer(np.frombuffer(data, dtype=np.uint8), source), cv2.COLOR_BGR2RGB)


def _decode_bgr(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read the file ({err.strerror}); check the path") from None
    return _decode_buffer(data, str(path))


def _decode_buffer(data: np.ndarray, path: str) -> np.ndarray:
    if data.size == 0:
        raise DatasetError(f"{path}: the file is empty (0 bytes); remove it or re-export the image")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # BGR, EXIF orientation applied by OpenCV
    if img is None:
        why = undecodable_reason(data[:HEAD_BYTES].tobytes())
        raise DatasetError(f"{path}: {why}; remove it or re-export it as JPEG/PNG")
    return img  # (H, W, 3) BGR


def sniff_image_format(head: bytes) -> str | None:
    """The image format the first bytes announce ('JPEG', 'PNG', 'BMP', 'TIFF', 'WEBP'), else None.

    Files are judged by content, not by suffix: exporters and web downloads often save a PNG as
    `.jpg`, which decodes fine and must not be checked as a JPEG.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG"):
        return "PNG"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def undecodable_reason(head: bytes) -> str:
    """Why bytes starting with `head` gave no image: a damaged known format, text, or unknown data."""
    fmt = sniff_image_format(head)
    if fmt is not None:
        return f"unreadable image: {fmt} data that cannot be decoded (damaged or cut short)"
    text = _as_text(head)
    if text:
        return f"not an image: the file starts with text {text!r}"
    first = head[:8].hex(" ")
    return f"unrecognised image format (first bytes {first}); supported: JPEG, PNG, BMP, TIFF, WebP"


def _as_text(head: bytes) -> str:
    """`head` as stripped text when it is printable UTF-8 (a character cut at the end allowed), else ''."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:
            return ""
        text = head[:err.start].decode("utf-8")
    printable = all(c.isprintable() or c in "\t\r\n" for c in text)
    return text.strip() if printable else ""
