"""Backends: run a model from any of its files (`.pt`, Darknet `.weights`, `.torchscript`, `.onnx`).

Every backend is a callable with the eval-mode contract of `DarkNet`: `backend(x)` with `x` float
`(bs, 3, H, W)` RGB in [0, 1] returns `(pred, None)`, `pred` float32 `(bs, N, 5+nc)` = cx, cy, w, h in
input pixels, objectness, class probabilities. So letterboxing, NMS, metrics and drawing stay shared:
`evaluate` and the predictor call a backend exactly as they call a `DarkNet` (they read the input dtype
through `input_dtype(model)`, and `eval()`/`train()`/`training` exist and do nothing).

Exports describe themselves (`export_metadata`): class names, COCO category ids, strides, the training
image size, nc and the cfg travel in ONNX `metadata_props` and TorchScript `_extra_files`, so neither
needs `--cfg` or `--names`, and predict/validation write the same predictions.json as from the `.pt`.
A graph exported with a fixed input size (ONNX without `--dynamic`) reports `fixed_hw`; the callers
letterbox to it, and a fixed batch size is served in chunks here.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from build_utils.errors import UserError, WeightsError
from build_utils.torch_utils import half_dtype_name, precision_name
from modules.loading import load_model
from modules.model import DarkNet
from modules.model_files import damaged_error, sniff_model_file, wrong_kind_error

logger = logging.getLogger(__name__)

METADATA_FORMAT = "yolov3-suite-export/1"
TORCHSCRIPT_META = "meta.json"  # name of the TorchScript extra file holding the metadata
GRAPH_SUFFIXES = (".torchscript", ".onnx")


@dataclass
class ModelInfo:
    """What a caller needs to know about a model besides its forward."""

    names: list[str] | None
    nc: int
    strides: list[int]
    img_size: int | None = None  # the training image size when known
    cfg_name: str | None = None
    category_ids: list[int] | None = None  # COCO id of each class, when the weights record them


def export_metadata(model: DarkNet, names: list[str], img_size: int, export_size: int,
                    dynamic: bool) -> dict[str, str]:
    """String key/value pairs an export carries (ONNX metadata_props, TorchScript extra file): everything
    of the `.pt` that changes what predict/validation write, so an export gives the `.pt`'s answers.
    `category_ids` is the model's (`load_model` reads it from the `.pt`), JSON `null` when unknown."""
    ids = getattr(model, "category_ids", None)
    return {
        "format": METADATA_FORMAT, "names": json.dumps(list(names)), "nc": str(model.nc),
        "category_ids": json.dumps([int(i) for i in ids] if ids is not None else None),
        "strides": json.dumps([m.stride for m in model.yolo_modules()]), "img_size": str(img_size),
        "export_img_size": str(export_size), "dynamic": json.dumps(bool(dynamic)),
        "cfg_name": model.cfg_name, "cfg_text": model.cfg_text,
    }


def info_from_metadata(meta: dict[str, str], path: Path) -> ModelInfo:
    """Parse `export_metadata`'s pairs; a graph without them was not written by this export.py."""
    if meta.get("format") != METADATA_FORMAT:
        raise WeightsError(f"{path}: no model metadata (class names, strides) inside; export it again with "
                           "this project's export.py (python export.py --weights best.pt --format "
                           f"{path.suffix.lstrip('.')})")
    ids = json.loads(meta.get("category_ids", "null"))  # absent in exports written before category ids
    return ModelInfo(names=json.loads(meta["names"]), nc=int(meta["nc"]), strides=json.loads(meta["strides"]),
                     img_size=int(meta["img_size"]), cfg_name=meta.get("cfg_name"),
                     category_ids=[int(i) for i in ids] if ids is not None else None)


def input_dtype(model: Any) -> torch.dtype:
    """The dtype a model's input should have: a backend says so, a plain nn.Module by its parameters."""
    dtype = getattr(model, "input_dtype", None)
    return dtype if dtype is not None else next(model.parameters()).dtype


