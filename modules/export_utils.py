"""Export a DarkNet to ONNX / TorchScript (verified against PyTorch) and convert `.weights` <-> `.pt`.

Exported graphs take `images` float (bs, 3, H, W) RGB in [0, 1] and return `output`
(bs, N, 5+nc) = cx, cy, w, h in input pixels, objectness, class probabilities: the eval-mode
`pred` of the model, without the raw maps that only training needs. ONNX goes through the
TorchScript-based exporter (`dynamo=False`), which needs no dependency beyond `onnx`.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from build_utils.dataset.augment import letterbox_chw
from build_utils.dataset.image_io import read_image
from build_utils.errors import UserError
from modules.backends import TORCHSCRIPT_META
from modules.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from modules.loading import load_model
from modules.model import DarkNet
from modules.weights import load_darknet_weights, save_darknet_weights

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
# (module, message start) of TracerWarnings known to be harmless, each with the reason. Only these are
# silenced during an export; any other TracerWarning still reaches the user, and every export is checked
# against PyTorch at two sizes anyway.
BENIGN_TRACER_WARNINGS = (
    # DarknetMaxPool decides at trace time whether its right/bottom pad reaches a window; the answer is
    # the same for every multiple of 32 (modules/layers.py), so freezing it is exact
    ("modules.layers", "Converting a tensor to a Python integer"),
)


@contextmanager
def benign_tracer_warnings_silenced() -> Iterator[None]:
    """Trace with exactly the `BENIGN_TRACER_WARNINGS` ignored (module and message both must match)."""
    with warnings.catch_warnings():
        for module, message in BENIGN_TRACER_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message), category=torch.jit.TracerWarning,
                                    module=re.escape(module) + "$")
        yield


class PredictionOnly(nn.Module):
    """Wrap a DarkNet so tracing sees one output: the decoded `(bs, N, 5+nc)` predictions."""

    def __init__(self, model: DarkNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]  # (bs, N, 5+nc)


def example_input(img_size: int, image: str | Path | None = None, batch: int = 1) -> torch.Tensor:
    """(batch, 3, img_size, img_size) float in [0, 1]: a letterboxed photo, or seeded noise without one."""
    if image is not None:
        chw = letterbox_chw(read_image(image), img_size).chw  # (3, S, S) uint8 RGB
    else:
        hwc = np.random.default_rng(0).integers(0, 256, (img_size, img_size, 3), dtype=np.uint8)
        chw = hwc.transpose(2, 0, 1)
    x = torch.from_numpy(np.ascontiguousarray(chw)).float() / 255  # (3, S, S)
    return x[None].repeat(batch, 1, 1, 1)


def export_torchscript(model: DarkNet, x: torch.Tensor, path: Path,
                       metadata: dict[str, str] | None = None) -> Path:
    """Trace at the shape of `x` and save, with `metadata` (see `modules.backends.export_metadata`) as
    the extra file `meta.json`. The trace records the shape arithmetic (views, grids), so it runs at
    any batch and any multiple of the stride; `DarknetMaxPool`'s pad test is fixed at trace time,
    which is safe because it has the same answer for every multiple of 32 (see its docstring)."""
    with torch.no_grad(), benign_tracer_warnings_silenced():
        traced = torch.jit.trace(PredictionOnly(model).eval(), x, check_trace=False)
    extra = {TORCHSCRIPT_META: json.dumps(metadata)} if metadata else {}
    traced.save(str(path), _extra_files=extra)
    return path


def export_onnx(model: DarkNet, x: torch.Tensor, path: Path, dynamic: bool = False,
                metadata: dict[str, str] | None = None) -> Path:
    """ONNX opset 17; `dynamic` makes batch, height and width variable; `metadata` -> `metadata_props`."""
    try:
        import onnx
    except ImportError:
        raise UserError("--format onnx needs the export extra: pip install -e '.[export]'") from None
    axes = None
    if dynamic:  # (bs, 3, H, W) -> (bs, N, 5+nc) with N = na * sum(ny * nx) over the heads
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 1: "anchors"}}
    with torch.no_grad(), benign_tracer_warnings_silenced():
        torch.onnx.export(PredictionOnly(model).eval(), (x,), str(path), opset_version=ONNX_OPSET,
                          input_names=["images"], output_names=["output"], dynamic_axes=axes, dynamo=False)
    proto = onnx.load(str(path))
    if metadata:
        onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def reference_output(model: DarkNet, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return PredictionOnly(model).eval()(x).float().cpu().numpy()


def max_abs_diff(got: np.ndarray, ref: np.ndarray, img_size: int) -> tuple[float, float]:
    """(largest |got - ref| in raw units, largest with the 4 box columns divided by `img_size`).

    Box widths are exp(logit) x anchor pixels, so float32 rounding alone (PyTorch fused vs unfused
    BN) moves them by ~5e-4 px; in units of the input size the same rounding is ~1e-6, and the
    scores are compared as they are.
    """
    diff = np.abs(got.astype(np.float32) - ref)  # (bs, N, 5+nc)
    diff_norm = diff.copy()
    diff_norm[..., :4] /= img_size
    return float(diff.max()), float(diff_norm.max())


def onnx_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    """onnxruntime's outputs for input `x` (CPU execution provider)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("verifying ONNX needs onnxruntime: pip install -e '.[export]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = x.cpu().numpy().astype(np.float16 if x.dtype == torch.float16 else np.float32)
    return session.run(None, {"images": feed})[0].astype(np.float32)


