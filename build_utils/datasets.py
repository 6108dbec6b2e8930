"""`LoadImagesAndLabels`: the training/validation dataset (verify + cache, augmentation, rect).

One image's path to the model: `img_list` finds the images and their label files, `labels`
verifies them once (threads, cache), `load_image` decodes and resizes, then either a mosaic
(`mosaic.py`) or a letterbox to the (rect) batch shape, `random_affine`, HSV and flips
(`augment.py`). Randomness comes from a generator seeded by (seed, epoch, index), so a sample
does not depend on which DataLoader worker made it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from build_utils.dataset.augment import augment_hsv, flip_lr, flip_ud, letterbox, random_affine
from build_utils.dataset.image_io import is_image_file, read_image_resized
from build_utils.dataset.img_list import img2label_path, label2img_dir, list_image_files
from build_utils.dataset.labels import report, verify_all
from build_utils.dataset.mosaic import load_mosaic
from build_utils.errors import DatasetError
from build_utils.geometry import xywhn2xyxy, xyxy2xywhn
from build_utils.hyp import DEFAULT_HYP, augment_hyp

LOGGER = logging.getLogger(__name__)

Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]]


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else physical pages; 0 when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _labels_xywhn2xyxy(labels: np.ndarray, w: float, h: float, padw: float = 0.0,
                       padh: float = 0.0) -> np.ndarray:
    """(n, 5) `[class, cx, cy, w, h]` normalised -> (n, 5) `[class, x1, y1, x2, y2]` pixels (a copy)."""
    return np.concatenate([labels[:, :1], xywhn2xyxy(labels[:, 1:5], w, h, padw, padh)], 1)


def collate_fn(batch: list) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
    """Stack images (bs, 3, H, W) uint8 and concatenate targets (N, 6) with column 0 = image index."""
    imgs, labels, paths, shapes = zip(*batch)
    for i, lab in enumerate(labels):
        lab[:, 0] = i
    return torch.stack(imgs, 0), torch.cat(labels, 0), paths, shapes


class LoadImagesAndLabels(Dataset):
    """Images with YOLO labels; see docs/architecture.md for the item and attribute contract."""

    def __init__(self, path: str | Path | list, img_size: int = 416, batch_size: int = 16,
                 augment: bool = False, hyp: Mapping[str, Any] | None = None, rect: bool = False,
                 cache_images: bool = False, single_cls: bool = False, pad: float = 0.0,
                 nc: int | None = None, strict: bool = False, seed: int = 0, stride: int = 32,
                 mosaic_epochs: int | None = None) -> None:
        self.img_size, self.augment, self.rect = img_size, augment, rect
        self.mosaic_epochs = mosaic_epochs  # epochs >= this draw no mosaic (--close-mosaic); None: none such
        # the hyp file's augmentation section; keys missing from `hyp` take cfg/hyp.yaml's values
        self.hyp = augment_hyp({**DEFAULT_HYP, **(hyp or {})})
        self.seed, self.stride, self.nc = seed, stride, nc
        # shared memory, so persistent DataLoader workers see set_epoch() made in the main process
        self._epoch = multiprocessing.RawValue("q", 0)
        source = str(path) if not isinstance(path, (list, tuple)) else ", ".join(map(str, path))
        files = list_image_files(path)
        if not files:
            raise DatasetError(f"{source}: no images found (types: jpg jpeg png bmp tif tiff webp)")
        label_files = [img2label_path(f) for f in files]
        results = verify_all(files, label_files, nc, self._cache_path(path, label_files))
        self._report_orphans(label_files)
        report(results, files, source, strict)
        keep = [i for i, r in enumerate(results) if r.status != "corrupt"]
        self.img_files = [files[i] for i in keep]
        self.label_files = [label_files[i] for i in keep]
        self.labels = [results[i].labels.copy() for i in keep]
        if single_cls:
            for lab in self.labels:
                lab[:, 0] = 0
        self.image_shapes = np.array([results[i].shape for i in keep], dtype=np.int64).reshape(-1, 2)
        self.batch_shapes = None
        self.imgs: list[np.ndarray | None] = [None] * len(self.img_files)
        self._pool: ThreadPoolExecutor | None = None  # decodes a mosaic's 4 images in parallel
        self._pool_pid = os.getpid()
        if rect:
            self._make_rect(batch_size, pad)
        if cache_images:
            self._cache_images()

    # --- set-up helpers -------------------------------------------------------------------------
    @staticmethod
    def _cache_path(path: Any, label_files: list[str]) -> Path:
        name = Path(str(path[0] if isinstance(path, (list, tuple)) else path).rstrip("/*")).stem or "labels"
        return Path(label_files[0]).parent / f"{name}.labels.cache"

    @staticmethod
    def _report_orphans(label_files: list[str]) -> None:
        """Label files whose image is missing on disk (usually a renamed or deleted image), summarised.

        A label whose image exists but is not in this split (a Darknet train/val list over one
        folder) is fine and not reported.
        """
        wanted = set(label_files)
        orphans = []
        for d in sorted({os.path.dirname(f) for f in label_files}):
            if not os.path.isdir(d):
                continue
            img_dir = label2img_dir(d)
            names = os.listdir(img_dir) if os.path.isdir(img_dir) else []
            stems = {os.path.splitext(n)[0] for n in names if is_image_file(n)}
            orphans += sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".txt")
                              and os.path.join(d, n) not in wanted and n[:-4] not in stems)
        if orphans:
            more = f", ... ({len(orphans) - 3} more)" if len(orphans) > 3 else ""
            LOGGER.warning("%d label files without an image on disk: %s%s", len(orphans),
                           ", ".join(orphans[:3]), more)
        return None

    def _make_rect(self, batch_size: int, pad: float) -> None:
        """Sort by aspect ratio; each batch gets the smallest stride-multiple shape holding it."""
        hw = self.image_shapes.astype(np.float64)
        order = np.argsort(hw[:, 0] / hw[:, 1])
        self.img_files = [self.img_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.image_shapes = self.image_shapes[order]
        ar = hw[order, 0] / hw[order, 1]  # h / w
        n_batches = int(np.ceil(len(ar) / batch_size))
        batch_index = np.arange(len(ar)) // batch_size
        shapes = np.ones((n_batches, 2))
        lo = np.array([ar[batch_index == b].min() for b in range(n_batches)])
        hi = np.array([ar[batch_index == b].max() for b in range(n_batches)])
        shapes[hi < 1, 0] = hi[hi < 1]
        shapes[lo > 1, 1] = 1 / lo[lo > 1]
        self.batch_shapes = (np.ceil(shapes * self.img_size / self.stride + pad) * self.stride).astype(int)
        self.batch_index = batch_index

    def cache_estimate_bytes(self) -> int:
        """Memory `cache_images` needs: the resized pixels plus the transient buffers of decoding
        the largest original (compressed bytes, full-size decode, resized copy)."""
        r = self.img_size / self.image_shapes.max(1)
        pixels = int((np.round(self.image_shapes * r[:, None]).prod(1) * 3).sum())
        return pixels + 3 * int(self.image_shapes.prod(1).max()) * 3

    def _cache_images(self) -> None:
        need = self.cache_estimate_bytes()
        avail = available_memory_bytes()
        LOGGER.info("caching images: about %.2f GB (available %.2f GB)", need / 1e9, avail / 1e9)
        if avail and need > avail:
            raise DatasetError(f"cache_images needs about {need / 1e9:.1f} GB but only {avail / 1e9:.1f} GB "
                               "is available; drop --cache-images or use a smaller --img-size")
        for i in range(len(self.img_files)):
            self.imgs[i] = self.load_image(i)

    # --- loading ----------------------------------------------------------------------------------
    def load_image(self, i: int) -> np.ndarray:
        """Image i resized so its long side is `img_size`: (h, w, 3) uint8 RGB.

        Area interpolation when shrinking without augmentation (best quality for validation),
        linear otherwise (faster, and augmentation blurs anyway).
        """
        cached = self.imgs[i]
        if cached is not None:
            return cached
        return read_image_resized(self.img_files[i], self.img_size, area_when_shrinking=not self.augment)

    def load_images(self, indices: list[int]) -> list[np.ndarray]:
        """`load_image` for several indices; decoding (OpenCV, GIL released) overlaps in threads."""
        if self._pool is None or self._pool_pid != os.getpid():  # a forked worker has no threads
            self._pool = ThreadPoolExecutor(len(indices), thread_name_prefix="decode")
            self._pool_pid = os.getpid()
        return list(self._pool.map(self.load_image, indices))

    def __getstate__(self) -> dict:
        """DataLoader workers get a copy without the (unpicklable) thread pool; each makes its own."""
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation for index i is seeded from (seed, epoch, i); call before iterating the loader.

        Persistent DataLoader workers see the new epoch too (the value lives in shared memory).
        """
        self._epoch.value = int(epoch)

    def mosaic_open(self) -> bool:
        """Whether this epoch may draw mosaics (`hyp.mosaic` is the probability when it may)."""
        return self.mosaic_epochs is None or self.epoch < self.mosaic_epochs

    def __len__(self) -> int:
        return len(self.img_files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, Shapes | None]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        hyp = self.hyp
        shapes = None
        if self.augment and not self.rect and self.mosaic_open() and rng.random() < hyp.mosaic:
            others = rng.integers(0, len(self), 3).tolist()
            img, lab = load_mosaic(self.load_images, self.labels, [index, *others], self.img_size, hyp, rng)
        else:
            img, lab, shapes = self._letterboxed(index, rng)
        if self.augment:
            augment_hsv(img, hyp.hsv_h, hyp.hsv_s, hyp.hsv_v, rng)
        h, w = img.shape[:2]
        if len(lab):
            lab = np.concatenate([lab[:, :1], xyxy2xywhn(lab[:, 1:5], w, h)], 1)  # (n, 5) normalised
        else:
            lab = np.zeros((0, 5), np.float32)
        if self.augment:
            if rng.random() < hyp.fliplr:
                img, lab = flip_lr(img, lab)
            if rng.random() < hyp.flipud:
                img, lab = flip_ud(img, lab)
        out = torch.zeros((len(lab), 6), dtype=torch.float32)
        out[:, 1:] = torch.from_numpy(lab)
        tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # (3, H, W)
        return tensor, out, self.img_files[index], shapes

    def _letterboxed(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Shapes]:
        """Letterbox to the (rect) batch shape; with augment, also a random affine."""
        img = self.load_image(index)
        h0, w0 = (int(v) for v in self.image_shapes[index])
        h, w = img.shape[:2]
        target = tuple(self.batch_shapes[self.batch_index[index]]) if self.rect else self.img_size
        img, ratio, pad = letterbox(img, target, auto=False, scaleup=self.augment)
        shapes = ((h0, w0), ((h * ratio[1] / h0, w * ratio[0] / w0), pad))  # original -> returned
        lab = self.labels[index]
        lab = _labels_xywhn2xyxy(lab, ratio[0] * w, ratio[1] * h, pad[0], pad[1]) if len(lab) else lab
        if self.augment:
            hyp = self.hyp
            img, lab = random_affine(img, lab, hyp.degrees, hyp.translate, hyp.scale, hyp.shear, rng=rng)
        return img, lab, shapes

    def ground_truth(self, i: int) -> np.ndarray:
        """(n, 5) `[class, x1, y1, x2, y2]` in original pixels, without decoding the image."""
        h0, w0 = (float(v) for v in self.image_shapes[i])
        lab = self.labels[i]
        return _labels_xywhn2xyxy(lab, w0, h0) if len(lab) else np.zeros((0, 5), np.float32)

    collate_fn = staticmethod(collate_fn)


