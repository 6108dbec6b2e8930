"""Writing detections: YOLO txt lines, COCO-style JSON records, annotated images and mp4 videos.

Detections arrive as the NMS contract's `(n, 6)` `[x1, y1, x2, y2, score, class]` in original
image pixels (numpy). `ResultWriter` does all the disk work in its own thread behind a bounded
queue: JPEG encoding and video writing release the GIL, so they overlap with the next forward.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from build_utils.atomic import atomic_write
from build_utils.drawing import class_color, draw_box
from build_utils.errors import UserError
from build_utils.geometry import xyxy2xywhn
from build_utils.run_dir import ensure_dir

logger = logging.getLogger(__name__)
OUTPUT_FIX = "free space, or pass --project (and --name) with a folder you can write to"

_DONE = object()


def class_name(names: Sequence[str] | None, cls: int) -> str:
    """The class's name, or its index when no names are known."""
    return names[cls] if names is not None and 0 <= cls < len(names) else str(cls)


def yolo_lines_from_xyxy(det: np.ndarray, shape_hw: tuple[int, int]) -> list[str]:
    """YOLO label lines `class cx cy w h conf` normalised to the image, one per detection."""
    h, w = shape_hw
    if len(det) == 0:
        return []
    xywhn = xyxy2xywhn(det[:, :4].astype(np.float64), w, h)  # (n, 4) normalised
    rows = np.concatenate([xywhn, det[:, 4:5].astype(np.float64)], axis=1)  # (n, 5)
    return [f"{int(c)} " + " ".join(f"{v:.6f}" for v in row) for c, row in zip(det[:, 5], rows)]


