"""What a model file is, by its bytes: so a renamed or damaged file gets the right one-line reason.

Users rename files (`best.pt` -> `best.onnx`), copies get cut short, and each reader fails in its own
words (`InvalidProtobuf`, `PytorchStreamReader failed locating file constants.pkl`). `sniff_model_file`
tells the kinds apart from the first bytes and, for zip archives, the member names (read from the
central directory at the end, no payload decompressed); `wrong_kind_error` turns a mismatch between
the suffix and the content into a `WeightsError` that says what the file really is and how to use it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from build_utils.errors import WeightsError

PICKLE_PROTOCOL_BYTE = 0x80  # a pickle stream (torch's legacy format, or plain pickle) starts with it
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's and torch.jit.save's format is a zip archive
ONNX_FIRST_TAG = 0x08  # ModelProto field 1 (ir_version, a varint) comes first in every exporter's output

# kind -> (what it is, the suffix and use that fits it)
KINDS = {
    "empty": ("an empty file (0 bytes)", None),
    "text": ("a text file", None),
    "torchscript": ("a TorchScript export", ".torchscript"),
    "checkpoint": ("a PyTorch checkpoint (torch.save)", ".pt"),
    "pickle": ("a pickle stream (torch's legacy checkpoint format)", ".pt"),
    "zip-damaged": ("a zip archive cut short or damaged (no central directory)", None),
    "zip-other": ("a zip archive not written by torch", None),
    "onnx": ("an ONNX model", ".onnx"),
    "other": ("neither a zip archive, a pickle stream nor an ONNX model", None),
}


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def sniff_model_file(path: str | Path) -> str:
    """One of the keys of KINDS, from the content (never the suffix)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return "zip-damaged"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "checkpoint" if any(n.endswith("/data.pkl") for n in names) else "zip-other"
    if head[0] == PICKLE_PROTOCOL_BYTE and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if _is_text(head):
        return "text"
    return "onnx" if head[0] == ONNX_FIRST_TAG else "other"


def describe_kind(kind: str) -> str:
    return KINDS[kind][0]


def wrong_kind_error(path: Path, kind: str, expected: str) -> WeightsError | None:
    """A `WeightsError` when the content `kind` is a known model format other than `expected` (the
    suffix the file carries); None when it may be the expected format (readable or damaged)."""
    what, suffix = KINDS[kind]
    if suffix is None or suffix == expected or {suffix, expected} == {".pt"}:
        return None
    if expected == ".pt" and kind == "pickle":
        return None
    return WeightsError(f"{path}: this {path.suffix or 'file'} is {what}, not {KINDS_BY_SUFFIX[expected]}; "
                        f"rename it to {path.with_suffix(suffix).name} and pass that")


KINDS_BY_SUFFIX = {".pt": "a PyTorch checkpoint", ".torchscript": "a TorchScript export",
                   ".onnx": "an ONNX model"}


def damaged_error(path: Path, kind: str, expected: str, detail: str) -> WeightsError:
    """The file has the expected format's look (or none we know) but its reader failed on it."""
    size = path.stat().st_size
    if kind in ("empty", "text", "other", "zip-other"):
        return WeightsError(f"{path}: not {KINDS_BY_SUFFIX.get(expected, 'a model file')}: it is "
                            f"{describe_kind(kind)}; pass the file export.py or train.py wrote")
    name = KINDS_BY_SUFFIX.get(expected, "a model file").split(" ", 1)[1]
    return WeightsError(f"{path}: not a readable {name} ({detail[:160]}); the file ({size:,} bytes) is "
                        "truncated or damaged: copy or export it again")
