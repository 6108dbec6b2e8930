"""Export one model to every format and score each on the same validation data: one comparable table.

Formats: PyTorch as validation.py runs it (batch norm fused, channels_last), PyTorch contiguous, TorchScript,
ONNX Runtime float32 and ONNX Runtime int8 (static QDQ quantization calibrated on train-split images,
`modules/quantize.py`). Every row goes through `evaluate` with the same loader and the same ground truth
as training and validation.py (`engine.scoring_options`; rect batches, and the exports are dynamic so
they take the same shapes), so mAP and the pre/forward/NMS split are measured the same way. A format
that fails keeps its row with the reason and the run goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from build_utils.data_cfg import parse_data_cfg
from build_utils.datasets import validation_loader
from build_utils.run_dir import make_run_dir
from build_utils.torch_utils import select_device
from modules import export_utils
from modules.backends import Backend, export_metadata, load_backend
from modules.loading import default_img_size, load_model
from modules.model_fit import model_classes
from modules.quantize import calibration_images, quantize_int8
from train_val_utils.engine import EvalOptions, evaluate, scoring_options
from train_val_utils.evaluation.thresholds import EVAL_CONF_THRES, EVAL_IOU_THRES

logger = logging.getLogger(__name__)

FORMATS = ("PyTorch", "PyTorch contiguous", "TorchScript", "ONNX Runtime fp32",
           "ONNX Runtime int8")


@dataclass(frozen=True, kw_only=True)
class BenchmarkOptions:
    """benchmark.py's options."""

    weights: Path
    data: Path
    cfg: Path | None = None
    img_size: int | None = None  # None = the .pt's training size, else 416
    batch_size: int = 16
    device: str = "cpu"
    calib_images: int = 32  # train-split images for the int8 activation ranges
    workers: int = 0
    conf_thres: float = EVAL_CONF_THRES
    iou_thres: float = EVAL_IOU_THRES
    project: str = "runs/benchmark"
    name: str = "exp"


@dataclass
class FormatRow:
    format: str
    file_mb: float = math.nan
    map: float = math.nan  # COCO mAP@0.5:0.95
    map50: float = math.nan
    pre_ms: float = math.nan
    forward_ms: float = math.nan
    nms_ms: float = math.nan
    img_s: float = math.nan
    error: str = ""


HEADERS = ("format", "file MB", "mAP@0.5:0.95", "mAP@0.5", "pre ms/img", "forward ms/img", "NMS ms/img",
           "img/s", "error")


def _cell(name: str, value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}" if name.startswith("map") else f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[FormatRow]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + " --- |" * len(HEADERS)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(f.name, getattr(r, f.name)) for f in fields(FormatRow)) + " |")
    return "\n".join(lines)


