"""Small layers a Darknet cfg needs that PyTorch does not ship in Darknet's exact form.

Route and shortcut read earlier layers' outputs, so their forward takes the list of cached
outputs as a second argument; `DarkNet.forward` passes it.
"""

from __future__ import annotations

import torch
from torch import nn


def make_activation(name: str) -> nn.Module:
    """Darknet activation by cfg name; leaky uses Darknet's slope 0.1 (PyTorch's default is 0.01)."""
    if name == "leaky":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "linear":
        return nn.Identity()
    if name == "mish":
        return nn.Mish(inplace=True)
    if name == "swish":
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "logistic":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}")  # the parser rejects these with a ConfigError first


def _repeat_edges(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """(bs, c, h, w) -> (bs, c, h + before + after, w + before + after), edges repeated outwards."""
    for dim in (-2, -1):
        parts = [x]
        if before:
            parts = [x.narrow(dim, 0, 1)] * before + parts
        if after:
            parts += [x.narrow(dim, x.shape[dim] - 1, 1)] * after
        x = torch.cat(parts, dim=dim)
    return x


class DarknetMaxPool(nn.Module):
    """Darknet maxpool: total padding `size-1`, `(size-1)//2` on the left/top, the rest right/bottom.

    Cells outside the image never win the max. PyTorch's own padding is symmetric, so the
    asymmetric case (size 2, stride 1 in yolov3-tiny) first repeats the edge rows/columns, which for a
    max is the same as padding with -inf (the edge cell is in every window that sees the pad). The
    repeat is a concatenation, not `F.pad(mode="replicate")`: the latter's backward breaks
    `torch.compile` on channels_last tensors, and a -inf pad would wreck int8 calibration ranges.

    The pad is skipped when no window reads it (size 2, stride 2 on even sizes). An export trace
    freezes that decision at the traced size; it is the same for every input that is a multiple
    of 32 (yolov3-tiny's stride-2 pools always see even sizes, its stride-1 pool always pads), so
    dynamic ONNX and TorchScript graphs stay exact at other sizes (tests/test_backends.py).

    Without autograd (predict, validation, evaluation), a 2x2 stride-2 pool on even sizes is the
    elementwise max of its four strided quarters: the same values, 2-3x faster than `max_pool2d` on
    this suite's CPUs, which also computes argmax indices nobody reads. Training keeps `max_pool2d`
    (its backward sends a tie's gradient to the first cell, as Darknet does), and so do export traces,
    so the ONNX graph holds a MaxPool node.
    """

    def __init__(self, size: int, stride: int) -> None:
        super().__init__()
        self.size, self.stride = size, stride
        self.left = (size - 1) // 2
        self.right = size - 1 - self.left
        symmetric = self.left == self.right
        self.pool = nn.MaxPool2d(size, stride, padding=self.left if symmetric else 0)
        self.symmetric = symmetric

    def _pad_reaches_a_window(self, h: int, w: int) -> bool:
        """False when no window would touch the right/bottom pad (e.g. size 2, stride 2 on even sizes)."""
        if self.left:
            return True
        size, stride = self.size, self.stride
        return any((d + self.right - size) // stride != (d - size) // stride for d in (h, w))

    def _quarters_apply(self, x: torch.Tensor) -> bool:
        """The strided-max fast path: 2x2 stride 2, even sizes, no autograd, not inside an export trace."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.jit.is_scripting() \
                or torch.onnx.is_in_onnx_export():  # first: a trace must not see the shape test below
            return False
        return self.size == 2 and self.stride == 2 and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (bs, c, h, w) -> (bs, c, h', w')
        if self._quarters_apply(x):
            top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])  # (bs, c, h/2, w/2)
            return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))
        if not self.symmetric and self._pad_reaches_a_window(int(x.shape[-2]), int(x.shape[-1])):
            x = _repeat_edges(x, self.left, self.right)
        return self.pool(x)


class Route(nn.Module):
    """Concatenate earlier outputs on channels; with `groups`, keep slice `group_id` of each (yolov4-tiny)."""

    def __init__(self, layers: list[int], groups: int = 1, group_id: int = 0) -> None:
        super().__init__()
        self.layers, self.groups, self.group_id = layers, groups, group_id

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        parts = [outputs[i] for i in self.layers]
        if self.groups > 1:
            parts = [p.chunk(self.groups, dim=1)[self.group_id] for p in parts]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class Shortcut(nn.Module):
    """Residual sum of the previous output and earlier layer(s) `from` (linear activation)."""

    def __init__(self, layers: list[int]) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        for i in self.layers:
            x = x + outputs[i]
        return x