class Backend:
    """Base: metadata plus the DarkNet-like surface `evaluate` and the predictor use."""

    kind = "?"
    training = False

    def __init__(self, path: Path, info: ModelInfo, device: torch.device, fp16: bool = False,
                 fixed_hw: tuple[int, int] | None = None) -> None:
        self.path, self.info, self.device, self.fp16, self.fixed_hw = path, info, device, fp16, fixed_hw

    names = property(lambda self: self.info.names)
    nc = property(lambda self: self.info.nc)
    strides = property(lambda self: self.info.strides)
    img_size = property(lambda self: self.info.img_size)
    category_ids = property(lambda self: self.info.category_ids)  # COCO id of each class, or None
    stride = property(lambda self: max(self.info.strides))  # inputs must be multiples of it
    max_stride = stride
    dynamic = property(lambda self: self.fixed_hw is None)
    input_dtype = property(lambda self: torch.float16 if self.fp16 else torch.float32)
    precision = property(lambda self: "float16" if self.fp16 else "float32")  # what the log lines name

    def eval(self) -> Backend:
        return self

    def train(self, mode: bool = True) -> Backend:
        if mode:
            raise RuntimeError(f"{self.path}: a {self.kind} backend runs inference only")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        if self.fixed_hw is not None and tuple(x.shape[-2:]) != self.fixed_hw:
            raise ValueError(f"{self.path}: exported for input {self.fixed_hw} (H, W), got "
                             f"{tuple(x.shape[-2:])}; letterbox to that size or export with --dynamic")
        with torch.no_grad():  # inference only, also when a caller forgot inference_mode
            return self.forward(x), None  # (bs, N, 5+nc)

    def describe(self) -> str:
        size = "any size (dynamic)" if self.fixed_hw is None else "fixed {1}x{0}".format(*self.fixed_hw)
        return f"{self.kind} {self.path.name}: {self.nc} classes, strides {self.strides}, input {size}"


class TorchBackend(Backend):
    """A `DarkNet` from a `.pt` or Darknet `.weights`, channels_last on ask; with `half`, in the device's
    reduced precision: float16 on CUDA, bfloat16 on a CPU (convolutions, pools, routes; the YOLO layers
    decode boxes in float32 and NMS runs on float32, so only the feature maps are rounded)."""

    kind = "PyTorch"

    def __init__(self, model: DarkNet, path: Path, names: list[str] | None, device: torch.device,
                 half: bool = False, channels_last: bool = False, img_size: int | None = None) -> None:
        strides = [m.stride for m in model.yolo_modules()]
        ids = getattr(model, "category_ids", None)
        info = ModelInfo(names, model.nc, strides, img_size, model.cfg_name, ids)
        super().__init__(path, info, device, half)
        self.dtype = getattr(torch, half_dtype_name(device)) if half else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(dtype=self.dtype, memory_format=self.memory_format)

    input_dtype = property(lambda self: self.dtype)
    precision = property(lambda self: precision_name(self.dtype))

    def parameters(self):  # noqa: ANN201 - the wrapped model's, for code that inspects them
        return self.model.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=self.memory_format))[0]  # (bs, N, 5+nc)


class TorchScriptBackend(Backend):
    """A traced `.torchscript` from export.py (traces keep the shape arithmetic, so any 32-multiple runs)."""

    kind = "TorchScript"

    def __init__(self, path: Path, device: torch.device) -> None:
        extra = {TORCHSCRIPT_META: ""}
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        meta = json.loads(extra[TORCHSCRIPT_META]) if extra[TORCHSCRIPT_META] else {}
        fp16 = next(module.parameters()).dtype == torch.float16
        super().__init__(path, info_from_metadata(meta, path), device, fp16)
        self.module = module.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x).float()  # (bs, N, 5+nc)


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share a core's vector units)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        blocks = Path("/proc/cpuinfo").read_text().split("\n\n")
    except OSError:
        return max(len(allowed), 1)
    cores = set()
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "processor" in fields and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id"), fields.get("core id", fields["processor"])))
    return max(len(cores), 1) if cores else max(len(allowed), 1)


