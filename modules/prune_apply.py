"""Apply a pruning decision (`modules/prune.py`): a slimmer Darknet cfg and the model's weights in it.

Weights: each conv keeps its surviving output channels and reads only the surviving channels of
its input. A removed channel of a batch-normalised conv is not simply dropped: its output is
replaced by the constant it has with a zero scale, act(beta), and that constant's contribution
is folded into the next conv: the kernel summed over its taps times the constant goes into the
conv's bias, or, when that conv has batch norm, is taken off its running mean. When only channels
whose scale is exactly 0 are removed the pruned model computes the same outputs wherever the next
conv's kernel lies inside the map (all of a 1x1 conv's outputs, the interior of a padded 3x3 one;
at the border the zero padding hides part of the constant). Constants travel through maxpool,
upsample and route unchanged and add up across a shortcut.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch

from build_utils.cfg_edit import format_cfg
from build_utils.errors import UserError
from build_utils.parse_config import parse_model_cfg_text
from modules.model import DarkNet, count_gflops
from modules.prune import (
    ChannelGraph,
    class_scores,
    kept_positions,
    layer_masks,
    percent_threshold,
    select_kept,
    trace_channels,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneSummary:
    """Size of a model before and after pruning (GFLOPs at `img_size`, 2 x MACs)."""

    img_size: int
    gflops_before: float
    gflops_after: float
    params_before: int
    params_after: int
    filters_before: dict[int, int]
    filters_after: dict[int, int]

    def lines(self) -> list[str]:
        """Human-readable: totals and the per-layer filter counts that changed."""
        out = [f"GFLOPs at {self.img_size}: {self.gflops_before:.3f} -> {self.gflops_after:.3f} "
               f"({100 * self.gflops_after / self.gflops_before:.1f}%)",
               f"parameters: {self.params_before:,} -> {self.params_after:,} "
               f"({100 * self.params_after / self.params_before:.1f}%)"]
        changed = [f"{i}:{self.filters_before[i]}->{n}" for i, n in self.filters_after.items()
                   if n != self.filters_before[i]]
        out.append("filters (layer:before->after): " + (", ".join(changed) or "none changed"))
        return out


def pruned_cfg_text(model: DarkNet, masks: dict[int, torch.Tensor], header: str = "") -> str:
    """The model's cfg with each conv's `filters` set to its kept count (plain Darknet text)."""
    sections = copy.deepcopy([model.net_info, *model.module_defs])
    for i, mask in masks.items():
        sections[i + 1]["filters"] = int(mask.sum())
    text = format_cfg(sections)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + text


def meta_gflops(cfg_text: str, img_size: int) -> float:
    """GFLOPs of a cfg without allocating weights (built on the meta device)."""
    with torch.device("meta"):
        model = DarkNet.from_cfg_text(cfg_text, "<pruned>")
    return count_gflops(model, img_size, img_size)


def _removed_constants(block: Any, keep: torch.Tensor) -> torch.Tensor:
    """(filters,) output of each removed channel with a zero scale, act(beta); 0 for kept ones."""
    beta = block.bn.bias.detach().clone().view(1, -1, 1, 1)  # (1, c, 1, 1); a copy: activations act in place
    value = block.act(beta) if hasattr(block, "act") else beta
    return torch.where(keep, torch.zeros(()), value.flatten())


def _slim_conv(old: Any, new: Any, in_keep: torch.Tensor, out_keep: torch.Tensor,
               in_const: torch.Tensor) -> None:
    """Copy the kept part of conv block `old` into `new`; fold the removed inputs' constants."""
    weight = old.conv.weight.detach()  # (out, in/groups, k, k)
    removed = torch.ones(weight.shape[1], dtype=torch.bool)
    if old.conv.groups == 1:
        removed[in_keep] = False
        delta = (weight[:, removed].sum(dim=(2, 3)) * in_const[removed]).sum(dim=1)  # (out,)
        weight = weight[:, in_keep]
    else:  # grouped convs keep all their inputs (see trace_channels)
        delta = torch.zeros(weight.shape[0])
    with torch.no_grad():
        new.conv.weight.copy_(weight[out_keep])
        if hasattr(old, "bn"):
            for name in ("weight", "bias", "running_var"):
                getattr(new.bn, name).copy_(getattr(old.bn, name)[out_keep])
            new.bn.running_mean.copy_((old.bn.running_mean - delta)[out_keep])
            new.bn.num_batches_tracked.copy_(old.bn.num_batches_tracked)
        else:
            new.conv.bias.copy_((old.conv.bias.detach() + delta)[out_keep])


