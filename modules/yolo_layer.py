"""`YOLOLayer`: reshapes a predictor conv's output and, in eval mode, decodes it to pixels."""

from __future__ import annotations

import torch
from torch import nn


class YOLOLayer(nn.Module):
    """One Darknet `[yolo]` head.

    Training: returns the raw `(bs, na, ny, nx, 5+nc)` map the loss needs. Eval: also returns the
    decoded `(bs, na*ny*nx, 5+nc)` with `cx, cy, w, h` in input pixels and sigmoid objectness and
    class probabilities. Grids are cached per (ny, nx, device, dtype) on the instance, so any
    input that is a multiple of the stride works, square or not, without global state.
    """

    def __init__(self, anchors: torch.Tensor, nc: int, stride: int, scale_x_y: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("anchors", anchors.float().reshape(-1, 2), persistent=False)  # (na, 2) pixels
        self.na = int(self.anchors.shape[0])
        self.nc = nc
        self.no = nc + 5
        self.stride = int(stride)
        self.scale_x_y = float(scale_x_y)
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _grid(
        self, ny: int, nx: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell offsets (1, 1, ny, nx, 2) and anchor sizes (1, na, 1, 1, 2) in pixels, cached."""
        # inference-mode tensors cannot be saved for autograd later, so they get their own entry
        key = (ny, nx, device, dtype, torch.is_inference_mode_enabled())
        if key not in self._grids:
            ys, xs = torch.meshgrid(
                torch.arange(ny, device=device, dtype=dtype), torch.arange(nx, device=device, dtype=dtype),
                indexing="ij",
            )
            grid = torch.stack((xs, ys), dim=-1).view(1, 1, ny, nx, 2)
            anchor_wh = self.anchors.to(device=device, dtype=dtype).view(1, self.na, 1, 1, 2)
            self._grids[key] = (grid, anchor_wh)
        return self._grids[key]

    def _apply(self, *args, **kwargs):  # .to()/.half(): drop grids cached for the old device/dtype
        """Move like any module, but the anchors stay float32: the decode runs in float32 whatever the
        model's dtype, and bfloat16 would round Darknet's anchors (319 -> 320 px in yolov3-tiny)."""
        self._grids = {}
        anchors = self.anchors
        out = super()._apply(*args, **kwargs)
        self.anchors = anchors.to(device=self.anchors.device)  # (na, 2) float32 pixels
        return out

    def forward(self, p: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        bs, _, ny, nx = p.shape  # (bs, na*no, ny, nx)
        p = p.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()  # (bs, na, ny, nx, no)
        if self.training:
            return p
        # decode in float32 at least: exp() of float16 logits overflows and pixel centres lose precision
        q = p if p.dtype in (torch.float32, torch.float64) else p.float()
        grid, anchor_wh = self._grid(ny, nx, q.device, q.dtype)
        s = self.scale_x_y
        xy = (q[..., :2].sigmoid() * s - (s - 1) / 2 + grid) * self.stride  # (bs, na, ny, nx, 2) pixels
        wh = q[..., 2:4].exp() * anchor_wh  # (bs, na, ny, nx, 2) pixels
        rest = q[..., 4:].sigmoid()  # (bs, na, ny, nx, 1+nc)
        io = torch.cat((xy, wh, rest), dim=-1).view(bs, -1, self.no)  # (bs, na*ny*nx, no)
        return io, p

    def extra_repr(self) -> str:
        return f"na={self.na}, nc={self.nc}, stride={self.stride}, scale_x_y={self.scale_x_y}"
