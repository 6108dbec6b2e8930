"""`LatestFrameReader`: read a live stream (rtsp, rtmp, http video without an end) in its own thread.

Only the newest frame is kept: when inference is slower than the camera, older frames are dropped
instead of queueing, so the results never lag behind the scene. A stream that stops delivering is
reopened a few times with a growing wait; after that the reader stops and says why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class LatestFrameReader:
    """`open_capture()` returns a `cv2.VideoCapture`-like object (`isOpened`, `read`, `release`).

    Iterate with `frames()`; each item is the newest (H, W, 3) BGR frame not yet seen. `dropped` counts
    frames that were replaced before the consumer took them; `error` says why the stream ended early.
    """

    def __init__(self, open_capture: Callable[[], Any], name: str, reconnects: int = 3,
                 retry_wait_s: float = 1.0) -> None:
        self.open_capture, self.name = open_capture, name
        self.reconnects, self.retry_wait_s = reconnects, retry_wait_s
        self.dropped = 0
        self.error: str | None = None
        self.frames_read = 0
        self._latest: np.ndarray | None = None
        self._seq = 0
        self._done = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LatestFrameReader:
        self._thread = threading.Thread(target=self._run, name="stream-reader", daemon=True)
        self._thread.start()
        return self

    def _open(self) -> Any | None:
        cap = self.open_capture()
        if cap is not None and cap.isOpened():
            return cap
        if cap is not None:
            cap.release()
        return None

    def _run(self) -> None:
        failures, cap = 0, None
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap = self._open()
                ok, frame = cap.read() if cap is not None else (False, None)
                if ok:
                    failures = 0
                    with self._cond:
                        self._latest, self._seq = frame, self._seq + 1
                        self.frames_read += 1
                        self._cond.notify_all()
                    continue
                if cap is not None:
                    cap.release()
                    cap = None
                failures += 1
                if failures > self.reconnects:
                    what = "dropped" if self.frames_read else "cannot be opened"
                    self.error = (f"stream {self.name} {what}; gave up after {self.reconnects} reconnect "
                                  "attempts (check the camera/server and the URL)")
                    logger.error("%s", self.error)
                    break
                logger.warning("stream %s: no frame; reconnecting (%d/%d)", self.name, failures,
                               self.reconnects)
                self._stop.wait(self.retry_wait_s * failures)
        finally:
            if cap is not None:
                cap.release()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def frames(self) -> Iterator[np.ndarray]:
        """Newest unseen frames until the stream ends (or `close()`); blocks while none is new."""
        seen = 0
        while True:
            with self._cond:
                while self._seq == seen and not self._done:
                    self._cond.wait()
                if self._seq == seen:  # done and nothing new
                    return
                self.dropped += self._seq - seen - 1
                seen, frame = self._seq, self._latest
            yield frame  # type: ignore[misc]

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        self._stop.set()
        self.join(timeout=5)