def torchscript_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    loaded = torch.jit.load(str(path), map_location=x.device)
    with torch.no_grad():
        return loaded(x).float().cpu().numpy()


def load_for_conversion(weights: str | Path,
                        cfg: str | Path | None) -> tuple[DarkNet, list[str] | None, dict]:
    """Unfused model, class names and Darknet header (kept through .pt so .weights round-trip exactly)."""
    path = Path(weights)
    if path.suffix == ".pt":
        model, names = load_model(path, cfg, "cpu", fuse=False)
        return model, names, load_checkpoint(path).get("darknet_header") or {}
    if cfg is None:
        raise UserError(f"{path}: Darknet weights carry no cfg; pass --cfg (e.g. cfg/yolov3-spp.cfg)")
    model = DarkNet(cfg)
    header = load_darknet_weights(model, path)
    return model.eval(), None, header


def checkpoint_from_model(model: DarkNet, class_names: Sequence[str], export_options: dict[str, Any],
                          darknet_header: dict | None = None) -> dict[str, Any]:
    """A checkpoint dict per docs/architecture.md for converted weights: no optimizer state, epoch -1.

    `darknet_header` (an extra key, plain ints) lets `.weights -> .pt -> .weights` be byte-identical.
    The training image size and category ids come from the source `.pt` (None for Darknet weights);
    the conversion's own arguments go under `export_options`, never `options` (training options).
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {
        "format": CHECKPOINT_FORMAT, "cfg_text": model.cfg_text, "cfg_name": model.cfg_name,
        "class_names": list(class_names), "model": state,
        "ema": None, "ema_updates": 0, "optimizer": None, "scaler": None, "scheduler": None,
        "epoch": -1, "best_fitness": 0.0, "hyp": {}, "options": {}, "rng": {}, "results": [],
        "export_options": dict(export_options), "darknet_header": dict(darknet_header or {}),
        "img_size": getattr(model, "train_img_size", None),
        "strides": [int(m.stride) for m in model.yolo_modules()],
        "category_ids": getattr(model, "category_ids", None),
    }


def save_as_checkpoint(model: DarkNet, class_names: Sequence[str], path: Path, export_options: dict[str, Any],
                       darknet_header: dict | None = None) -> Path:
    if len(class_names) != model.nc:
        raise UserError(f"{len(class_names)} class names for a model with {model.nc} classes; "
                        "pass --names with the file the model was trained with")
    save_checkpoint(checkpoint_from_model(model, class_names, export_options, darknet_header), path)
    return path


def save_as_darknet(model: DarkNet, path: Path, header: dict | None = None) -> Path:
    """Darknet `.weights` need the unfused model (batch norm kept): load it without `fuse`."""
    save_darknet_weights(model, path, header=header or None)
    return path