def onnx_session(path: Path, device: torch.device) -> Any:
    """An ONNX Runtime session: CUDA provider when asked for and available, else CPU, tuned for this CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"{path}: running ONNX needs onnxruntime: pip install -e '.[export]'") from None
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    elif device.type == "cuda":
        logger.warning("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); running on CPU")
    options = ort.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no busy-waiting between runs: predict's decode and writer threads need those cores (a quiet 2-core
    # box: 29.5 vs 23.9 img/s end to end for yolov3-tiny fp32 at 416; BENCHMARKS.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    logger.info("onnxruntime %s: providers %s, %d intra-op threads (physical cores), graph optimisation "
                "ORT_ENABLE_ALL, sequential execution, no spinning", ort.__version__, session.get_providers(),
                options.intra_op_num_threads)
    return session


class OnnxBackend(Backend):
    """An `.onnx` from export.py through ONNX Runtime; numpy in and out, results as torch tensors."""

    kind = "ONNX Runtime"

    def __init__(self, path: Path, device: torch.device) -> None:
        self.session = onnx_session(path, device)
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]  # images: [batch, 3, height, width], ints where fixed
        self.input_name = inp.name
        batch, _, h, w = inp.shape
        fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self.fixed_batch = batch if isinstance(batch, int) else None
        super().__init__(path, info_from_metadata(meta, path), device, inp.type == "tensor(float16)", fixed)
        self.int8 = meta.get("precision") == "int8"  # export.py --int8 / benchmark.py mark their graphs

    precision = property(lambda self: "int8" if self.int8 else Backend.precision.fget(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float16 if self.fp16 else np.float32)
        step = self.fixed_batch or feed.shape[0]
        outs = []
        for i in range(0, feed.shape[0], step):  # a fixed-batch graph takes `step` images per run
            chunk = feed[i:i + step]
            n = chunk.shape[0]
            if n < step:
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append(self.session.run(None, {self.input_name: chunk})[0][:n])  # (n, N, 5+nc)
        pred = torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0]).float()
        return pred.to(x.device)  # (bs, N, 5+nc)


def load_backend(weights: str | Path, cfg: str | Path | None = None, device: str | torch.device = "cpu",
                 half: bool = False, fuse: bool = True, channels_last: bool = False) -> Backend:
    """The backend for `weights` by suffix; `.pt`/`.weights` go through `load_model` (`.weights` need `cfg`).

    `half` and `channels_last` apply to the PyTorch formats; an exported graph keeps the dtype it was
    exported with (and ignores `cfg`, since it carries its own model).
    """
    path, device = Path(weights), torch.device(device)
    if path.suffix not in GRAPH_SUFFIXES:
        model, names = load_model(path, cfg, device, fuse=fuse)
        trained = getattr(model, "train_img_size", None)  # load_model read it from the .pt
        return TorchBackend(model, path, names, device, half, channels_last, trained)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if cfg is not None:
        logger.warning("--cfg %s ignored: %s carries its own model", cfg, path.name)
    kind = sniff_model_file(path)
    wrong = wrong_kind_error(path, kind, path.suffix)
    if wrong is not None:  # e.g. a .pt renamed .onnx, or a torch.save checkpoint named .torchscript
        raise wrong
    backend_cls = TorchScriptBackend if path.suffix == ".torchscript" else OnnxBackend
    try:
        backend = backend_cls(path, device)
    except (UserError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - the reader's own error types (InvalidProtobuf, miniz, ...)
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        detail = f"{type(err).__name__}: {detail.split('. ')[0]}"
        raise damaged_error(path, kind, path.suffix, detail) from None
    logger.info("%s", backend.describe())
    return backend
