"""The predict pipeline: sources -> letterbox -> forward -> NMS -> scale -> writer.

Three stages run at once: a prefetch thread decodes and letterboxes (`sources.py`), the
calling thread runs the model and NMS, and a writer thread draws and saves
(`train_val_utils.predict.detections_io`). Consecutive frames with the same letterboxed shape are batched
up to `batch_size`; letterboxing pads only to the next multiple of the stride (`auto=True`), so a
4:3 photo at 416 runs at 416x320 instead of 416x416.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from build_utils.dataset.augment import letterbox_chw
from build_utils.geometry import scale_coords
from build_utils.torch_utils import time_sync
from modules.backends import Backend, input_dtype
from modules.loading import DEFAULT_IMG_SIZE
from train_val_utils.evaluation.nms import NMS_AUTO, non_max_suppression, resolve_nms
from train_val_utils.evaluation.thresholds import DEPLOY_CONF_THRES, DEPLOY_IOU_THRES
from train_val_utils.evaluation.tta import tta_forward
from train_val_utils.predict.detections_io import ResultWriter, summary_text
from train_val_utils.predict.sources import Frame, FramePrefetcher, SourceSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """How predict.py runs a model on frames (its flags, resolved against the model)."""

    img_size: int = DEFAULT_IMG_SIZE
    conf_thres: float = DEPLOY_CONF_THRES
    iou_thres: float = DEPLOY_IOU_THRES
    classes: list[int] | None = None
    agnostic: bool = False
    max_det: int = 300
    half: bool = False
    batch_size: int = 1
    augment: bool = False  # test-time augmentation (tta.py)
    nms: str = NMS_AUTO  # plain, merge (merge-NMS) or auto (merge with `augment`); resolved below
    fixed_hw: tuple[int, int] | None = None  # a static export's input (H, W): letterbox every frame to it

    def __post_init__(self) -> None:
        object.__setattr__(self, "nms", resolve_nms(self.nms, self.augment))  # frozen: set once, here


@dataclass
class PredictStats:
    """Seconds per stage summed over images (decode and write ran in their own threads)."""

    images: int = 0
    decode_s: float = 0.0
    forward_s: float = 0.0
    nms_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    saved: list[Path] = field(default_factory=list)
    json_path: Path | None = None


def same_shape_batches(frames: Iterable[Frame], batch_size: int) -> Iterator[list[Frame]]:
    """Group consecutive frames whose letterboxed inputs share a shape, at most `batch_size` each."""
    batch: list[Frame] = []
    for frame in frames:
        if batch and (len(batch) == batch_size or batch[0].net_input.chw.shape != frame.net_input.chw.shape):
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


@torch.inference_mode()
def detect_batch(model: Backend | torch.nn.Module, frames: list[Frame], opts: PredictOptions,
                 device: torch.device) -> tuple[list[np.ndarray], float, float]:
    """Detections (n, 6) `[x1, y1, x2, y2, score, class]` in original pixels per frame, and the
    forward and NMS seconds."""
    t0 = time_sync()
    x = torch.from_numpy(np.stack([f.net_input.chw for f in frames])).to(device)  # (bs, 3, h, w) uint8
    x = x.to(input_dtype(model)) / 255  # the backend applies its own memory format
    pred = tta_forward(model, x) if opts.augment else model(x)[0]  # (bs, N, 5+nc)
    t1 = time_sync()
    dets = non_max_suppression(pred.float(), opts.conf_thres, opts.iou_thres, opts.classes, opts.agnostic,
                               max_det=opts.max_det, merge=opts.nms == "merge")
    out = []
    for det, frame in zip(dets, frames):  # (n, 6) per image
        boxes = scale_coords(x.shape[2:], det[:, :4], frame.img.shape[:2], frame.net_input.ratio_pad)
        out.append(torch.cat((boxes, det[:, 4:]), 1).cpu().numpy())
    return out, t1 - t0, time_sync() - t1


def image_line(frame: Frame, det: np.ndarray, names: Sequence[str] | None, ms: float) -> str:
    """`image 3/120 path.jpg: 512x384 2 persons, 1 bus, 13.2ms` (network input width x height)."""
    h, w = frame.net_input.chw.shape[1:]
    if frame.kind == "image":
        where = f"image {frame.index}/{frame.total} {frame.path}"
    elif frame.kind == "video":
        count = f"{frame.frame}/{frame.frames}" if frame.frames else str(frame.frame)
        where = f"video {frame.index}/{frame.total} ({count}) {frame.path}"
    else:
        where = f"{frame.path.stem} (frame {frame.frame})"
    return f"{where}: {w}x{h} {summary_text(det, names)}, {ms:.1f}ms"


def run_predict(model: Backend | torch.nn.Module, names: Sequence[str] | None, spec: SourceSpec,
                save_dir: Path | None, opts: PredictOptions, device: torch.device,
                writer: ResultWriter) -> PredictStats:
    """Run the model over every frame of `spec`, log one line per frame, and hand results to `writer`."""
    stride = int(getattr(model, "max_stride", 32))
    size, auto = (opts.fixed_hw, False) if opts.fixed_hw is not None else (opts.img_size, True)
    loader = FramePrefetcher(spec, transform=lambda img: letterbox_chw(img, size, stride=stride, auto=auto),
                             maxsize=max(8, 2 * opts.batch_size))
    stats = PredictStats()
    show_bar = spec.camera is None and len(spec.files) > 1
    t_start = time_sync()
    with logging_redirect_tqdm(), tqdm(total=len(spec.files) if show_bar else None, disable=not show_bar,
                                       unit="file", desc="predict") as bar:
        last_index = 0
        try:
            for batch in same_shape_batches(loader, opts.batch_size):
                dets, t_fwd, t_nms = detect_batch(model, batch, opts, device)
                stats.forward_s += t_fwd
                stats.nms_s += t_nms
                ms = (t_fwd + t_nms) * 1000 / len(batch)
                for frame, det in zip(batch, dets):
                    stats.images += 1
                    stats.decode_s += frame.decode_s
                    logger.info(image_line(frame, det, names, ms))
                    writer.put(frame, det)
                    bar.update(frame.index - last_index)
                    last_index = frame.index
        finally:
            stats.json_path = writer.close()
        bar.update(len(spec.files) - last_index if show_bar else 0)
    stats.wall_s = time_sync() - t_start
    stats.skipped, stats.saved, stats.write_s = loader.skipped, writer.saved, writer.write_s
    return stats
