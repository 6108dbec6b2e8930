"""Darknet `.cfg` parsing (the `.data` file and class names: `data_cfg.py`).

Users edit these files by hand, so every mistake is reported as a `ConfigError` whose message
starts with `path:line:` and says what was expected. Structural checks (route/shortcut targets,
`[yolo]` masks, predictor filters) happen here, before any module is built, so the error points
at the cfg line rather than at a tensor shape deep inside the model.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from build_utils.errors import ConfigError
from build_utils.project_files import locate
from build_utils.text_io import read_utf8

# Value kinds: "int", "float", "ints" (always a list), "floats" (always a list), "str", "num" (int or float).
_NET_KEYS = {
    "batch": "int", "subdivisions": "int", "width": "int", "height": "int", "channels": "int",
    "momentum": "float", "decay": "float", "angle": "float", "saturation": "float", "exposure": "float",
    "hue": "float", "learning_rate": "float", "burn_in": "int", "max_batches": "int", "policy": "str",
    "steps": "ints", "scales": "floats", "power": "float", "max_crop": "int", "min_crop": "int",
    "aspect": "float", "mosaic": "int", "cutmix": "int", "mixup": "int", "flip": "int", "blur": "int",
    "letter_box": "int", "optimized_memory": "int", "mosaic_bound": "int", "label_smooth_eps": "float",
    "adversarial_lr": "float", "track": "int", "augment_speed": "int", "sequential_subdivisions": "int",
    "try_fix_nan": "int", "loss_scale": "float", "dynamic_minibatch": "int", "gaussian_noise": "int",
    "workspace_size_limit_MB": "int", "ema_alpha": "float", "gamma": "float", "step": "int",
    "inputs": "int", "max_chart_loss": "float", "time_steps": "int", "num_boxes": "int",
    "train_only_bn": "int", "contrastive": "int", "unsupervised": "int", "use_cuda_graph": "int",
}
_SECTION_KEYS: dict[str, dict[str, str]] = {
    "net": _NET_KEYS,
    "convolutional": {
        "batch_normalize": "int", "filters": "int", "size": "int", "stride": "int", "pad": "int",
        "padding": "int", "groups": "int", "activation": "str", "dilation": "int",
    },
    "maxpool": {"size": "int", "stride": "int", "padding": "int"},
    "upsample": {"stride": "int"},
    "route": {"layers": "ints", "groups": "int", "group_id": "int"},
    "shortcut": {"from": "ints", "activation": "str"},
    "yolo": {
        "mask": "ints", "anchors": "floats", "classes": "int", "num": "int", "jitter": "float",
        "ignore_thresh": "float", "truth_thresh": "float", "random": "num", "scale_x_y": "float",
        "iou_thresh": "float", "cls_normalizer": "float", "iou_normalizer": "float",
        "obj_normalizer": "float",
        "iou_loss": "str", "iou_thresh_kind": "str", "nms_kind": "str", "beta_nms": "float",
        "max_delta": "float", "resize": "float", "new_coords": "int", "max": "int",
        "label_smooth_eps": "float", "objectness_smooth": "int", "counters_per_class": "ints",
    },
}
ACTIVATIONS = ("leaky", "linear", "mish", "swish", "relu", "logistic")
_SECTION_RE = re.compile(r"^\[\s*([^\]]*?)\s*\]$")
_INT_RE = re.compile(r"^[+-]?\d+$")
INT32_MAX = 2**31 - 1  # Darknet reads every integer into a C int


def parse_number(text: str) -> int | float:
    """'3' -> 3, '.1' -> 0.1, '1e-3' -> 0.001; raises ValueError otherwise."""
    text = text.strip()
    return int(text) if _INT_RE.match(text) else float(text)


class _OutOfRange(ValueError):
    """A numeric value that parses but no C int / finite float can hold."""


def _typed(kind: str, raw: str) -> Any:
    if kind == "str":
        return raw
    parts = [p for p in raw.split(",") if p.strip() != ""]
    values = [parse_number(p) for p in parts]
    for v in values:
        if (isinstance(v, int) and abs(v) > INT32_MAX) or (isinstance(v, float) and not math.isfinite(v)):
            raise _OutOfRange(str(v))
    if kind in ("ints", "floats"):
        if kind == "ints" and not all(isinstance(v, int) for v in values):
            raise ValueError(raw)
        return values
    if len(values) != 1:
        raise ValueError(raw)
    if kind == "int" and not isinstance(values[0], int):
        raise ValueError(raw)
    return float(values[0]) if kind == "float" else values[0]


_KIND_WORDS = {
    "int": "an integer", "float": "a number", "num": "a number",
    "ints": "a comma list of integers", "floats": "a comma list of numbers",
}


def _layer_tag(index: int) -> str:
    """' (layer N)' for cfg layers; '' for [net] (index -1)."""
    return f" (layer {index})" if index >= 0 else ""


def _parse_lines(text: str, source: str) -> list[dict[str, Any]]:
    """Split cfg text into typed section dicts; each keeps `_line` and `_key_lines`."""
    sections: list[dict[str, Any]] = []
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = re.split(r"[#;]", raw_line, maxsplit=1)[0].strip()
        if not line:
            continue
        match = _SECTION_RE.match(line)
        if match:
            name = match.group(1).lower()
            if name not in _SECTION_KEYS:
                known = ", ".join(f"[{s}]" for s in _SECTION_KEYS)
                raise ConfigError(f"{source}:{lineno}: unknown section [{name}]; expected one of {known}")
            sections.append({"type": name, "_line": lineno, "_key_lines": {}})
            continue
        if not sections:
            raise ConfigError(
                f"{source}:{lineno}: {line!r} appears before any [section]; start the file with [net]"
            )
        if "=" not in line:
            raise ConfigError(f"{source}:{lineno}: expected 'key=value' or '[section]', got {line!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        section = sections[-1]
        kinds = _SECTION_KEYS[section["type"]]
        if key not in kinds:
            raise ConfigError(
                f"{source}:{lineno}: unknown key {key!r} for [{section['type']}]; "
                f"expected one of {', '.join(sorted(kinds))}"
            )
        where = f"{source}:{lineno}: [{section['type']}]{_layer_tag(len(sections) - 2)}"
        if key in section["_key_lines"]:
            raise ConfigError(
                f"{where} {key}={value}: {key} is set twice in this section (first at line "
                f"{section['_key_lines'][key]}); keep one"
            )
        try:
            section[key] = _typed(kinds[key], value)
        except _OutOfRange as err:
            raise ConfigError(
                f"{where} {key}={value}: {err} is out of range (integers must fit a 32-bit int, numbers "
                f"must be finite); use a sensible value"
            ) from None
        except ValueError:
            raise ConfigError(
                f"{where} {key}={value!r} is not numeric; expected {_KIND_WORDS[kinds[key]]}"
            ) from None
        section["_key_lines"][key] = lineno
    return sections


def _where(source: str, section: dict[str, Any], key: str) -> str:
    return f"{source}:{section['_key_lines'].get(key, section['_line'])}"


def _check_links(layers: list[dict[str, Any]], source: str) -> None:
    """Route/shortcut targets must be earlier layers; resolved absolute indices are stored in `_from`."""
    for i, mdef in enumerate(layers):
        if mdef["type"] not in ("route", "shortcut"):
            continue
        key = "layers" if mdef["type"] == "route" else "from"
        if not mdef.get(key):
            raise ConfigError(f"{_where(source, mdef, key)}: [{mdef['type']}] (layer {i}) needs {key}=")
        resolved = []
        for ref in mdef[key]:
            j = i + ref if ref < 0 else ref
            if not 0 <= j < i:
                where = "before the first layer" if j < 0 else "forward (not an earlier layer)"
                raise ConfigError(
                    f"{_where(source, mdef, key)}: [{mdef['type']}] (layer {i}) {key}={ref} "
                    f"points to layer {j}, {where}; expected a negative offset from -1 to -{i} "
                    f"or an absolute index from 0 to {i - 1}"
                )
            resolved.append(j)
        mdef["_from"] = resolved


def _check_yolo(layers: list[dict[str, Any]], source: str) -> None:
    """Masks inside the anchor list, predictor filters = (5+classes)*len(mask), at least one [yolo]."""
    yolo_idx = [i for i, m in enumerate(layers) if m["type"] == "yolo"]
    if not yolo_idx:
        raise ConfigError(f"{source}:1: no [yolo] section; a detector cfg needs at least one [yolo] head")
    for i in yolo_idx:
        mdef = layers[i]
        anchors = mdef.get("anchors", [])
        if not anchors or len(anchors) % 2:
            raise ConfigError(
                f"{_where(source, mdef, 'anchors')}: [yolo] (layer {i}) anchors must be w,h pairs in pixels, "
                f"got {len(anchors)} numbers"
            )
        n_anchors = len(anchors) // 2
        if "num" in mdef and mdef["num"] != n_anchors:
            raise ConfigError(
                f"{_where(source, mdef, 'num')}: [yolo] (layer {i}) num={mdef['num']} but anchors lists "
                f"{n_anchors} pairs; set num={n_anchors}"
            )
        mdef.setdefault("mask", list(range(n_anchors)))
        bad = [m for m in mdef["mask"] if not 0 <= m < n_anchors]
        if bad:
            raise ConfigError(
                f"{_where(source, mdef, 'mask')}: [yolo] (layer {i}) mask index {bad[0]} "
                f"is past its anchors; "
                f"expected indices 0..{n_anchors - 1} ({n_anchors} anchor pairs)"
            )
        _check_yolo_values(mdef, i, source)
        mdef.setdefault("classes", 80)
        pred = layers[i - 1] if i > 0 else None
        if pred is None or pred["type"] != "convolutional":
            raise ConfigError(
                f"{source}:{mdef['_line']}: [yolo] (layer {i}) must follow a [convolutional] predictor"
            )
        need = (5 + mdef["classes"]) * len(mdef["mask"])
        if pred.get("filters") != need:
            raise ConfigError(
                f"{_where(source, pred, 'filters')}: [convolutional] (layer {i - 1}) "
                f"feeding [yolo] (layer {i}) "
                f"has filters={pred.get('filters')}; expected (5+classes)*len(mask) = "
                f"(5+{mdef['classes']})*{len(mdef['mask'])} = {need}"
            )


# Allowed (lo, hi) per integer key, inclusive. Darknet itself accepts more, but values outside these
# either crash (0, negatives), ask for absurd memory (filters=2**31), or make no sense for a detector.
_INT_RANGES: dict[str, dict[str, tuple[int, int]]] = {
    "net": {"channels": (3, 3)},
    "convolutional": {
        "filters": (1, 65536), "size": (1, 63), "stride": (1, 32), "pad": (0, 1), "padding": (0, 1),
        "groups": (1, 65536), "batch_normalize": (0, 1), "dilation": (1, 1),
    },
    "maxpool": {"size": (1, 63), "stride": (1, 32)},
    "upsample": {"stride": (1, 32)},
    "route": {"groups": (1, 65536), "group_id": (0, 65535)},
    "yolo": {"classes": (1, 100000), "num": (1, 1000)},
}
_RANGE_FIX = {  # what to do, where the range alone does not say it
    ("net", "channels"): "the model reads RGB images; set channels=3",
    ("convolutional", "dilation"): "dilated convolutions are not supported; remove dilation=",
    ("convolutional", "pad"): "pad=1 pads by size//2, pad=0 not at all",
    ("convolutional", "padding"): "padding=1 pads by size//2, padding=0 not at all",
}


def _bad_value(source: str, mdef: dict[str, Any], i: int, key: str, problem: str, fix: str) -> ConfigError:
    """`path:line: [section] (layer N) key=value: problem; fix`, at the key's own line."""
    value = mdef.get(key, "")
    shown = ",".join(str(v) for v in value) if isinstance(value, list) else value
    return ConfigError(f"{_where(source, mdef, key)}: [{mdef['type']}]{_layer_tag(i)} {key}={shown}: "
                       f"{problem}; {fix}")