def coco_records_from_xyxy(det: np.ndarray, file_name: str, image_id: int | str,
                           names: Sequence[str] | None, frame: int = 0,
                           category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """COCO-style detection dicts (`bbox` = top-left x, y, width, height in pixels) plus the file name.

    `category_id` is `category_ids[class]` when given (the dataset's COCO ids), else the class index.
    """
    out = []
    for x1, y1, x2, y2, score, cls in det.tolist():
        cat = int(category_ids[int(cls)]) if category_ids is not None else int(cls)
        rec = {"image_id": image_id, "file_name": file_name, "category_id": cat,
               "category_name": class_name(names, int(cls)),
               "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
               "score": round(score, 5)}
        if frame:
            rec["frame"] = frame
        out.append(rec)
    return out


def annotate_xyxy(img_bgr: np.ndarray, det: np.ndarray, names: Sequence[str] | None,
                  thickness: int | None = None) -> np.ndarray:
    """Draw each detection with its class colour and `name score` label, in place; returns the image."""
    for x1, y1, x2, y2, score, cls in det.tolist():
        label = f"{class_name(names, int(cls))} {score:.2f}"
        draw_box(img_bgr, (x1, y1, x2, y2), label, class_color(int(cls), bgr=True), thickness)
    return img_bgr


def summary_text(det: np.ndarray, names: Sequence[str] | None) -> str:
    """'2 persons, 1 bus' (most frequent class first), or '(no detections)'."""
    if len(det) == 0:
        return "(no detections)"
    classes, counts = np.unique(det[:, 5].astype(int), return_counts=True)
    parts = []
    for c, n in sorted(zip(classes.tolist(), counts.tolist()), key=lambda t: -t[1]):
        name = class_name(names, c)
        if n > 1:
            name += "es" if name.endswith(("s", "sh", "ch", "x")) else "s"
        parts.append(f"{n} {name}")
    return ", ".join(parts)


class ResultWriter:
    """Saves annotated images/videos and txt labels in a background thread; collects JSON records.

    `put(frame, det)` queues one result (`frame` is a `sources.Frame`, `det` (n, 6) numpy
    in original pixels); `close()` drains the queue, finishes the videos and writes the JSON.
    """

    def __init__(self, save_dir: Path | None, names: Sequence[str] | None, save_img: bool = True,
                 save_txt: bool = False, save_json: bool = False, line_thickness: int | None = None,
                 maxsize: int = 16, category_ids: Sequence[int] | None = None) -> None:
        if save_dir is None and (save_img or save_txt or save_json):
            raise ValueError("ResultWriter: saving needs a save_dir")
        self.save_dir, self.names = Path(save_dir or "."), names
        self.category_ids = category_ids
        self.save_img, self.save_txt, self.save_json = save_img, save_txt, save_json
        self.thickness = line_thickness
        self.records: list[dict[str, Any]] = []
        self.saved: list[Path] = []  # images and videos written, in order
        self.write_s = 0.0  # seconds spent drawing and writing (writer thread)
        self._frames_seen = 0  # video/stream frames written to the JSON so far (their image ids)
        self._videos: dict[Path, cv2.VideoWriter] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="result-writer", daemon=True)
        self._thread.start()

    def put(self, frame: Any, det: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((frame, det))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            t0 = time.perf_counter()
            try:
                self._write(*item)
            except BaseException as err:  # re-raised in the main thread by put()/close()
                self._error = err
            self.write_s += time.perf_counter() - t0

    def _image_id(self, frame: Any, video: bool) -> int | str:
        """A photo's numeric stem (COCO's file names) or its stem; a video or stream frame an integer: its
        1-based position among the frames written (its frame number in the video goes in `frame`)."""
        if video:
            self._frames_seen += 1
            return self._frames_seen
        stem = frame.path.stem
        return int(stem) if stem.isnumeric() else stem

    def _write(self, frame: Any, det: np.ndarray) -> None:
        shape_hw = frame.img.shape[:2]
        video = frame.kind in ("video", "camera", "stream")
        if self.save_txt:
            rel = frame.rel.with_name(f"{frame.rel.stem}_{frame.frame}") if video else frame.rel
            txt = (self.save_dir / "labels" / rel).with_suffix(".txt")
            ensure_dir(txt.parent, OUTPUT_FIX)
            lines = yolo_lines_from_xyxy(det, shape_hw)
            txt.write_text("".join(line + "\n" for line in lines))
        if self.save_json:
            self.records += coco_records_from_xyxy(det, frame.rel.as_posix(), self._image_id(frame, video),
                                                   self.names, frame.frame if video else 0, self.category_ids)
        if not self.save_img:
            return
        img = annotate_xyxy(cv2.cvtColor(frame.img, cv2.COLOR_RGB2BGR), det, self.names, self.thickness)
        out = self.save_dir / frame.rel
        if video:
            self._video_frame(out.with_suffix(".mp4"), img, frame.fps)
        else:
            ensure_dir(out.parent, OUTPUT_FIX)
            if not cv2.imwrite(str(out), img):  # OpenCV says no more: a full disk, a read-only folder
                raise UserError(f"{out}: OpenCV could not write this image (disk full, or no permission to "
                                f"write there); {OUTPUT_FIX}")
            self.saved.append(out)

    def _video_frame(self, out: Path, img: np.ndarray, fps: float) -> None:
        writer = self._videos.get(out)
        if writer is None:
            ensure_dir(out.parent, OUTPUT_FIX)
            h, w = img.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps or 30.0, (w, h))
            if not writer.isOpened():
                raise OSError(f"{out}: OpenCV could not open an mp4 writer here")
            self._videos[out] = writer
            self.saved.append(out)
        writer.write(img)

    def close(self) -> Path | None:
        """Finish all queued work; returns the JSON path when `save_json`."""
        self._queue.put(_DONE)
        self._thread.join()
        for writer in self._videos.values():
            writer.release()
        self._videos.clear()
        if self._error is not None:
            raise self._error
        if not self.save_json:
            return None
        path = self.save_dir / "predictions.json"
        with atomic_write(path) as f:  # a full disk: one line naming it, no half-written JSON
            f.write(json.dumps(self.records).encode())
        return path
