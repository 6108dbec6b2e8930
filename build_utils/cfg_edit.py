"""Rewrite a Darknet cfg for another class count (and anchors) without touching anything else.

Classic cfg generators edited hard-coded line numbers and broke on any cfg but the one they were
written for. This one parses the cfg to find each `[yolo]` and the conv feeding it, then edits
only those values in place, keeping every other line, comment and spacing byte for byte.
"""

from __future__ import annotations

import re
from typing import Any

from build_utils.errors import ConfigError
from build_utils.parse_config import parse_model_cfg_text

_VALUE_RE = r"^(\s*{key}\s*=\s*)([^#;]*?)(\s*(?:[#;].*)?)$"


def _set_value(lines: list[str], lineno: int, key: str, value: str) -> None:
    """Replace the value on 1-based `lineno`, keeping the key's spacing and any trailing comment."""
    match = re.match(_VALUE_RE.format(key=re.escape(key)), lines[lineno - 1])
    if match is None:  # the parser found the key on this line, so this cannot happen for valid input
        raise ConfigError(f"<cfg>:{lineno}: cannot rewrite {key}= on this line")
    lines[lineno - 1] = match.group(1) + value + match.group(3)


def _format_anchors(anchors: list[tuple[int, int]]) -> str:
    return ",  ".join(f"{int(w)},{int(h)}" for w, h in anchors)


def partition_masks(strides: list[int], n_anchors: int) -> list[list[int]]:
    """Masks for `[yolo]` heads with these strides (cfg order): anchors sorted small to large are
    split evenly, the largest going to the largest stride (tiny: strides 32, 16 -> 3,4,5 / 0,1,2)."""
    if n_anchors % len(strides):
        raise ConfigError(f"{n_anchors} anchors cannot be split evenly over {len(strides)} [yolo] heads; "
                          f"use a multiple of {len(strides)}")
    per = n_anchors // len(strides)
    rank = sorted(range(len(strides)), key=lambda i: strides[i])  # smallest stride first
    masks: list[list[int]] = [[] for _ in strides]
    for r, head in enumerate(rank):
        masks[head] = list(range(r * per, (r + 1) * per))
    return masks


def mask_problems(sections: list[dict], source: str = "<cfg>") -> list[str]:
    """`[yolo]` masks that skip anchors (never used) or share them (used by two heads), one line each.

    Not an error: the official yolov3-tiny cfg uses `1,2,3` + `3,4,5` and its weights were trained so.
    """
    yolo = [s for s in sections if s.get("type") == "yolo"]
    if not yolo:
        return []
    n = len(yolo[0].get("anchors", [])) // 2
    used = [m for s in yolo for m in s.get("mask", range(n))]
    out = []
    shared = sorted({m for m in used if used.count(m) > 1})
    skipped = sorted(set(range(n)) - set(used))
    if shared:
        out.append(f"{source}:{yolo[0]['_line']}: [yolo] masks share anchor(s) {shared} between heads")
    if skipped:
        out.append(f"{source}:{yolo[0]['_line']}: [yolo] masks never use anchor(s) {skipped}")
    return out


def rewrite_cfg_classes(text: str, classes: int, anchors: list[tuple[int, int]] | None = None,
                        source: str = "<cfg>", masks: list[list[int]] | None = None) -> str:
    """Return `text` with every `[yolo]` set to `classes` (and `anchors`/`num`, `masks` (one per
    `[yolo]`, cfg order) when given) and the `filters` of the conv feeding it set to
    `(5+classes)*len(mask)`; the result is re-parsed."""
    if classes < 1:
        raise ConfigError(f"{source}: classes={classes}; expected at least 1")
    sections = parse_model_cfg_text(text, source)
    layers = sections[1:]
    lines = text.splitlines(keepends=False)
    inserts: list[tuple[int, str]] = []  # (after 1-based line, new line) for keys a section lacks
    heads = [i for i, m in enumerate(layers) if m["type"] == "yolo"]
    if masks is not None and len(masks) != len(heads):
        raise ConfigError(f"{source}: {len(masks)} masks for {len(heads)} [yolo] sections")
    for i, mdef in enumerate(layers):
        if mdef["type"] != "yolo":
            continue
        keys = mdef["_key_lines"]
        updates = {"classes": str(classes)}
        if anchors is not None:
            updates.update(anchors=_format_anchors(anchors), num=str(len(anchors)))
        if masks is not None:
            mdef["mask"] = masks[heads.index(i)]
            updates["mask"] = ",".join(str(m) for m in mdef["mask"])
        for key, value in updates.items():
            if key in keys:
                _set_value(lines, keys[key], key, value)
            else:
                inserts.append((mdef["_line"], f"{key}={value}"))
        pred = layers[i - 1]
        _set_value(lines, pred["_key_lines"]["filters"], "filters", str((5 + classes) * len(mdef["mask"])))
    for after, new_line in sorted(inserts, reverse=True):
        lines.insert(after, new_line)
    out = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    parse_model_cfg_text(out, source)  # e.g. a mask past the new anchors is reported here
    return out


def _format_value(value: Any) -> str:
    """A parsed value back as cfg text: lists comma-joined, floats in their shortest exact form."""
    if isinstance(value, list):
        return ",".join(_format_value(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def format_cfg(sections: list[dict[str, Any]]) -> str:
    """Plain Darknet cfg text for parsed `sections` ([net], layer0, ...), keys in their file order.

    The writer behind pruned cfgs: parse, change values (e.g. `filters`), write. Keys keep the
    order they had in the file (`_key_lines`); keys added without a line go last. Comments are
    not kept. `parse_model_cfg_text(format_cfg(s))` gives back the same typed values.
    """
    out: list[str] = []
    for section in sections:
        lines = section.get("_key_lines", {})
        keys = [k for k in section if not k.startswith("_") and k != "type"]
        keys.sort(key=lambda k: lines.get(k, 1 << 30))
        if out:
            out.append("")
        out.append(f"[{section['type']}]")
        out.extend(f"{key}={_format_value(section[key])}" for key in keys)
    return "\n".join(out) + "\n"
