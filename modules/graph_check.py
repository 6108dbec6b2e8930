"""Shape dry-run of a parsed cfg: every layer's (channels, size) by arithmetic, before any module exists.

The contract of `DarkNet` is: a cfg either builds a model that runs forward at every multiple of
its largest `[yolo]` stride S, or raises `ConfigError` at the line of the layer that breaks it.
The parser checks each value alone; this checks how the layers fit together.

Why one input size is enough: at input S every layer must come out at exactly S / (its total
stride), a whole number >= 1. Then at input k*S every layer is k times that (a padded odd conv
or a maxpool maps h to ceil(h/stride), exact when stride divides h; upsample multiplies), so
sizes only grow and every route and shortcut joins equal maps at all multiples. A layer that
loses cells (pad=0, an even conv size) or needs a larger multiple than S (extra downsampling)
breaks this at S itself, and is reported at its own line. No tensor is allocated, so a cfg
asking for 10^10 parameters fails here instead of in the allocator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from build_utils.errors import ConfigError

MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32 weights; yolov3-spp has 63 million
_SHOW_INPUT = 416  # sizes in join messages are shown at the multiple of S nearest this


@dataclass(frozen=True)
class _Map:
    """One layer's output at input S: channels, side (square input, so height == width), total stride."""

    c: int
    side: int
    stride: int


def _err(source: str, mdef: dict[str, Any], i: int, text: str) -> ConfigError:
    return ConfigError(f"{source}:{mdef['_line']}: [{mdef['type']}] (layer {i}) {text}")


def _strides(layers: list[dict[str, Any]], source: str) -> list[int]:
    """Total stride per layer, as `create_modules` counts it; an upsample must not go past the input."""
    strides: list[int] = []
    stride = 1
    for i, mdef in enumerate(layers):
        kind = mdef["type"]
        if kind in ("convolutional", "maxpool"):
            stride *= mdef.get("stride", 1 if kind == "convolutional" else 2)
        elif kind == "upsample":
            up = mdef.get("stride", 2)
            if stride % up:
                raise _err(source, mdef, i, f"stride={up}: would make a map larger than the input (the map "
                                            f"it upsamples has total stride {stride}); upsample only maps "
                                            f"downsampled at least {up}x, or check the layers feeding it")
            stride //= up
        elif kind == "route":
            stride = strides[mdef["_from"][0]]
        strides.append(stride)
    return strides


def _conv(mdef: dict[str, Any], x: _Map, stride: int) -> tuple[_Map, int]:
    """Output map and parameter count (weights, bias or batch-norm affine) of a `[convolutional]`."""
    size, s, groups = mdef.get("size", 1), mdef.get("stride", 1), mdef.get("groups", 1)
    pad = (size - 1) // 2 if (mdef.get("pad", 0) or mdef.get("padding", 0)) else 0
    side = (x.side + 2 * pad - size) // s + 1
    bias_or_bn = mdef["filters"] * (2 if mdef.get("batch_normalize") else 1)
    params = x.c // groups * size * size * mdef["filters"] + bias_or_bn
    return _Map(mdef["filters"], side, stride), params


