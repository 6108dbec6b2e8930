"""Load and validate `hyp.yaml`, the hyperparameters users edit by hand.

Users tune `cfg/hyp.yaml` directly, so a typo must fail loudly at load time rather than turn
into a silently ignored key or a NaN after an hour of training. `load_hyp` therefore checks the
file against one schema (every key of the shipped `cfg/hyp.yaml`: its type and allowed range)
and raises a single `HypError` that lists every problem, one per line, so a user fixes them
all in one edit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from build_utils.errors import HypError
from build_utils.text_io import load_yaml_text, read_utf8

logger = logging.getLogger(__name__)

IOU_TYPES = ("giou", "diou", "ciou", "iou")


@dataclass(frozen=True)
class _Rule:
    """A numeric key's allowed interval; `lo_open`/`hi_open` make an end exclusive."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        hi = "inf" if math.isinf(self.hi) else f"{self.hi:g}"
        return f"{left}{self.lo:g}, {hi}{right}"

    def ok(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below


_NONNEG = _Rule(0.0)
_POS = _Rule(0.0, lo_open=True)
_PROB = _Rule(0.0, 1.0)

# Every key of cfg/hyp.yaml and its allowed range (iou_type is the one string key).
SCHEMA: dict[str, _Rule] = {
    "giou": _NONNEG, "cls": _NONNEG, "cls_pw": _POS, "obj": _NONNEG, "obj_pw": _POS,
    "iou_t": _PROB, "gr": _PROB, "fl_gamma": _NONNEG, "label_smoothing": _Rule(0.0, 1.0, hi_open=True),
    "lr0": _POS, "lrf": _Rule(0.0, 1.0, lo_open=True), "momentum": _Rule(0.0, 1.0, hi_open=True),
    "weight_decay": _NONNEG, "warmup_epochs": _NONNEG, "warmup_momentum": _Rule(0.0, 1.0, hi_open=True),
    "warmup_bias_lr": _NONNEG,
    "hsv_h": _PROB, "hsv_s": _PROB, "hsv_v": _PROB, "degrees": _Rule(0.0, 180.0),
    "translate": _PROB, "scale": _Rule(0.0, 1.0, hi_open=True), "shear": _Rule(0.0, 90.0, hi_open=True),
    "fliplr": _PROB, "flipud": _PROB, "mosaic": _PROB,
}
STRING_KEYS = {"iou_type": IOU_TYPES}
REQUIRED_KEYS = tuple(SCHEMA) + tuple(STRING_KEYS)


def _check_number(key: str, value: Any, rule: _Rule) -> tuple[float | None, str | None]:
    """Return (float value, None) or (None, problem text). bool is refused: YAML `yes` is not 1.0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"{key}: expected a number, got {type(value).__name__} {value!r}"
    v = float(value)
    if not math.isfinite(v) or not rule.ok(v):
        return None, f"{key}: {value!r} is out of range, allowed {rule.describe()}"
    return v, None


def validate_hyp(raw: Any, source: str = "<hyp>") -> dict[str, Any]:
    """Validate an already-parsed hyp mapping (e.g. one stored in a checkpoint).

    Returns a new dict with every numeric value as float and `iou_type` lower-cased. Raises one
    `HypError` naming `source` and listing every unknown, missing, mistyped or out-of-range key.
    """
    if not isinstance(raw, dict):
        raise HypError(f"{source}: expected a mapping of `key: value` lines, got {type(raw).__name__}; "
                       f"start from cfg/hyp.yaml")
    problems: list[str] = []
    hyp: dict[str, Any] = {}
    for key in raw:
        if key not in SCHEMA and key not in STRING_KEYS:
            problems.append(f"{key}: unknown key (allowed keys are those of cfg/hyp.yaml)")
    for key in REQUIRED_KEYS:
        if key not in raw:
            problems.append(f"{key}: missing (copy it from cfg/hyp.yaml)")
            continue
        value = raw[key]
        if key in STRING_KEYS:
            allowed = STRING_KEYS[key]
            if not isinstance(value, str) or value.lower() not in allowed:
                problems.append(f"{key}: {value!r} is not one of {', '.join(allowed)}")
            else:
                hyp[key] = value.lower()
            continue
        v, problem = _check_number(key, value, SCHEMA[key])
        if problem:
            problems.append(problem)
        else:
            hyp[key] = v
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise HypError(f"{source}: {len(problems)} problem(s) in the hyperparameters:\n{lines}")
    return hyp


def load_hyp(path: str | Path) -> dict[str, Any]:
    """Read and validate a `hyp.yaml`; returns a dict of floats (plus `iou_type`, a str).

    Every key of `cfg/hyp.yaml` is required. Problems raise one `HypError` whose message names the
    file and lists each problem on its own line. Values are not yet scaled for the class count or
    image size: see `scale_loss_gains`.
    """
    path = Path(path)
    if not path.is_file():
        raise HypError(f"{path}: hyperparameter file not found; pass --hyp cfg/hyp.yaml or a copy of it")
    try:
        raw = load_yaml_text(read_utf8(path, HypError))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise HypError(f"{where}: not valid YAML ({getattr(e, 'problem', e)}); "
                       f"fix the line or start from cfg/hyp.yaml") from None
    return validate_hyp(raw, str(path))


def scale_loss_gains(hyp: dict[str, Any], nc: int, img_size: int) -> dict[str, Any]:
    """Return a copy with `cls *= nc / 80` and `obj *= img_size / 320`.

    The classic gains were tuned for 80 classes at 320 pixels: the class loss is a mean over nc
    logits and the objectness loss a mean over a grid that grows with the image, so these factors
    keep each term's weight comparable when either changes.
    """
    scaled = dict(hyp)
    scaled["cls"] = hyp["cls"] * nc / 80.0
    scaled["obj"] = hyp["obj"] * img_size / 320.0
    return scaled
