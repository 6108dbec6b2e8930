"""Inference inputs: an image, a folder (recursive), a glob, a `.txt` list, a video, a camera or a URL.

`resolve_source` turns the user's `--source` into a list of files (or a camera index) once, so
bad paths fail before any model work. `FramePrefetcher` then decodes in a background thread into
a bounded queue: OpenCV releases the GIL while decoding, so the next images are ready while the
model runs on the current ones, and the bound keeps memory flat on long videos. A file that
cannot be decoded is logged and listed in `skipped`; it never stops a folder.

URLs: `rtsp://`, `rtmp://` and `http(s)://` video go through `cv2.VideoCapture` (FFmpeg). A stream
that reports a frame count (a video file on a web server) is read frame by frame like a local video;
a live one (no frame count) through `LatestFrameReader`, which keeps only the newest frame and
reconnects a few times. An `http(s)://` image (by suffix or content type) is fetched once. The host
is contacted while resolving, so an unreachable URL fails before any model work, naming it.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from build_utils.dataset.augment import Letterboxed
from build_utils.dataset.image_io import decode_image_bytes, is_image_file, read_image
from build_utils.dataset.img_list import read_list_file
from build_utils.errors import DatasetError
from train_val_utils.predict.stream_reader import LatestFrameReader

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg", ".webm", ".asf"})
_GLOB_CHARS = set("*?[")
_DONE = object()  # end-of-stream marker in the prefetch queue
URL_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://")
DEFAULT_PORTS = {"rtsp": 554, "rtmp": 1935, "http": 80, "https": 443}
CONNECT_TIMEOUT_S = 10.0
STREAM_RECONNECTS = 3


@dataclass
class SourceSpec:
    """What `--source` named: `files` with their output paths relative to `root`, or a `camera` index."""

    files: list[Path] = field(default_factory=list)
    root: Path | None = None
    camera: int | None = None
    ignored: list[Path] = field(default_factory=list)  # files in a folder that are neither image nor video
    url: str | None = None  # a video stream URL; `files` then holds its output name
    fetched: dict[Path, np.ndarray] = field(default_factory=dict)  # images fetched from a URL, RGB

    def rel(self, path: Path) -> Path:
        """Output path of `path` below the run folder: subfolders of the source root are kept."""
        if self.root is None:
            return Path(path.name)
        return path.relative_to(self.root)


@dataclass
class Frame:
    """One decoded input. `img` is (H, W, 3) uint8 RGB; `net_input` is the prefetcher's transform of it
    (the letterboxed network input), made in the decode thread."""

    path: Path
    rel: Path
    index: int  # 1-based position of the file in the source
    total: int  # number of files (0 for a camera)
    img: np.ndarray
    kind: str  # "image", "video", "camera" or "stream" (a live URL)
    frame: int = 0  # 1-based frame number inside a video or camera stream
    frames: int = 0  # frames in the video (0 when unknown)
    fps: float = 0.0
    net_input: Letterboxed | None = None
    decode_s: float = 0.0  # seconds spent decoding and transforming this frame (prefetch thread)


def is_image(path: Path) -> bool:
    return is_image_file(path)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _common_root(files: list[Path]) -> Path | None:
    if not files:
        return None
    if len(files) == 1:
        return files[0].parent
    return Path(os.path.commonpath([str(f.resolve().parent) for f in files]))


def resolve_source(source: str | Path) -> SourceSpec:
    """Turn `--source` into a `SourceSpec`; raises `DatasetError` when it names nothing usable."""
    text = str(source).strip()
    if text.isdigit():
        return SourceSpec(camera=int(text))
    if text.lower().startswith(URL_SCHEMES):
        return resolve_url(text)
    path = Path(text)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file())
        usable = [p for p in found if is_image(p) or is_video(p)]
        ignored = [p for p in found if p not in set(usable)]
        spec = SourceSpec(files=usable, root=path, ignored=ignored)
    elif path.is_file() and path.suffix.lower() == ".txt":
        files = [p.resolve() for p in read_list_file(path)]
        spec = SourceSpec(files=files, root=_common_root(files))
    elif path.is_file():
        spec = SourceSpec(files=[path], root=None)
    elif _GLOB_CHARS & set(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        spec = SourceSpec(files=files, root=_common_root(files))
        spec.files = [f.resolve() for f in files]
    else:
        raise DatasetError(f"--source {text}: no such file, folder, glob or camera index; "
                           "pass an image, a video, a folder, a glob such as 'imgs/*.jpg', a .txt list or 0")
    for p in spec.ignored:
        logger.warning("skipped %s: not an image or video (unknown suffix %r)", p, p.suffix)
    if not spec.files:
        raise DatasetError(f"--source {text}: found no images or videos there")
    return spec


def _unreachable(url: str, reason: object) -> DatasetError:
    return DatasetError(f"--source {url}: cannot reach it ({reason}); check the address, the port and that "
                        "the server or camera is running")


def resolve_url(url: str) -> SourceSpec:
    """A URL source: an `http(s)` image is fetched now; a video URL is checked for a reachable host."""
    parts = urllib.parse.urlsplit(url)
    name = Path(parts.path).name or "stream"
    if parts.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as resp:  # noqa: S310 - user's URL
                kind = resp.headers.get_content_type()
                if kind.startswith("image/") or is_image(Path(name)):
                    img = decode_image_bytes(resp.read(), url)
                    path = Path(name if is_image(Path(name)) else f"{name}.{kind.split('/')[-1]}")
                    return SourceSpec(files=[path], fetched={path: img})
        except urllib.error.HTTPError as err:
            raise DatasetError(f"--source {url}: the server answered {err.code} {err.reason}; "
                               "check the URL") from None
        except (urllib.error.URLError, OSError) as err:
            raise _unreachable(url, getattr(err, "reason", err)) from None
    else:
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
            socket.create_connection((parts.hostname or "", port), timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as err:
            raise _unreachable(url, err) from None
    return SourceSpec(files=[Path(name).with_suffix(".mp4")], url=url)


class FramePrefetcher:
    """Iterate over the frames of a `SourceSpec`, decoded by a background thread.

    `transform(img_rgb) -> Letterboxed` also runs in that thread (e.g. letterboxing), so the consumer
    only stacks ready arrays. `maxsize` bounds the frames held in memory. Files that fail to
    decode are logged and appended to `skipped` as `(path, reason)`.
    """

    def __init__(self, spec: SourceSpec, transform: Callable[[np.ndarray], Letterboxed] | None = None,
                 maxsize: int = 16) -> None:
        self.spec = spec
        self.transform = transform
        self.skipped: list[tuple[Path, str]] = []
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.spec.files)

    def _put(self, item: Any) -> bool:
        """Put unless the consumer has gone; returns False when the producer should stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _skip(self, path: Path, reason: str) -> None:
        logger.warning("skipped %s: %s", path, reason)
        self.skipped.append((path, reason))

    def _frame(self, t0: float, **kwargs: Any) -> Frame:
        frame = Frame(**kwargs)
        if self.transform is not None:
            frame.net_input = self.transform(frame.img)
        frame.decode_s = time.perf_counter() - t0
        return frame

    def _video_frames(self, cap: cv2.VideoCapture, path: Path, index: int, kind: str) -> bool:
        """Put every frame of an opened capture; returns False when the consumer has gone."""
        total, rel = len(self.spec.files), self.spec.rel(path) if kind == "video" else Path(path.name)
        frames = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        n = 0
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ok, bgr = cap.read()
                if not ok:
                    break
                n += 1
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                frame = self._frame(t0, path=path, rel=rel, index=index, total=total, img=rgb, kind=kind,
                                    frame=n, frames=frames, fps=fps)
                if not self._put(frame):
                    return False
        finally:
            cap.release()
        if n == 0 and kind == "video":
            self._skip(path, "no frame could be decoded (corrupt or unsupported video)")
        elif kind == "video" and n < frames - 1 and not self._stop.is_set():  # the count may be off by one
            self._skip(path, f"only {n} of its {frames} frames could be decoded (cut short or damaged); the "
                             "rest are missing from the results")
        return True

    def _stream(self, url: str, path: Path) -> None:
        """A URL video: read in order when it has a known length, else newest-frame-only (live)."""
        def open_capture() -> cv2.VideoCapture:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG)

        cap = open_capture()
        if not cap.isOpened():
            raise DatasetError(f"--source {url}: OpenCV/FFmpeg cannot open this stream; check the URL and "
                               "that it serves video")
        if int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) > 0:  # a finite video served over the network
            self._video_frames(cap, path, 1, "video")
            return
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        cap.release()
        reader = LatestFrameReader(open_capture, url, reconnects=STREAM_RECONNECTS).start()
        try:
            for n, bgr in enumerate(reader.frames(), 1):
                t0 = time.perf_counter()
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                frame = self._frame(t0, path=path, rel=path, index=1, total=1, img=rgb, kind="stream",
                                    frame=n, fps=fps)
                if not self._put(frame):
                    return
        finally:
            reader.close()
            if reader.dropped:
                logger.info("stream %s: %d frames dropped to keep up (only the newest frame is processed)",
                            url, reader.dropped)

    def _produce(self) -> None:
        try:
            if self.spec.url is not None:
                self._stream(self.spec.url, self.spec.files[0])
                return
            if self.spec.camera is not None:
                cap = cv2.VideoCapture(self.spec.camera)
                if not cap.isOpened():
                    self._skip(Path(f"camera{self.spec.camera}"), "cannot open this camera index")
                else:
                    self._video_frames(cap, Path(f"camera{self.spec.camera}.mp4"), 1, "camera")
                return
            total = len(self.spec.files)
            for index, path in enumerate(self.spec.files, 1):
                if self._stop.is_set():
                    return
                if is_video(path):
                    cap = cv2.VideoCapture(str(path))
                    if not cap.isOpened():
                        self._skip(path, "cannot open this video")
                    elif not self._video_frames(cap, path, index, "video"):
                        return
                    continue
                t0 = time.perf_counter()
                try:
                    img = self.spec.fetched[path] if path in self.spec.fetched else read_image(path)
                except DatasetError as err:
                    self._skip(path, str(err))
                    continue
                if not self._put(self._frame(t0, path=path, rel=self.spec.rel(path), index=index, total=total,
                                             img=img, kind="image")):
                    return
        except BaseException as err:  # surface producer bugs in the consumer instead of hanging it
            self._put(err)
        finally:
            self._put(_DONE)

    def __iter__(self) -> Iterator[Frame]:
        self._stop.clear()
        self._thread = threading.Thread(target=self._produce, name="frame-prefetch", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer (e.g. the consumer stopped early) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        while not self._queue.empty():
            self._queue.get_nowait()