def _check_ranges(sections: list[dict[str, Any]], source: str) -> None:
    """Every integer key within `_INT_RANGES`, checked before anything is sized from it."""
    for index, mdef in enumerate(sections):
        for key, (lo, hi) in _INT_RANGES.get(mdef["type"], {}).items():
            value = mdef.get(key)
            if value is None or lo <= value <= hi:
                continue
            allowed = f"must be {lo}" if lo == hi else f"must be from {lo} to {hi}"
            fix = _RANGE_FIX.get((mdef["type"], key), f"set {key} within that range")
            raise _bad_value(source, mdef, index - 1, key, allowed, fix)


def _check_options(layers: list[dict[str, Any]], source: str) -> None:
    """Rules between keys of one section (groups, group_id, maxpool padding, shortcut activation)."""
    for i, mdef in enumerate(layers):
        kind = mdef["type"]
        if kind == "convolutional" and mdef["filters"] % mdef.get("groups", 1):
            raise _bad_value(source, mdef, i, "groups", f"does not divide filters={mdef['filters']}",
                             "use a divisor of filters (usually 1)")
        if kind == "route" and mdef.get("group_id", 0) >= mdef.get("groups", 1):
            raise _bad_value(source, mdef, i, "group_id", f"must be below groups={mdef.get('groups', 1)}",
                             f"pick a group from 0 to {mdef.get('groups', 1) - 1}")
        if kind == "maxpool" and "padding" in mdef and mdef["padding"] != mdef.get("size", 2) - 1:
            raise _bad_value(source, mdef, i, "padding", "only Darknet's default (size-1) is supported",
                             "remove padding=")
        if kind == "shortcut" and mdef.get("activation", "linear") != "linear":
            raise _bad_value(source, mdef, i, "activation", "a [shortcut] here is a plain sum",
                             "use activation=linear")


