"""Hostile inputs a careless or hostile user hands the tools: images whose headers claim 60000x60000
pixels, damaged and renamed model files. Shared by the tests and `bench/probe_reliability.py`."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

BOMB_SIDE = 60000  # 3.6e9 pixels: 10.8 GB decoded


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(w: int = BOMB_SIDE, h: int = BOMB_SIDE) -> bytes:
    """A ~100-byte PNG whose IHDR claims w x h RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def bmp_bomb(w: int = BOMB_SIDE, h: int = BOMB_SIDE) -> bytes:
    """A BMP header claiming w x h 24-bit pixels, with none of them present."""
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 3 * w * h % 2**32, 0, 0, 54) + info + b"\0" * 64


def jpeg_bomb(w: int = BOMB_SIDE, h: int = BOMB_SIDE) -> bytes:
    """A real 16x16 JPEG whose start-of-frame marker is patched to claim w x h."""
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 127, np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def webp_bomb(w: int = 16_000_000, h: int = 16_000_000) -> bytes:
    """A WebP extended header (VP8X) claiming a w x h canvas."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (w - 1).to_bytes(3, "little") + \
        (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def tiff_bomb(w: int = BOMB_SIDE, h: int = BOMB_SIDE) -> bytes:
    """A little-endian TIFF whose first IFD claims w x h 8-bit RGB (no header check here: OpenCV refuses)."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 8), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, 3 * w * h % 2**32)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def truncated_jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    return buf.tobytes()[: len(buf) // 2]


# name -> bytes of a file that must be skipped (one warning) among good ones, never stop a run
BAD_IMAGES = {
    "bomb_png.png": png_bomb, "bomb_bmp.bmp": bmp_bomb, "bomb_jpeg.jpg": jpeg_bomb,
    "bomb_webp.webp": webp_bomb, "bomb_tiff.tif": tiff_bomb, "truncated.jpg": truncated_jpeg,
    "text.jpg": lambda: b"<html>404 not found</html>\n", "empty.jpg": lambda: b"",
}


def write_bad_image(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(BAD_IMAGES[name]())
    return path


def model_file_variants(folder: Path, pt: Path, onnx: Path, torchscript: Path) -> dict[str, tuple[Path, str]]:
    """Damaged and renamed copies of good exports: name -> (path, a phrase the one error line must hold)."""
    def cut(src: Path, name: str, keep: float = 0.3) -> Path:
        data = src.read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])
        return folder / name

    def copy(src: Path, name: str) -> Path:
        shutil.copyfile(src, folder / name)
        return folder / name

    def text(name: str, content: bytes) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    return {
        "truncated.onnx": (cut(onnx, "truncated.onnx"), "truncated or damaged"),
        "pt_renamed.onnx": (copy(pt, "pt_renamed.onnx"), "is a PyTorch checkpoint (torch.save), not an ONNX"),
        "truncated.torchscript": (cut(torchscript, "truncated.torchscript"), "truncated or damaged"),
        "pt_renamed.torchscript": (copy(pt, "pt_renamed.torchscript"), "a PyTorch checkpoint (torch.save)"),
        "ts_renamed.pt": (copy(torchscript, "ts_renamed.pt"), "is a TorchScript export, not a PyTorch"),
        "onnx_renamed.pt": (copy(onnx, "onnx_renamed.pt"), "is an ONNX model, not a PyTorch checkpoint"),
        "onnx_renamed.torchscript": (copy(onnx, "onnx_renamed.torchscript"), "rename it to"),
        "ts_renamed.onnx": (copy(torchscript, "ts_renamed.onnx"), "is a TorchScript export, not an ONNX"),
        "text.onnx": (text("text.onnx", b"version https://git-lfs.github.com/spec/v1\n"), "a text file"),
        "empty.onnx": (text("empty.onnx", b""), "empty file"),
        "empty.torchscript": (text("empty.torchscript", b""), "empty file"),
        "truncated.pt": (cut(pt, "truncated.pt"), "truncated or damaged"),
        "garbage.onnx": (text("garbage.onnx", bytes(range(256)) * 4), "not an ONNX model"),
    }