def slim_model(model: DarkNet, graph: ChannelGraph, kept: set[int], header: str = "") -> DarkNet:
    """A new DarkNet with the kept channels only, built from the pruned cfg text; `model` is untouched."""
    masks = layer_masks(model, graph, kept)
    text = pruned_cfg_text(model, masks, header)
    parse_model_cfg_text(text, "<pruned>")  # the parser and graph check run again in DarkNet
    new = DarkNet.from_cfg_text(text, f"pruned-{model.cfg_name}")
    consts: list[torch.Tensor] = []  # per layer: (channels,) constant of removed channels, 0 elsewhere
    in_const = torch.zeros(int(model.net_info.get("channels", 3)))
    for i, mdef in enumerate(model.module_defs):
        prev = consts[i - 1] if i else in_const
        kind = mdef["type"]
        if kind == "convolutional":
            block = model.module_list[i]
            out_keep = masks[i]
            _slim_conv(block, new.module_list[i], kept_positions(graph, i - 1, kept), out_keep, prev)
            const = (_removed_constants(block, out_keep) if hasattr(block, "bn")
                     else torch.zeros(len(out_keep)))
        elif kind == "route":
            groups, gid = mdef.get("groups", 1), mdef.get("group_id", 0)
            const = torch.cat([consts[j].chunk(groups)[gid] for j in mdef["_from"]])
        elif kind == "shortcut":
            const = prev + sum(consts[j] for j in mdef["_from"])
        else:
            const = prev
        consts.append(const)
    for attr in ("train_img_size", "category_ids"):
        setattr(new, attr, getattr(model, attr, None))
    return new.eval()


def summarize(model: DarkNet, pruned: DarkNet, img_size: int) -> PruneSummary:
    """FLOPs, parameters and per-layer filters of both models."""
    def filters(m: DarkNet) -> dict[int, int]:
        return {i: d["filters"] for i, d in enumerate(m.module_defs) if d["type"] == "convolutional"}

    def params(m: DarkNet) -> int:
        return sum(p.numel() for p in m.parameters())

    before, after = count_gflops(model, img_size, img_size), count_gflops(pruned, img_size, img_size)
    return PruneSummary(img_size, before, after, params(model), params(pruned),
                        filters(model), filters(pruned))


def percent_for_flops(model: DarkNet, graph: ChannelGraph, scores: dict[int, float], fraction: float,
                      img_size: int, floor: float = 0.1, multiple: int = 8) -> float:
    """The smallest global percent whose pruned cfg has at most `fraction` of the FLOPs (bisection).

    Fewer classes kept never costs more FLOPs, so the FLOPs fall monotonically with the percent.
    """
    target = fraction * count_gflops(model, img_size, img_size)

    def gflops(percent: float) -> float:
        kept = select_kept(graph, scores, percent_threshold(scores, percent), floor, multiple)
        return meta_gflops(pruned_cfg_text(model, layer_masks(model, graph, kept)), img_size)

    if gflops(100.0) > target:
        raise UserError(f"--target-flops {fraction}: even pruning every layer down to its floor leaves "
                        f"{gflops(100.0):.3f} GFLOPs > {target:.3f}; lower --floor or raise --target-flops")
    lo, hi = 0.0, 100.0
    for _ in range(14):  # 100 / 2^14: well below one channel of yolov3-spp's ~10^4 classes
        mid = (lo + hi) / 2
        if gflops(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def prune_model(model: DarkNet, percent: float | None = None, target_flops: float | None = None,
                img_size: int = 416, floor: float = 0.1,
                multiple: int = 8) -> tuple[DarkNet, PruneSummary, float]:
    """Prune by global |gamma| threshold: `percent` of the prunable channel classes, or as few as
    bring the FLOPs to `target_flops` x the original's. Returns (pruned model, summary, percent used)."""
    graph = trace_channels(model)
    scores = class_scores(model, graph)
    if target_flops is not None:
        percent = percent_for_flops(model, graph, scores, target_flops, img_size, floor, multiple)
    if percent is None:
        raise UserError("prune: pass a percent or a target FLOPs fraction")
    threshold = percent_threshold(scores, percent)
    kept = select_kept(graph, scores, threshold, floor, multiple)
    header = (f"pruned from {model.cfg_name} by data/scripts/prune.py: {percent:.2f}% of the prunable "
              f"channel classes below |gamma| {threshold:.4g}, floor {floor}, multiples of {multiple}")
    pruned = slim_model(model, graph, kept, header)
    return pruned, summarize(model, pruned, img_size), percent