def write_csv(rows: list[FormatRow], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(FormatRow)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def machine_line() -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:  # Linux: the CPU's model name and how many cores this process may use
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = f"{names[0]} ({len(names)} logical CPUs)" if names else cpu
    except OSError:
        pass
    return (f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, python {platform.python_version()}")


class _Formats:
    """Builds each format's backend (exporting into `out_dir` on first use) and knows its file."""

    def __init__(self, opts: BenchmarkOptions, names: list[str], out_dir: Path, device: torch.device) -> None:
        self.opts, self.names, self.out_dir, self.device = opts, names, out_dir, device
        self.files: dict[str, Path] = {}

    def _fused(self) -> tuple[torch.nn.Module, torch.Tensor, dict[str, str]]:
        model, _ = load_model(self.opts.weights, self.opts.cfg, self.device, fuse=True)
        size = self.opts.img_size
        meta = export_metadata(model, self.names, model.train_img_size or size, size, True)
        return model, export_utils.example_input(size).to(self.device), meta

    def build(self, fmt: str) -> Backend:
        opts, stem = self.opts, self.out_dir / Path(self.opts.weights).stem
        if fmt.startswith("PyTorch"):  # fused, channels_last like validation.py: its row prints its mAP
            self.files[fmt] = Path(opts.weights)
            channels_last = fmt == "PyTorch"  # "PyTorch contiguous": the NCHW layout, for comparison
            return load_backend(opts.weights, opts.cfg, self.device, fuse=True, channels_last=channels_last)
        if fmt == "TorchScript":
            model, x, meta = self._fused()
            path = stem.with_suffix(".torchscript")
            self.files[fmt] = export_utils.export_torchscript(model, x, path, meta)
        elif fmt == "ONNX Runtime fp32":
            model, x, meta = self._fused()
            path = stem.with_suffix(".onnx")
            self.files[fmt] = export_utils.export_onnx(model.cpu(), x.cpu(), path, True, meta)
        else:
            if "ONNX Runtime fp32" not in self.files:
                raise RuntimeError("needs the ONNX fp32 export, which failed")
            train = parse_data_cfg(opts.data)["train"]
            calib = calibration_images(train, opts.calib_images)
            self.files[fmt] = quantize_int8(self.files["ONNX Runtime fp32"], stem.with_suffix(".int8.onnx"),
                                            calib, opts.img_size)
        return load_backend(self.files[fmt], device=self.device)


def _score(backend: Backend, loader: object, names: list[str], opts: BenchmarkOptions, options: EvalOptions,
           device: torch.device) -> dict:
    """One warm-up forward (kernel selection, memory planning), then `evaluate` without its table."""
    with torch.inference_mode():
        backend(torch.zeros(1, 3, opts.img_size, opts.img_size, dtype=backend.input_dtype, device=device))
    engine_log = logging.getLogger("train_val_utils.engine")
    level = engine_log.level
    engine_log.setLevel(logging.WARNING)
    try:
        return evaluate(backend, loader, names, device, options)
    finally:
        engine_log.setLevel(level)


def run_format(fmt: str, build: Callable[[str], Backend], score: Callable[[Backend], dict],
               file_of: Callable[[str], Path | None]) -> FormatRow:
    """One row; any failure (export, quantization, session, evaluation) becomes its `error`."""
    row = FormatRow(fmt)
    try:
        res = score(build(fmt))
    except Exception as err:  # noqa: BLE001 - a broken format is a row, not the end of the run
        logger.warning("%s failed: %s: %s", fmt, type(err).__name__, err)
        row.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
    else:
        speed = res["speed_ms"]
        row.map, row.map50 = res["map"], res["map50"]
        row.pre_ms, row.forward_ms, row.nms_ms = speed["pre"], speed["inference"], speed["nms"]
        row.img_s = 1000 / max(sum(speed.values()), 1e-9)
    path = file_of(fmt)
    if path is not None and path.is_file():
        row.file_mb = path.stat().st_size / 1e6
    return row


def run_benchmark(opts: BenchmarkOptions) -> tuple[list[FormatRow], Path]:
    """Every format's row, and the run folder holding results.csv, results.md and the exported files."""
    device = select_device(opts.device)
    data = parse_data_cfg(opts.data)
    names = data["class_names"]
    model = load_model(opts.weights, opts.cfg, "cpu")[0]
    nc = model.nc
    opts = dataclasses.replace(opts, img_size=default_img_size(opts.img_size, model.train_img_size))
    model_classes(nc, names, data.get("category_ids"), names_source=str(opts.data),
                  model_source=str(opts.weights))
    # the split's one ground truth (COCO JSON or labels), as training and validation.py score it
    options = scoring_options(data, opts.data, conf_thres=opts.conf_thres, iou_thres=opts.iou_thres)
    save_dir = make_run_dir(opts.project, opts.name)
    loader = validation_loader(data["valid"], opts.img_size, opts.batch_size, len(names), True, opts.workers)
    formats = _Formats(opts, names, save_dir, device)
    rows = []
    for fmt in FORMATS:
        logger.info("benchmark: %s", fmt)
        rows.append(run_format(fmt, formats.build, lambda b: _score(b, loader, names, opts, options, device),
                               formats.files.get))
    table = markdown_table(rows)
    write_csv(rows, save_dir / "results.csv")
    header = (f"{Path(opts.weights).name} on {opts.data} ({len(loader.dataset)} images) at {opts.img_size}, "
              f"batch {opts.batch_size}, {device}; {machine_line()}")
    (save_dir / "results.md").write_text(f"{header}\n\n{table}\n")
    logger.info("%s\n%s\nResults saved to %s", header, table, save_dir)
    return rows, save_dir
