"""The predict pipeline: sources -> letterbox -> forward -> NMS -> scale -> writer.

Three stages run at once: a prefetch thread decodes and letterboxes (`sources.py`), the
calling thread runs the model and NMS, and a writer thread draws and saves
(`train_val_utils.predict.detections_io`). Frames with the same letterboxed shape are batched up to
`batch_size`, from a look-ahead of a few batches (results are logged and saved in file order);
letterboxing pads only to the next multiple of the stride (`auto=True`), so a 4:3 photo at 416 runs at
416x320 instead of 416x416.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

LOOKAHEAD_BATCHES = 4  # a file source holds back up to this many batches' worth of frames to fill batches
AUTO_BATCH_FILES = 4  # predict.py's default --batch-size for files (1 for a camera or a live stream)


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


def shape_batches(frames: Iterable[Frame], batch_size: int, window: int) -> Iterator[list[tuple[int, Frame]]]:
    """Batches of up to `batch_size` frames whose letterboxed inputs share a shape, each frame with its
    0-based read position; no frame is held back while `window` frames are read after it.

    A folder of photos mixes aspect ratios (coco128: 14 letterboxed shapes at 416, rarely two alike in a
    row), so grouping only consecutive frames would run batches of one. Holding a few frames back and
    grouping them by shape runs full batches; the caller puts the results back in read order
    (`InOrder`). With `window` <= `batch_size` no frame waits for a later one (live sources).
    """
    pending: dict[tuple[int, ...], list[tuple[int, Frame]]] = {}  # by shape; first key = oldest frame
    for position, frame in enumerate(frames):
        shape = tuple(frame.net_input.chw.shape)
        group = pending.setdefault(shape, [])
        group.append((position, frame))
        if len(group) == batch_size:
            yield pending.pop(shape)
        # no frame waits `window` reads: a rare shape among frequent ones would otherwise wait to the end,
        # and `InOrder` would hold every later result until it came
        while pending and position - pending[next(iter(pending))][0][0] + 1 >= window:
            yield pending.pop(next(iter(pending)))
    while pending:
        yield pending.pop(next(iter(pending)))


class InOrder:
    """Results handed back in read order: `add(position, item)` then `ready()` yields every item whose
    predecessors have all arrived (what `shape_batches` reordered)."""

    def __init__(self) -> None:
        self.next = 0
        self.waiting: dict[int, Any] = {}

    def add(self, position: int, item: Any) -> None:
        self.waiting[position] = item

    def ready(self) -> Iterator[Any]:
        while self.next in self.waiting:
            yield self.waiting.pop(self.next)
            self.next += 1


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
    live = spec.camera is not None or spec.url is not None
    window = opts.batch_size if live else LOOKAHEAD_BATCHES * opts.batch_size  # frames held back
    loader = FramePrefetcher(spec, transform=lambda img: letterbox_chw(img, size, stride=stride, auto=auto),
                             maxsize=max(8, 2 * opts.batch_size))
    stats = PredictStats()
    show_bar = spec.camera is None and len(spec.files) > 1
    t_start = time_sync()
    with logging_redirect_tqdm(), tqdm(total=len(spec.files) if show_bar else None, disable=not show_bar,
                                       unit="file", desc="predict") as bar:
        last_index = 0
        try:
            in_order = InOrder()
            for batch in shape_batches(loader, opts.batch_size, window):
                dets, t_fwd, t_nms = detect_batch(model, [frame for _, frame in batch], opts, device)
                stats.forward_s += t_fwd
                stats.nms_s += t_nms
                ms = (t_fwd + t_nms) * 1000 / len(batch)
                for (position, frame), det in zip(batch, dets):
                    in_order.add(position, (frame, det, ms))
                for frame, det, frame_ms in in_order.ready():  # the ms of the batch that frame ran in
                    stats.images += 1
                    stats.decode_s += frame.decode_s
                    logger.info(image_line(frame, det, names, frame_ms))
                    writer.put(frame, det)
                    bar.update(frame.index - last_index)
                    last_index = frame.index
        finally:
            stats.json_path = writer.close()
        bar.update(len(spec.files) - last_index if show_bar else 0)
    stats.wall_s = time_sync() - t_start
    stats.skipped, stats.saved, stats.write_s = loader.skipped, writer.saved, writer.write_s
    return stats
