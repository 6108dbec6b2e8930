"""Darknet `.weights` read/write (our `.pt` checkpoints live in `modules/checkpoint.py`).

Darknet layout (guide section 5): int32 major, minor, revision; `seen` as int64 when
major*10+minor >= 2 (and both < 1000) else int32; then per `[convolutional]` in cfg order,
float32 `bn.bias, bn.weight, running_mean, running_var` (or `conv.bias` without BN), then
`conv.weight` in OIHW order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from build_utils.atomic import atomic_write
from build_utils.errors import WeightsError
from modules.model import DarkNet

logger = logging.getLogger(__name__)


def seen_dtype(major: int, minor: int) -> type[np.integer]:
    """Width of the header's `seen` counter: int64 when major*10+minor >= 2 (both < 1000), else int32.

    Darknet widened `seen` in version 0.2; the rule decides whether the floats start at byte 20 or 16.
    """
    return np.int64 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else np.int32


def read_darknet_header(f: BinaryIO, path: Path) -> dict[str, int]:
    """Read the header from the open file `f`; a file too short to hold one raises `WeightsError`."""
    size = path.stat().st_size
    head = np.fromfile(f, dtype=np.int32, count=3)
    if head.size == 3:
        major, minor, revision = (int(v) for v in head)
        seen = np.fromfile(f, dtype=seen_dtype(major, minor), count=1)
        if seen.size == 1:
            return {"major": major, "minor": minor, "revision": revision, "seen": int(seen[0])}
    raise WeightsError(f"{path}: {size} bytes is shorter than a Darknet .weights header (16 or 20 bytes, "
                       "then the floats); the file is empty or truncated: download it again")


def darknet_file_floats(path: str | Path) -> int:
    """How many float32 follow the header of a Darknet `.weights` file (read from the header alone)."""
    path = Path(path)
    with open(path, "rb") as f:
        header = read_darknet_header(f, path)
    header_bytes = 3 * 4 + np.dtype(seen_dtype(header["major"], header["minor"])).itemsize
    return (path.stat().st_size - header_bytes) // 4


def _conv_tensors(model: DarkNet, cutoff: int) -> list[list[torch.Tensor]]:
    """Per conv layer below `cutoff`, its tensors in Darknet file order."""
    stop = len(model.module_defs) if cutoff < 0 else min(cutoff, len(model.module_defs))
    out = []
    for mdef, block in zip(model.module_defs[:stop], model.module_list[:stop]):
        if mdef["type"] != "convolutional":
            continue
        conv = block.conv
        if mdef.get("batch_normalize", 0):
            if not hasattr(block, "bn"):
                raise WeightsError("Darknet .weights need the unfused model (batch norm folded by fuse()); "
                                   "load/save weights before calling fuse()")
            bn = block.bn
            out.append([bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight])
        else:
            out.append([conv.bias, conv.weight])
    return out


def darknet_float_count(model: DarkNet, cutoff: int = -1) -> int:
    """How many float32 a `.weights` file for this model (first `cutoff` layers) holds."""
    return sum(t.numel() for ts in _conv_tensors(model, cutoff) for t in ts)


def fitting_class_count(model: DarkNet, have: int) -> int | None:
    """The class count whose predictor convs would make `have` floats fit this cfg, if any.

    Only the predictor convs depend on the class count: each holds na * (in_ch * k * k + 1) floats
    per unit of (5 + nc), so a file of another class count differs by a multiple of that sum.
    """
    coef = 0  # floats per unit of (5 + nc), summed over the predictor convs
    for i in model.yolo_layers:
        conv, yolo = model.module_list[i - 1].conv, model.module_list[i]
        coef += yolo.na * (conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1] + 1)
    base = darknet_float_count(model) - coef * (5 + model.nc)
    if coef and (have - base) % coef == 0 and (have - base) // coef > 5:
        return (have - base) // coef - 5
    return None


def _mismatch_message(model: DarkNet, path: Path, have: int, need: int) -> str:
    """Both counts and the likeliest cause, including the class count that would fit, if any."""
    fit = fitting_class_count(model, have)
    hint = "" if fit is None else f" The file fits this cfg with classes={fit}: regenerate the cfg for it."
    cause = "a truncated download or a cfg with more layers" if have < need else "weights of another cfg"
    return (f"{path}: holds {have:,} floats but {model.cfg_name} needs {need:,}; likely cause: wrong cfg, "
            f"wrong class count (predictor filters) or {cause}.{hint}")


def load_darknet_weights(model: DarkNet, path: str | Path, cutoff: int = -1) -> dict[str, int]:
    """Load Darknet weights into the first `cutoff` layers (-1: all); returns the header.

    With cutoff -1 the file must hold exactly what the cfg needs; with a cutoff (e.g. 75 for
    `darknet53.conv.74`) it must hold at least the floats of those layers.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    with open(path, "rb") as f:
        header = read_darknet_header(f, path)
        data = np.fromfile(f, dtype=np.float32)
    groups = _conv_tensors(model, cutoff)
    need = sum(t.numel() for ts in groups for t in ts)
    if (cutoff < 0 and data.size != need) or data.size < need:
        raise WeightsError(_mismatch_message(model, path, data.size, need))
    pos = 0
    with torch.no_grad():
        for tensors in groups:
            for t in tensors:
                n = t.numel()
                t.copy_(torch.from_numpy(data[pos:pos + n].copy()).view_as(t))
                pos += n
    logger.info("loaded %s floats from %s into %d conv layers", f"{pos:,}", path.name, len(groups))
    return header


def save_darknet_weights(model: DarkNet, path: str | Path, cutoff: int = -1,
                         header: dict[str, Any] | None = None) -> None:
    """Write Darknet weights (first `cutoff` layers); `header` from a load keeps the file byte-identical."""
    header = header or {"major": 0, "minor": 2, "revision": 0, "seen": 0}
    major, minor = int(header["major"]), int(header["minor"])
    with atomic_write(path) as f:
        np.array([major, minor, int(header["revision"])], dtype=np.int32).tofile(f)
        np.array([int(header["seen"])], dtype=seen_dtype(major, minor)).tofile(f)
        for tensors in _conv_tensors(model, cutoff):
            for t in tensors:
                t.detach().cpu().float().numpy().astype(np.float32).tofile(f)
