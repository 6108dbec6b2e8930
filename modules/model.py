"""`DarkNet`: a PyTorch model built layer by layer from a Darknet `.cfg`.

`module_list[i]` is cfg layer `i`, so Darknet layer numbers (in route/shortcut, in `cutoff`, in
freezing) mean the same thing everywhere. Batch norm uses Darknet's epsilon (1e-6) so official
weights reproduce Darknet's outputs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from build_utils.errors import ConfigError
from build_utils.parse_config import parse_model_cfg_text, read_cfg_text
from modules.graph_check import check_graph
from modules.layers import DarknetMaxPool, Route, Shortcut, make_activation
from modules.yolo_layer import YOLOLayer

logger = logging.getLogger(__name__)

BN_EPS = 1e-6  # Darknet's normalize_cpu adds .000001 to the variance
BN_MOMENTUM = 0.03


def _conv_block(mdef: dict[str, Any], in_ch: int) -> nn.Sequential:
    """`[convolutional]` -> Sequential(conv, [bn], [act]); names match the Darknet weight order."""
    bn = bool(mdef.get("batch_normalize", 0))
    size, stride = mdef.get("size", 1), mdef.get("stride", 1)
    pad = (size - 1) // 2 if (mdef.get("pad", 0) or mdef.get("padding", 0)) else 0
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(in_ch, mdef["filters"], size, stride, pad,
                                       groups=mdef.get("groups", 1), bias=not bn))
    if bn:
        block.add_module("bn", nn.BatchNorm2d(mdef["filters"], eps=BN_EPS, momentum=BN_MOMENTUM))
    act = mdef.get("activation", "logistic")
    if act != "linear":
        block.add_module("act", make_activation(act))
    return block


def _yolo_layer(mdef: dict[str, Any], stride: int) -> YOLOLayer:
    anchors = torch.tensor(mdef["anchors"], dtype=torch.float32).view(-1, 2)[mdef["mask"]]  # (na, 2)
    return YOLOLayer(anchors, mdef["classes"], stride, mdef.get("scale_x_y", 1.0))


def create_modules(layers: list[dict[str, Any]], in_ch: int, source: str) -> tuple[nn.ModuleList, set[int]]:
    """Build one module per cfg layer; also returns the layers whose outputs later layers read."""
    module_list = nn.ModuleList()
    channels: list[int] = []  # output channels per layer
    strides: list[int] = []  # total downsampling per layer
    routs: set[int] = set()
    ch, stride = in_ch, 1
    for i, mdef in enumerate(layers):
        kind = mdef["type"]
        if kind == "convolutional":
            module = _conv_block(mdef, ch)
            ch, stride = mdef["filters"], stride * mdef.get("stride", 1)
        elif kind == "maxpool":
            module = DarknetMaxPool(mdef.get("size", 2), mdef.get("stride", 2))
            stride *= mdef.get("stride", 2)
        elif kind == "upsample":
            module = nn.Upsample(scale_factor=mdef.get("stride", 2), mode="nearest")
            stride //= mdef.get("stride", 2)
        elif kind == "route":
            groups = mdef.get("groups", 1)
            module = Route(mdef["_from"], groups, mdef.get("group_id", 0))
            ch = sum(channels[j] for j in mdef["_from"]) // groups
            stride = strides[mdef["_from"][0]]
            routs.update(mdef["_from"])
        elif kind == "shortcut":
            bad = [j for j in mdef["_from"] if channels[j] != ch]
            if bad:
                raise ConfigError(
                    f"{source}:{mdef['_line']}: [shortcut] (layer {i}) adds layer {bad[0]} with "
                    f"{channels[bad[0]]} channels to {ch} channels; shortcut inputs must have equal channels"
                )
            module = Shortcut(mdef["_from"])
            routs.update(mdef["_from"])
        elif kind == "yolo":
            module = _yolo_layer(mdef, stride)
        else:  # the parser only lets known sections through
            raise ConfigError(f"{source}:{mdef['_line']}: layer type [{kind}] cannot be built")
        module_list.append(module)
        channels.append(ch)
        strides.append(stride)
    return module_list, routs


class DarkNet(nn.Module):
    """A Darknet cfg as a PyTorch model; see docs/architecture.md for the forward contract."""

    def __init__(self, cfg: str | Path, verbose: bool = False, *, cfg_text: str | None = None) -> None:
        """Build from the cfg file `cfg`, or from `cfg_text` with `cfg` naming its source in errors.

        The text goes through the one cfg parser (`build_utils/parse_config.py`), which validates it
        and reports mistakes as `path:line`; this class only turns its typed section dicts into modules.
        """
        super().__init__()
        source = str(cfg)
        self.cfg_text = read_cfg_text(cfg) if cfg_text is None else cfg_text
        self.cfg_name = Path(source).name
        sections = parse_model_cfg_text(self.cfg_text, source)  # [net, layer0, layer1, ...]
        self.net_info = sections[0]
        self.module_defs = sections[1:]
        in_ch = self.net_info.get("channels", 3)
        check_graph(self.module_defs, self.net_info, source)
        self.module_list, self.routs = create_modules(self.module_defs, in_ch, source)
        self.yolo_layers = [i for i, m in enumerate(self.module_defs) if m["type"] == "yolo"]
        classes = {self.module_defs[i]["classes"] for i in self.yolo_layers}
        if len(classes) != 1:
            raise ConfigError(f"{source}:{self.module_defs[self.yolo_layers[0]]['_line']}: [yolo] sections "
                              f"disagree on classes ({sorted(classes)}); every head must use the same count")
        self.nc = classes.pop()
        self.max_stride = max(m.stride for m in self.yolo_modules())  # inputs must be multiples of it
        self._init_predictor_biases()
        if verbose:
            self.info()

    @classmethod
    def from_cfg_text(cls, text: str, source: str = "<cfg>") -> DarkNet:
        """Build from cfg text (e.g. the `cfg_text` a checkpoint carries)."""
        return cls(source, cfg_text=text)

    def yolo_modules(self) -> list[YOLOLayer]:
        return [self.module_list[i] for i in self.yolo_layers]

    def _init_predictor_biases(self) -> None:
        """Objectness -4.5 (~1% of cells hold an object), class log(0.6/(nc-0.99)): sane early losses."""
        for i in self.yolo_layers:
            yolo, conv = self.module_list[i], self.module_list[i - 1].conv
            if conv.bias is None:
                continue
            with torch.no_grad():
                bias = conv.bias.view(yolo.na, yolo.no)  # (na, 5+nc)
                bias[:, 4] = -4.5
                bias[:, 5:] = math.log(0.6 / (yolo.nc - 0.99))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """x (bs, 3, H, W) in [0, 1]; H and W multiples of the largest stride (32 for yolov3)."""
        stride = self.max_stride
        if not torch.jit.is_tracing() and (x.shape[-2] % stride or x.shape[-1] % stride):
            raise ValueError(f"input {tuple(x.shape[-2:])} (H, W): both must be a multiple of {stride} "
                             f"for {self.cfg_name}; letterbox or resize to e.g. 416")
        outputs: list[torch.Tensor | None] = []
        heads = []
        for i, (mdef, module) in enumerate(zip(self.module_defs, self.module_list)):
            kind = mdef["type"]
            if kind in ("route", "shortcut"):
                x = module(x, outputs)
            elif kind == "yolo":
                heads.append(module(x))
            else:
                x = module(x)
            outputs.append(x if i in self.routs else None)
        if self.training:
            return heads  # list of (bs, na, ny, nx, 5+nc)
        pred = torch.cat([h[0] for h in heads], dim=1)  # (bs, N, 5+nc)
        return pred, [h[1] for h in heads]

    def fuse(self) -> DarkNet:
        """Fold each batch norm into its conv, in place (inference only; outputs equal to ~1e-6)."""
        for block in self.module_list:
            if isinstance(block, nn.Sequential) and hasattr(block, "bn"):
                block.conv = fuse_conv_bn(block.conv, block.bn)
                del block.bn
        return self

    def info(self, img_size: int | tuple[int, int] = 416) -> dict[str, Any]:
        """Log and return layer count, parameter count and analytic GFLOPs (2 x MACs) at `img_size`."""
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        n_params = sum(p.numel() for p in self.parameters())
        gflops = count_gflops(self, h, w)
        summary = {"layers": len(self.module_list), "parameters": n_params, "gflops": gflops}
        logger.info("%s: %d layers, %s parameters, %.1f GFLOPs at %dx%d",
                    self.cfg_name, summary["layers"], f"{n_params:,}", gflops, w, h)
        return summary


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing conv followed by bn (in eval mode)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      dilation=conv.dilation, groups=conv.groups, bias=True).to(conv.weight.device)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        base = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((base - bn.running_mean) * scale + bn.bias)
    return fused


def count_gflops(model: DarkNet, height: int, width: int) -> float:
    """Analytic GFLOPs (2 x multiply-accumulates of the convs) for one image, no forward pass needed."""
    sizes: list[tuple[int, int]] = []  # (h, w) output of each layer
    h, w = height, width
    macs = 0
    for mdef, module in zip(model.module_defs, model.module_list):
        kind = mdef["type"]
        if kind == "convolutional":
            conv = module.conv
            k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            macs += conv.in_channels // conv.groups * k * k * conv.out_channels * h * w
        elif kind == "maxpool":
            h, w = (h - 1) // module.stride + 1, (w - 1) // module.stride + 1
        elif kind == "upsample":
            h, w = h * mdef.get("stride", 2), w * mdef.get("stride", 2)
        elif kind == "route":
            h, w = sizes[mdef["_from"][0]]
        sizes.append((h, w))
    return 2 * macs / 1e9
