"""Carry a source model's predictor rows over to a model of other classes, matched by class name.

Fine-tuning COCO weights to three of COCO's classes used to re-initialise the predictor convs, so a
short run started from zero even though the source already detects those classes. Here each new
class whose name the source knows takes the source's class row, and every anchor keeps its box and
objectness rows; classes the source does not know keep the model's fresh initialisation (the bias
prior of `DarkNet._init_predictor_biases`).

A predictor conv (the conv in front of each [yolo] layer) has `na * (5 + nc)` output channels laid
out per anchor as `[x, y, w, h, obj, cls_0 .. cls_{nc-1}]`; weight (out, in, k, k) and bias (out,)
are remapped along `out`. The matching and row arithmetic are pure functions of names and tensors;
`transfer_classes` applies them to a model's state and logs the one summary line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from build_utils.data_cfg import load_class_names
from build_utils.errors import UserError, WeightsError
from modules.model import DarkNet
from modules.model_fit import COCO_NAMES

logger = logging.getLogger(__name__)

BOX_OBJ = 5  # x, y, w, h, objectness: the rows before the class logits in each anchor's block
COCO_CLASSES = 80  # Darknet weights of this many classes are COCO's, named by data/coco.names


def normalise_class_name(name: str) -> str:
    """The key names match by: lower case, no spaces, '_' or '-' ('Dining_Table' = 'dining table')."""
    return "".join(ch for ch in name.lower() if ch not in " _-")


def match_class_names(target: Sequence[str], source: Sequence[str]) -> list[int | None]:
    """For each target class, the index of the source class of the same normalised name, else None.

    A name the source lists twice matches its first occurrence.
    """
    index: dict[str, int] = {}
    for i, name in enumerate(source):
        index.setdefault(normalise_class_name(name), i)
    return [index.get(normalise_class_name(name)) for name in target]


def class_indices(requested: Sequence[str], names: Sequence[str], source: str) -> tuple[int, ...]:
    """Indices of `requested` classes, each given as an index or a name (matched like transfer names).

    Raises UserError naming `source` (the .data) for an unknown name or an index out of range.
    """
    source_of = match_class_names(requested, names)
    found = []
    for given, index in zip(requested, source_of):
        if index is None and given.isdigit() and int(given) < len(names):
            index = int(given)
        if index is None:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise UserError(f"--classes {given}: not a class of {source} ({len(names)} classes: {shown}); "
                            "pass names or indices")
        found.append(index)
    return tuple(sorted(set(found)))


def predictor_rows(source_of: Sequence[int | None], na: int, source_nc: int) -> tuple[list[int], list[int]]:
    """(target rows, source rows) to copy in a predictor conv of `na` anchors.

    Per anchor: the 5 box/objectness rows always, and class j's row from source class
    `source_of[j]` when that is not None. Target rows of unmatched classes are absent.
    """
    nc, dst, src = len(source_of), [], []
    for a in range(na):
        dst_base, src_base = a * (BOX_OBJ + nc), a * (BOX_OBJ + source_nc)
        dst += [dst_base + r for r in range(BOX_OBJ)]
        src += [src_base + r for r in range(BOX_OBJ)]
        for j, s in enumerate(source_of):
            if s is not None:
                dst.append(dst_base + BOX_OBJ + j)
                src.append(src_base + BOX_OBJ + s)
    return dst, src


def remap_rows(fresh: torch.Tensor, source: torch.Tensor, dst: list[int], src: list[int]) -> torch.Tensor:
    """`fresh` (out, ...) with rows `dst` replaced by `source` rows `src`; neither input is modified."""
    out = fresh.detach().clone()
    out[dst] = source.detach().to(out.dtype)[src]
    return out


@dataclass(frozen=True)
class Predictor:
    """One predictor conv: its state-dict prefix (`module_list.{i}.conv`) and anchor count."""

    prefix: str
    na: int


def remap_predictor_state(fresh: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor],
                          predictors: Sequence[Predictor], source_of: Sequence[int | None], source_nc: int,
                          source_label: str) -> dict[str, torch.Tensor]:
    """A copy of `source` whose predictor weights/biases have the target's shape and class order.

    `fresh`: the target model's freshly initialised state (rows of unmatched classes come from it).
    The predictors must be present in `source` with the target's shape but for the row count
    (`same_predictor_layout`). Raises WeightsError when a predictor does not have
    `na * (5 + source_nc)` rows: the source names do not belong to these weights.
    """
    state = dict(source)
    for p in predictors:
        dst, src = predictor_rows(source_of, p.na, source_nc)
        for key in _predictor_keys(p, fresh):
            have, want = source[key], fresh[key]
            if have.shape[0] != p.na * (BOX_OBJ + source_nc):
                raise WeightsError(
                    f"{source_label}: {key} has {have.shape[0]} rows, not {p.na} anchors x (5 + {source_nc} "
                    "named classes); pass --source-names with the names the weights were trained with, or "
                    "--no-transfer")
            state[key] = remap_rows(want, have, dst, src)
    return state


def _predictor_keys(p: Predictor, fresh: Mapping[str, torch.Tensor]) -> list[str]:
    return [f"{p.prefix}.{suffix}" for suffix in ("weight", "bias") if f"{p.prefix}.{suffix}" in fresh]


def same_predictor_layout(fresh: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor],
                          predictors: Sequence[Predictor]) -> bool:
    """True when every predictor tensor is in `source` and differs from `fresh` in row count at most."""
    keys = [k for p in predictors for k in _predictor_keys(p, fresh)]
    return all(k in source and source[k].shape[1:] == fresh[k].shape[1:] for k in keys)


def darknet_source_names(nc: int, names_file: str | Path | None) -> list[str] | None:
    """Class names of Darknet `.weights` with `nc` classes: `names_file` (checked against `nc`),
    else data/coco.names when `nc` is 80, else None (unknown: no transfer)."""
    if names_file is None:
        return load_class_names(COCO_NAMES) if nc == COCO_CLASSES else None
    names = load_class_names(names_file)
    if len(names) != nc:
        raise WeightsError(f"--source-names {names_file}: lists {len(names)} names but the weights predict "
                           f"{nc} classes; pass the names file the weights were trained with")
    return names


def transfer_summary(target: Sequence[str], source_of: Sequence[int | None], source_label: str) -> str:
    """The one log line: 'transferred N of M classes from SOURCE: names...' (+ those not found)."""
    kept = [n for n, s in zip(target, source_of) if s is not None]
    new = [n for n, s in zip(target, source_of) if s is None]
    line = f"transferred {len(kept)} of {len(target)} classes from {source_label}: {', '.join(kept) or '-'}"
    if new:
        line += f"; not in the source, starting from the bias prior: {', '.join(new)}"
    return line


def model_predictors(model: DarkNet) -> list[Predictor]:
    """The predictor conv in front of each [yolo] layer, with that layer's anchor count."""
    return [Predictor(f"module_list.{i - 1}.conv", model.module_list[i].na) for i in model.yolo_layers]


