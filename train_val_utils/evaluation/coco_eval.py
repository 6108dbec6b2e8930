"""Official COCO metrics (the 12 standard stats) through pycocotools, or faster-coco-eval when installed.

Ground truth is either the dataset's original COCO JSON (real image and category ids, matched to our
images by file name) or a COCO dictionary built from the YOLO labels at original image size. The
latter is cached on disk, keyed on the label content, so training does not rebuild it every epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from build_utils.errors import DatasetError

logger = logging.getLogger(__name__)

STAT_NAMES = (
    "AP@[.50:.95] all", "AP@.50 all", "AP@.75 all", "AP small", "AP medium", "AP large",
    "AR@1", "AR@10", "AR@100", "AR small", "AR medium", "AR large",
)
# (metric, IoU, area, maxDets) of the 12 stats, for the summary pycocotools prints
_SUMMARY_ROWS = (
    ("AP", "0.50:0.95", "all", 100), ("AP", "0.50", "all", 100), ("AP", "0.75", "all", 100),
    ("AP", "0.50:0.95", "small", 100), ("AP", "0.50:0.95", "medium", 100), ("AP", "0.50:0.95", "large", 100),
    ("AR", "0.50:0.95", "all", 1), ("AR", "0.50:0.95", "all", 10), ("AR", "0.50:0.95", "all", 100),
    ("AR", "0.50:0.95", "small", 100), ("AR", "0.50:0.95", "medium", 100), ("AR", "0.50:0.95", "large", 100),
)


def summary_text(stats: Sequence[float]) -> str:
    """The 12 stats in pycocotools' summary layout (the same text whichever backend computed them)."""
    lines = []
    for (kind, iou, area, max_dets), value in zip(_SUMMARY_ROWS, stats):
        title = "Average Precision  (AP)" if kind == "AP" else "Average Recall     (AR)"
        lines.append(f" {title} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {value:0.3f}")
    return "\n".join(lines) + "\n"


def default_cache_dir() -> Path:
    """Where built ground truths are cached: $YOLOV3_CACHE, else ~/.cache/yolov3-suite."""
    return Path(os.environ.get("YOLOV3_CACHE", Path.home() / ".cache" / "yolov3-suite"))


def coco_gt_from_labels(
    img_files: Sequence[str],
    labels: Sequence[np.ndarray],
    image_shapes: np.ndarray,
    category_ids: Sequence[int] | None = None,
    cache_dir: Path | None = None,
) -> dict:
    """COCO ground-truth dict from YOLO labels (`[class, cx, cy, w, h]` normalised) at original size.

    Image ids are the dataset indices; category id = `category_ids[class]` (default: the class index).
    With `cache_dir` the dict is stored as JSON under a hash of file names, shapes and labels and reused.
    """
    key = hashlib.sha1()
    for f, lab, shp in zip(img_files, labels, image_shapes):
        key.update(str(f).encode())
        key.update(np.asarray(shp, np.int64).tobytes())
        key.update(np.ascontiguousarray(lab, np.float32).tobytes())
    key.update(json.dumps(list(category_ids) if category_ids is not None else None).encode())
    cache = Path(cache_dir) / f"coco_gt_{key.hexdigest()[:16]}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        logger.debug("COCO ground truth from cache %s", cache)
        return json.loads(cache.read_text())
    images, annotations = [], []
    for i, (f, lab, (h, w)) in enumerate(zip(img_files, labels, image_shapes)):
        images.append({"id": i, "file_name": Path(f).name, "height": int(h), "width": int(w)})
        lab = np.asarray(lab, np.float64).reshape(-1, 5)
        xywh = lab[:, 1:5] * np.array([w, h, w, h])
        xywh[:, :2] -= xywh[:, 2:] / 2  # centre -> top-left corner
        for cls, box in zip(lab[:, 0].astype(int), xywh.round(3).tolist()):
            cat = int(category_ids[cls]) if category_ids is not None else int(cls)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": cat, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    cats = sorted({a["category_id"] for a in annotations} | set(category_ids or []))
    gt = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in cats]}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(gt))
        tmp.replace(cache)  # atomic: a concurrent reader never sees half a file
    return gt


def image_ids_from_json(coco_json: str | Path, img_files: Sequence[str]) -> list[int]:
    """The COCO image id of each of our images, matched by file name; raises naming the first miss."""
    data = json.loads(Path(coco_json).read_text())
    by_name = {Path(im["file_name"]).name: int(im["id"]) for im in data["images"]}
    ids = []
    for f in img_files:
        name = Path(f).name
        if name not in by_name:
            raise DatasetError(f"{coco_json}: no image named {name!r} (from {f}); is valid_json the "
                               f"annotation file the validation images came from?")
        ids.append(by_name[name])
    return ids


def detections_to_coco(
    det: np.ndarray, image_id: int, category_ids: Sequence[int] | None = None
) -> list[dict]:
    """(n, 6) `[x1, y1, x2, y2, score, class]` in original pixels -> COCO result dicts (bbox = x, y, w, h)."""
    det = np.asarray(det, np.float64).reshape(-1, 6)
    xywh = det[:, :4].copy()
    xywh[:, 2:] -= xywh[:, :2]
    cls = det[:, 5].astype(int)
    cats = np.asarray(category_ids)[cls] if category_ids is not None else cls
    return [{"image_id": int(image_id), "category_id": int(c), "bbox": [round(v, 3) for v in b],
             "score": round(float(s), 5)} for b, s, c in zip(xywh.tolist(), det[:, 4], cats)]


@contextlib.contextmanager
def _quiet():
    """Silence the evaluators' own printing (pycocotools prints, faster-coco-eval logs at INFO)."""
    fce = logging.getLogger("faster_coco_eval")
    level = fce.level
    fce.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        fce.setLevel(level)


def _backend(name: str):
    """(COCO, COCOeval) classes: 'faster' (faster-coco-eval), 'pycocotools', 'auto' (faster if installed)."""
    if name in ("auto", "faster"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, COCOeval_faster
        except ImportError:
            if name == "faster":
                raise
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def evaluate_coco(
    gt: dict | str | Path,
    detections: list[dict],
    image_ids: Sequence[int] | None = None,
    backend: str = "auto",
    category_ids: Sequence[int] | None = None,
) -> tuple[np.ndarray, str]:
    """Run COCO bbox evaluation; returns (12 stats, their summary text).

    `gt` is a COCO dict or the path of a COCO JSON; `image_ids` restricts scoring to those images
    (our validation set inside a bigger annotation file), `category_ids` to those categories (the
    means run over them only). No detections give all-zero stats.
    """
    coco_cls, eval_cls = _backend(backend)
    with _quiet():
        coco_gt = coco_cls(str(gt)) if isinstance(gt, str | Path) else coco_cls()
        if not isinstance(gt, str | Path):
            coco_gt.dataset = gt
            coco_gt.createIndex()
    if not detections:
        return np.zeros(12), summary_text(np.zeros(12))
    with _quiet():
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])  # loadRes adds keys in place
        ev = eval_cls(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(set(int(i) for i in image_ids))
        if category_ids is not None:
            ev.params.catIds = sorted(set(int(c) for c in category_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats[:12], dtype=np.float64)
    return stats, summary_text(stats)