def _check_yolo_values(mdef: dict[str, Any], i: int, source: str) -> None:
    """Anchors positive, mask indices distinct, scale_x_y positive: each would train silently wrong."""
    if any(a <= 0 for a in mdef.get("anchors", [])):
        raise _bad_value(source, mdef, i, "anchors", "every anchor width and height must be > 0",
                         "anchors are w,h pairs in input pixels, e.g. 10,14, 23,27")
    mask = mdef.get("mask", [])
    if len(set(mask)) != len(mask) or ("mask" in mdef and not mask):
        raise _bad_value(source, mdef, i, "mask", "mask indices must be distinct and not empty",
                         "list each anchor index once, e.g. mask=0,1,2")
    if mdef.get("scale_x_y", 1.0) <= 0:
        raise _bad_value(source, mdef, i, "scale_x_y", "must be > 0", "use 1.0 (YOLOv3) or e.g. 1.05-1.2")


def _check_layers(layers: list[dict[str, Any]], source: str) -> None:
    for i, mdef in enumerate(layers):
        if mdef["type"] == "net":
            raise ConfigError(f"{source}:{mdef['_line']}: [net] may appear only once, as the first section")
        if mdef["type"] == "convolutional":
            if "filters" not in mdef:
                raise ConfigError(f"{source}:{mdef['_line']}: [convolutional] (layer {i}) needs filters=")
            act = mdef.get("activation", "logistic")
            if act not in ACTIVATIONS:
                raise ConfigError(
                    f"{_where(source, mdef, 'activation')}: [convolutional] (layer {i}) activation={act!r} "
                    f"is not supported; expected one of {', '.join(ACTIVATIONS)}"
                )


