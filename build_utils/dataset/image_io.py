"""The one image decoder: every loader (datasets, predict, tests) reads pixels through `read_image`.

Having one decoder means EXIF orientation, grayscale and alpha handling and the RGB channel order
are decided once; the classic ports mixed BGR (cv2) and RGB (PIL) and silently trained on
sideways phone photos. It is also the one place that refuses decompression bombs: the header's
width x height is checked against a pixel limit before any pixel is decoded (a PNG can claim
60000x60000 in 100 bytes), and OpenCV's own refusals become `DatasetError`s naming the file, so
one such file is a skipped item, never a stopped run.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import cv2
import numpy as np

from build_utils.errors import DatasetError

LOGGER = logging.getLogger(__name__)

IMG_FORMATS = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")
HEAD_BYTES = 32  # every signature `sniff_image_format` knows, and enough text to recognise a text file
# Largest image decoded, in pixels (a 20000x20000 photo, 4e8 pixels and 1.2 GB decoded, still loads);
# the environment variable raises or lowers it (OpenCV itself refuses more than 2**30 unless its own
# CV_IO_MAX_IMAGE_PIXELS is raised too).
MAX_PIXELS_ENV = "YOLO_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 500_000_000
JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def is_image_file(path: str | Path) -> bool:
    """True when the suffix (any case) is an image type the loaders accept."""
    return os.path.splitext(path)[1].lower() in IMG_FORMATS  # no Path: called per file when listing


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


def max_image_pixels() -> int:
    """The pixel limit: $YOLO_MAX_IMAGE_PIXELS when set (a number, e.g. 1e9), else DEFAULT_MAX_PIXELS."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return int(float(value))
    except ValueError:
        raise DatasetError(f"{MAX_PIXELS_ENV}={value!r}: not a number; set it to a pixel count such as "
                           "1e9, or unset it") from None


def _jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(w, h) from the first start-of-frame marker, walking the segment lengths (no pixel decoded)."""
    i, n = 2, data.size
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = int(data[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5:i + 9].tobytes())
            return w, h
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + (int(data[i + 2]) << 8 | int(data[i + 3]))
    return None


def header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) an image header announces, read without decoding; None when unknown (TIFF, or a
    header too short): OpenCV's own limit then still applies."""
    head = data[:32].tobytes()
    fmt = sniff_image_format(head)
    if fmt == "PNG" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if fmt == "BMP" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if fmt == "JPEG":
        return _jpeg_size(data)
    if fmt == "WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if kind == b"VP8L":
            b = head[21:25]
            return 1 + (b[0] | (b[1] & 0x3F) << 8), 1 + (b[1] >> 6 | b[2] << 2 | (b[3] & 0xF) << 10)
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", head[26:30])
            return w & 0x3FFF, h & 0x3FFF
    return None


def check_pixel_limit(data: np.ndarray, path: str) -> None:
    """Refuse an image whose header claims more pixels than `max_image_pixels()`, before decoding."""
    size = header_size(data)
    limit = max_image_pixels()
    if size is not None and size[0] * size[1] > limit:
        w, h = size
        raise DatasetError(f"{path}: the header claims {w}x{h} pixels ({w * h:,}), over the limit "
                           f"of {limit:,} (a decompression bomb, or a photo to downscale first); "
                           f"remove it, or raise {MAX_PIXELS_ENV}")


def _decode_buffer(data: np.ndarray, path: str) -> np.ndarray:
    if data.size == 0:
        raise DatasetError(f"{path}: the file is empty (0 bytes); remove it or re-export the image")
    check_pixel_limit(data, path)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # BGR, EXIF orientation applied by OpenCV
    except cv2.error as err:  # e.g. over OpenCV's CV_IO_MAX_IMAGE_PIXELS for a format without our check
        why = (str(err).strip().splitlines() or ["decoder error"])[-1].strip()[:160]
        raise DatasetError(f"{path}: OpenCV refused to decode it ({why}); remove it or re-export it "
                           "as a smaller JPEG/PNG") from None
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