def transfer_classes(model: DarkNet, source_state: Mapping[str, torch.Tensor], source_names: Sequence[str],
                     target_names: Sequence[str], source_label: str) -> dict[str, torch.Tensor]:
    """`source_state` made to fit `model` (classes `target_names`) by name; logs the summary line.

    Matched classes take their source rows, unmatched ones keep `model`'s fresh rows. With no name in
    common the predictor tensors are left out, so loading re-initialises those convs as before, unless
    the class count is the same: then the rows load by position, as they always did.
    """
    if len(target_names) != model.nc:
        raise WeightsError(f"{source_label}: {len(target_names)} class names for a model of {model.nc} "
                           "classes; the cfg and the .data disagree")
    fresh, predictors = model.state_dict(), model_predictors(model)
    if not same_predictor_layout(fresh, source_state, predictors):
        logger.info("%s: its predictor convs differ from %s's beyond the class count (another cfg): no "
                    "classes transferred", source_label, model.cfg_name)
        return dict(source_state)
    source_of = match_class_names(target_names, source_names)
    logger.info("%s", transfer_summary(target_names, source_of, source_label))
    if all(s is None for s in source_of):
        if len(source_names) == model.nc:  # names unrelated (renamed, indices): rows load by position
            logger.info("no class name in common with %s, but the same %d classes: predictor rows loaded by "
                        "position, as before name matching existed", source_label, model.nc)
            return dict(source_state)
        dropped = {k for p in predictors for k in _predictor_keys(p, fresh)}
        logger.info("no class name in common with %s: predictor convs re-initialised", source_label)
        return {k: v for k, v in source_state.items() if k not in dropped}
    return remap_predictor_state(fresh, source_state, predictors, source_of, len(source_names), source_label)
