"""Plots drawn off the training loop's critical path, in one background thread.

matplotlib and JPEG encoding cost a second or more per figure on a small CPU; a run that waited for
them after every epoch (results.png), for labels.jpg and train_batch*.jpg, and for the final
evaluation's curves would spend that time idle. `PlotQueue.submit` returns at once; the one worker
thread draws jobs in order (pyplot is used from that thread alone), a failing plot only logs a
warning, and `close()` waits for what is queued before the run reports where its files are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)


class PlotQueue:
    """A one-thread queue of plotting jobs; with `enabled=False` (ranks > 0) every job is dropped."""

    def __init__(self, enabled: bool = True) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plots") if enabled else None
        self._pending: list[Future] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` in the plot thread; arguments must not change afterwards (pass copies)."""
        if self._pool is not None:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._pool.submit(self._run, fn, *args))

    @staticmethod
    def _run(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:  # a plot must never end a training run
            logger.warning("plot %s failed: %s", getattr(fn, "__name__", fn), err)

    def close(self) -> None:
        """Wait for every queued plot, then stop the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