def parse_model_cfg_text(text: str, source: str = "<cfg>") -> list[dict[str, Any]]:
    """Parse Darknet cfg text into `[{"type": "net", ...}, layer0, layer1, ...]`, validated.

    Each dict has `type`, `_line` (1-based line of its header), `_key_lines` and its typed keys;
    route/shortcut layers also get `_from`, the absolute indices of the layers they read.
    """
    sections = _parse_lines(text, source)
    if not sections or sections[0]["type"] != "net":
        line = sections[0]["_line"] if sections else 1
        raise ConfigError(f"{source}:{line}: a Darknet cfg must start with a [net] section")
    layers = sections[1:]
    _check_ranges(sections, source)
    _check_layers(layers, source)
    _check_options(layers, source)
    _check_links(layers, source)
    _check_yolo(layers, source)
    return sections


def parse_model_cfg(path: str | Path) -> list[dict[str, Any]]:
    """Read and parse a Darknet `.cfg` file (see `parse_model_cfg_text`)."""
    return parse_model_cfg_text(read_cfg_text(path), str(path))


def read_cfg_text(path: str | Path) -> str:
    """The text of a `.cfg` file, which must exist and be UTF-8 (a leading BOM is dropped)."""
    path = locate(path)
    if not path.is_file():
        raise ConfigError(f"{path}:0: cfg file not found; pass an existing .cfg such as cfg/yolov3-spp.cfg")
    return read_utf8(path)
