"""Load and validate `hyp.yaml`, the hyperparameters users edit by hand, and read its sections.

Users tune `cfg/hyp.yaml` directly, so a typo must fail loudly at load time rather than turn
into a silently ignored key or a NaN after an hour of training. `load_hyp` therefore checks the
file against one schema (every key of the shipped `cfg/hyp.yaml`: its type and allowed range)
and raises a single `HypError` that lists every problem, one per line, so a user fixes them
all in one edit.

The file has three sections, each read by one consumer through one reader: `loss_hyp` (the
loss), `optimizer_hyp` (optimizer, schedule, warm-up) and `augment_hyp` (the dataset). Each
returns a frozen dataclass whose field defaults are the shipped `cfg/hyp.yaml` values (a test
keeps them equal), so `DEFAULT_HYP` is the one in-code copy of the defaults.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from build_utils.errors import HypError
from build_utils.geometry import IOU_KINDS
from build_utils.project_files import locate
from build_utils.text_io import read_yaml_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LossHyp:
    """The loss section; gains are as in the file, before `YoloLoss` scales `cls` and `obj`."""

    giou: float = 3.54  # box loss gain (whichever IoU kind iou_type selects)
    cls: float = 37.4  # class BCE gain, scaled by nc/80 in YoloLoss
    cls_pw: float = 1.0  # class BCE positive weight
    obj: float = 64.3  # objectness BCE gain, scaled by img_size/320 in YoloLoss
    obj_pw: float = 1.0  # objectness BCE positive weight
    iou_t: float = 0.20  # anchor match threshold on wh-IoU
    iou_type: str = "giou"  # one of geometry.IOU_KINDS
    gr: float = 1.0  # objectness target = (1 - gr) + gr * IoU
    fl_gamma: float = 0.0  # focal loss gamma (0 = plain BCE)
    label_smoothing: float = 0.0  # class label smoothing epsilon


@dataclass(frozen=True)
class OptimizerHyp:
    """The optimizer, schedule and warm-up section."""

    lr0: float = 0.001  # initial learning rate
    lrf: float = 0.01  # final LR = lr0 * lrf (cosine)
    momentum: float = 0.937  # SGD momentum / Adam beta1
    weight_decay: float = 0.0005  # conv/linear weights only
    warmup_epochs: float = 3.0  # warm-up length: max(epochs worth, 100) iterations, <= 1/3 of the run
    warmup_momentum: float = 0.8  # momentum at the start of warm-up
    warmup_bias_lr: float = 0.1  # bias LR at the start of warm-up


@dataclass(frozen=True)
class AugmentHyp:
    """The augmentation section, read by the dataset (`LoadImagesAndLabels`) and the mosaic."""

    hsv_h: float = 0.0138  # hue gain (fraction)
    hsv_s: float = 0.678  # saturation gain (fraction)
    hsv_v: float = 0.36  # value gain (fraction)
    degrees: float = 0.0  # rotation (+/- degrees)
    translate: float = 0.0  # translation (+/- fraction of the image)
    scale: float = 0.0  # scale gain (+/- fraction)
    shear: float = 0.0  # shear (+/- degrees)
    fliplr: float = 0.5  # probability of a left-right flip
    flipud: float = 0.0  # probability of an up-down flip
    mosaic: float = 1.0  # probability of a 4-image mosaic


SECTIONS = (LossHyp, OptimizerHyp, AugmentHyp)
# The shipped cfg/hyp.yaml as a dict, key for key (tests/test_hyp.py checks the file equals it).
DEFAULT_HYP: dict[str, Any] = {k: v for section in SECTIONS for k, v in asdict(section()).items()}


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
STRING_KEYS = {"iou_type": IOU_KINDS}
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
    image size: `loss.YoloLoss` does that.
    """
    path = locate(path)
    if not path.is_file():
        raise HypError(f"{path}: hyperparameter file not found; pass --hyp cfg/hyp.yaml or a copy of it")
    raw = read_yaml_file(path, HypError, "start from cfg/hyp.yaml")
    return validate_hyp(raw, str(path))


_Section = TypeVar("_Section", LossHyp, OptimizerHyp, AugmentHyp)


def _read_section(cls: type[_Section], hyp: Mapping[str, Any] | _Section) -> _Section:
    """The `cls` section of a validated hyp mapping; a section object is returned as it is."""
    if isinstance(hyp, cls):
        return hyp
    missing = [f.name for f in fields(cls) if f.name not in hyp]
    if missing:
        raise HypError(f"<hyp>: {', '.join(missing)} missing from the {cls.__name__} section; "
                       f"load the hyperparameters with load_hyp (start from cfg/hyp.yaml)")
    return cls(**{f.name: hyp[f.name] for f in fields(cls)})


def loss_hyp(hyp: Mapping[str, Any] | LossHyp) -> LossHyp:
    """The loss section (gains, positive weights, IoU kind and threshold, gr, focal, smoothing)."""
    return _read_section(LossHyp, hyp)


def optimizer_hyp(hyp: Mapping[str, Any] | OptimizerHyp) -> OptimizerHyp:
    """The optimizer section (lr0, lrf, momentum, weight decay, warm-up)."""
    return _read_section(OptimizerHyp, hyp)


def augment_hyp(hyp: Mapping[str, Any] | AugmentHyp) -> AugmentHyp:
    """The augmentation section (HSV gains, affine ranges, flip and mosaic probabilities)."""
    return _read_section(AugmentHyp, hyp)