# Images per rect shape in evaluation, whatever the batch size: each image is letterboxed to the same shape
# in training-time evaluation (batch 2 x train batch), validation.py and benchmark.py (their --batch-size), so
# the same weights score the same mAP in every tool.
EVAL_SHAPE_GROUP = 32


def batches_within_groups(n: int, batch_size: int, group: int) -> list[list[int]]:
    """Indices 0..n-1 in order, in batches of at most `batch_size` that never cross a `group` boundary (a
    rect batch must share one shape); batches larger than `group` are cut to it."""
    out = []
    for start in range(0, n, group):
        stop = min(start + group, n)
        out += [list(range(i, min(i + batch_size, stop))) for i in range(start, stop, batch_size)]
    return out


def validation_loader(path: str | Path, img_size: int, batch_size: int, nc: int, rect: bool = True,
                      workers: int = 0, pin_memory: bool = False, *, stride: int = 32,
                      single_cls: bool = False, strict: bool = False, cache_images: bool = False,
                      persistent_workers: bool = False) -> torch.utils.data.DataLoader:
    """The one evaluation loader (validation.py, benchmark.py and training-time evaluation): in order, rect
    shapes of `EVAL_SHAPE_GROUP` images padded by half a stride (or square `img_size` inputs without `rect`,
    e.g. for a fixed-size export), batches of `batch_size` within them, so the same weights score the same
    mAP in every tool and at every batch size. Training keeps its workers alive between evaluations
    (`persistent_workers`)."""
    group = EVAL_SHAPE_GROUP if rect else batch_size
    dataset = LoadImagesAndLabels(path, img_size, group, rect=rect, nc=nc, pad=0.5 if rect else 0.0,
                                  stride=stride, single_cls=single_cls, strict=strict,
                                  cache_images=cache_images)
    batches = batches_within_groups(len(dataset), batch_size, group if rect else max(len(dataset), 1))
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                                       collate_fn=collate_fn, pin_memory=pin_memory,
                                       persistent_workers=persistent_workers and workers > 0)