def _route(mdef: dict[str, Any], i: int, maps: list[_Map], source: str, show: int) -> _Map:
    """Concatenate equal-sized maps; with `groups`, each input's channels must split evenly."""
    parts = [(j, maps[j]) for j in mdef["_from"]]
    j0, first = parts[0]
    for j, m in parts[1:]:
        if m.side != first.side:
            raise _err(source, mdef, i, f"joins layers {j0} ({_shape(first, show)}) and {j} "
                                        f"({_shape(m, show)}) at input {show}x{show}; routed layers must "
                                        f"have the same height and width: route layers of equal stride, "
                                        f"or resize one with [upsample]/stride")
    groups = mdef.get("groups", 1)
    for j, m in parts:
        if m.c % groups:
            raise _err(source, mdef, i, f"groups={groups} does not divide the {m.c} channels of layer {j}; "
                                        f"use a divisor of {m.c}")
    return _Map(sum(m.c for _, m in parts) // groups, first.side, first.stride)


def _shortcut(mdef: dict[str, Any], i: int, x: _Map, maps: list[_Map], source: str, show: int) -> _Map:
    for j in mdef["_from"]:
        if (maps[j].c, maps[j].side) != (x.c, x.side):
            raise _err(source, mdef, i, f"adds layer {j} ({_shape(maps[j], show)}) to layer {i - 1} "
                                        f"({_shape(x, show)}) at input {show}x{show}; shortcut inputs must "
                                        f"have equal channels and size: point from= at a layer of the "
                                        f"same shape")
    return x


def _shape(m: _Map, show: int) -> str:
    """'CxHxW' at input `show` (a multiple of S, so every consistent map scales exactly)."""
    side = show // m.stride
    return f"{m.c}x{side}x{side}"


def _check_size(mdef: dict[str, Any], i: int, out: _Map, n: int, source: str) -> None:
    """At input n (= S) the layer must be n/stride cells wide: no cells lost, no fractional stride."""
    want = n / out.stride
    if out.side == want and out.side >= 1:
        return
    if n % out.stride:
        why = (f"its total stride is {out.stride} but inputs need only be multiples of {n} (the largest "
               f"[yolo] stride), so at input {n}x{n} it would be {want:g} cells wide; remove the extra "
               f"downsampling or add a [yolo] head at stride {out.stride}")
    else:
        why = (f"turns its input into {max(out.side, 0)}x{max(out.side, 0)} cells at input {n}x{n} instead "
               f"of {int(want)}x{int(want)}; use an odd size with pad=1 so only stride changes the size")
    keys = " ".join(f"{k}={mdef[k]}" for k in ("size", "stride", "pad") if k in mdef)
    raise _err(source, mdef, i, f"{keys}: {why}" if keys else why)


@dataclass(frozen=True)
class GraphShape:
    """What the dry-run found: each layer's output at input `base` (the largest stride), and the
    parameter count; at input k*base every side is k times as large."""

    maps: list[_Map]
    base: int
    parameters: int


def check_graph(module_defs: list[dict[str, Any]], net_info: dict[str, Any], source: str) -> GraphShape:
    """Raise `ConfigError` at the first layer that would fail forward at some multiple of the max stride.

    `module_defs` are the parsed layers (with `_line` and route/shortcut `_from`, as
    `parse_model_cfg_text` returns them after `[net]`). Checks: sizes stay whole and >= 1, route and
    shortcut inputs join, conv and route groups divide their channels, and the parameter count
    stays under `MAX_PARAMETERS`.
    """
    strides = _strides(module_defs, source)
    n = max(strides[i] for i, m in enumerate(module_defs) if m["type"] == "yolo")
    show = n * max(1, math.ceil(_SHOW_INPUT / n))
    maps: list[_Map] = []
    x = _Map(net_info.get("channels", 3), n, 1)
    total_params = 0
    for i, mdef in enumerate(module_defs):
        kind, stride = mdef["type"], strides[i]
        if kind == "convolutional":
            if x.c % mdef.get("groups", 1):
                raise _err(source, mdef, i, f"groups={mdef['groups']} does not divide its {x.c} input "
                                            f"channels; use a divisor of both {x.c} and filters")
            x, params = _conv(mdef, x, stride)
            total_params += params
            if total_params > MAX_PARAMETERS:
                raise _err(source, mdef, i, f"filters={mdef['filters']}: the model would have over "
                                            f"{total_params:.3g} parameters (this layer {params:.3g}); at "
                                            f"most {MAX_PARAMETERS:.0e} fit in memory; use fewer filters")
        elif kind == "maxpool":
            x = _Map(x.c, (x.side - 1) // mdef.get("stride", 2) + 1, stride)
        elif kind == "upsample":
            x = _Map(x.c, x.side * mdef.get("stride", 2), stride)
        elif kind == "route":
            x = _route(mdef, i, maps, source, show)
        elif kind == "shortcut":
            x = _shortcut(mdef, i, x, maps, source, show)
        _check_size(mdef, i, x, n, source)
        maps.append(x)
    return GraphShape(maps, n, total_params)
