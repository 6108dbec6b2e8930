"""Channel pruning by batch-norm scale (network slimming) on a Darknet graph: which channels may go.

Every output channel of a `[convolutional]` is a node. Layers that only move channels (maxpool,
upsample, route) pass their inputs' nodes on; a `[shortcut]` adds maps channel by channel, so its
inputs' nodes are joined into one class that is kept or removed as a whole (one mask for a whole
residual chain in yolov3/yolov3-spp). A route with `groups` takes one slice of each input, so the
same position in every slice is joined too: the kept channels then split into equal slices that
hold exactly the kept channels of the original slice. Channels that cannot go are fixed: those of
convs without batch norm (predictor convs, whose filters the `[yolo]` layer counts), of grouped
convs and the network input.

The global threshold removes the classes with the smallest scale (the largest |gamma| of their
members); within each unit (convs joined by classes) a floor keeps a share of the channels and
the kept count is rounded up to a multiple of 8 so the convolution kernels stay fast.
`modules/prune_apply.py` turns the decision into a slimmer cfg and state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from modules.model import DarkNet

INPUT = -1  # layer index of the network input's channels


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class ChannelGraph:
    """Who owns each channel: `origins[i][c]` is the node of layer i's output channel c.

    `nodes[n] = (conv layer or INPUT, channel)`; `classes` maps a class root to its nodes (in node
    order); `fixed` holds the roots of classes that must be kept.
    """

    origins: list[list[int]]
    nodes: list[tuple[int, int]]
    classes: dict[int, list[int]]
    fixed: set[int]
    root: list[int]  # node -> class root


def trace_channels(model: DarkNet) -> ChannelGraph:
    """Follow every channel through the cfg graph and join the ones that must share a mask."""
    uf, nodes, fixed_nodes = _UnionFind(), [], set()

    def new(layer: int, n: int) -> list[int]:
        ids = [uf.add() for _ in range(n)]
        nodes.extend((layer, c) for c in range(n))
        return ids

    inputs = new(INPUT, int(model.net_info.get("channels", 3)))
    fixed_nodes.update(inputs)
    origins: list[list[int]] = []
    for i, mdef in enumerate(model.module_defs):
        prev = origins[i - 1] if i else inputs
        kind = mdef["type"]
        if kind == "convolutional":
            out = new(i, mdef["filters"])
            if not mdef.get("batch_normalize", 0) or mdef.get("groups", 1) > 1:
                fixed_nodes.update(out)
            if mdef.get("groups", 1) > 1:
                fixed_nodes.update(prev)
        elif kind == "route":
            out = []
            groups, gid = mdef.get("groups", 1), mdef.get("group_id", 0)
            for j in mdef["_from"]:
                part, size = origins[j], len(origins[j]) // groups
                for c in range(size):
                    for k in range(1, groups):
                        uf.union(part[c], part[c + k * size])
                out.extend(part[gid * size:(gid + 1) * size])
        elif kind == "shortcut":
            for j in mdef["_from"]:
                for a, b in zip(prev, origins[j]):
                    uf.union(a, b)
            out = prev
        else:  # maxpool, upsample, yolo: same channels
            out = prev
        origins.append(out)
    root = [uf.find(n) for n in range(len(nodes))]
    classes: dict[int, list[int]] = {}
    for n, r in enumerate(root):
        classes.setdefault(r, []).append(n)
    return ChannelGraph(origins, nodes, classes, {root[n] for n in fixed_nodes}, root)


def class_scores(model: DarkNet, graph: ChannelGraph) -> dict[int, float]:
    """Largest |gamma| over each prunable class's channels (a shortcut class lives if any member matters)."""
    gammas = {i: block.bn.weight.detach().abs().float().cpu()
              for i, block in enumerate(model.module_list) if hasattr(block, "bn")}
    return {r: max(float(gammas[graph.nodes[n][0]][graph.nodes[n][1]]) for n in members)
            for r, members in graph.classes.items() if r not in graph.fixed}


def units(graph: ChannelGraph) -> list[list[int]]:
    """Class roots grouped by the set of convs they touch: the pieces whose kept counts are rounded."""
    by_layers: dict[tuple[int, ...], list[int]] = {}
    for r, members in graph.classes.items():
        key = tuple(sorted({graph.nodes[n][0] for n in members}))
        by_layers.setdefault(key, []).append(r)
    return list(by_layers.values())


def percent_threshold(scores: dict[int, float], percent: float) -> float:
    """The |gamma| below which `percent` % of the prunable classes lie (global over the network)."""
    if not scores or percent <= 0:
        return -math.inf
    ordered = sorted(scores.values())
    k = min(int(len(ordered) * percent / 100), len(ordered) - 1)
    return ordered[k] if percent < 100 else math.inf


def round_up(n: int, multiple: int, cap: int) -> int:
    """n rounded up to a multiple of `multiple`, at least one multiple, at most `cap`."""
    return min(max(math.ceil(n / multiple), 1) * multiple, cap)


def select_kept(graph: ChannelGraph, scores: dict[int, float], threshold: float, floor: float = 0.1,
                multiple: int = 8) -> set[int]:
    """Roots of the classes that stay: fixed ones, those scoring >= threshold, plus floor and rounding.

    Per unit: kept = max(fixed + above threshold, ceil(floor x classes)) rounded up to `multiple`
    (capped at the unit's size); the extra ones are the next best by score.
    """
    kept: set[int] = set()
    for unit in units(graph):
        fixed = [r for r in unit if r in graph.fixed]
        free = sorted((r for r in unit if r not in graph.fixed), key=lambda r: -scores[r])
        if not free:
            kept.update(fixed)
            continue
        above = sum(1 for r in free if scores[r] >= threshold)
        want = max(len(fixed) + above, math.ceil(floor * len(unit)))
        want = round_up(want, multiple, len(unit))
        kept.update(fixed)
        kept.update(free[:max(want - len(fixed), 0)])
    return kept


def layer_masks(model: DarkNet, graph: ChannelGraph, kept: set[int]) -> dict[int, torch.Tensor]:
    """Per conv layer: bool (filters,) mask of the output channels that stay."""
    masks = {i: torch.zeros(m["filters"], dtype=torch.bool)
             for i, m in enumerate(model.module_defs) if m["type"] == "convolutional"}
    for n, (layer, c) in enumerate(graph.nodes):
        if layer != INPUT and graph.root[n] in kept:
            masks[layer][c] = True
    return masks


def kept_positions(graph: ChannelGraph, layer: int, kept: set[int]) -> torch.Tensor:
    """Indices of layer `layer`'s output channels (INPUT: the image's) that survive, in order."""
    origin = graph.origins[layer] if layer >= 0 else [n for n, (lay, _) in enumerate(graph.nodes)
                                                      if lay == INPUT]
    return torch.tensor([p for p, n in enumerate(origin) if graph.root[n] in kept], dtype=torch.long)


def seed_bn_scales(model: DarkNet, seed: int = 0) -> DarkNet:
    """Seeded random batch-norm scales and statistics, in place; returns the model in eval mode.

    A freshly built cfg has every scale at 1.0, so a threshold would tie; this gives pruning
    something to rank when only the pruned architecture matters (timing, export checks, tests).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.module_list:
            if hasattr(block, "bn"):
                n = block.bn.num_features
                block.bn.weight.copy_(torch.rand(n, generator=gen) + 0.05)  # (n,) in [0.05, 1.05)
                block.bn.bias.copy_(torch.randn(n, generator=gen) * 0.5)
                block.bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                block.bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model.eval()
