"""Atomic file writes: a kill in the middle of a write leaves the previous file intact.

A write that fails because the disk (or the `ulimit -f` file-size limit) is full raises
`DiskFullError` naming the file, instead of an `OSError` or the `RuntimeError` torch wraps it in.
Temp files a kill left behind (`.<name>.*.tmp`) are found and removed by `remove_stale_temp_files`.
The written file gets the mode a plain `open()` would give it (0644 under umask 022), not the 0600 of
`tempfile.mkstemp`, so colleagues on a shared server can read the results.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from build_utils.errors import DiskFullError

logger = logging.getLogger(__name__)

# ENOSPC: no space left; EFBIG: over `ulimit -f` (with SIGXFSZ ignored); EDQUOT: over a disk quota
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def disk_full_cause(err: BaseException | None) -> OSError | None:
    """The `OSError` of a full disk behind `err`, following `__cause__`/`__context__` (torch.save wraps
    the failed write in a RuntimeError such as 'unexpected pos'); None when the disk is not the cause."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def current_umask() -> int:
    """The process umask, read without changing it (/proc/self/status on Linux; elsewhere it is set and
    restored at once, which other threads could observe only in that instant)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(name: str) -> str:
    return f".{name}."


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` only once fully written.

    The data goes to a temp file in the same folder (same filesystem, so the rename is atomic), is
    flushed and fsynced, then `os.replace`d over `path`. Any error, a KeyboardInterrupt included,
    removes the temp file and leaves `path` as it was; a full disk raises `DiskFullError`. The folder
    is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; give what open() would
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        cause = disk_full_cause(err)
        if cause is not None:
            raise DiskFullError(path, cause) from None
        raise


def remove_stale_temp_files(folder: str | Path, names: tuple[str, ...]) -> tuple[int, int]:
    """Delete the temp files `atomic_write` leaves when killed mid-write (`.<name>.*.tmp` for each of
    `names`); returns (files removed, bytes freed) and logs one line when there were any.

    Call it only when no other process writes into `folder` (a run starting or resuming).
    """
    folder = Path(folder)
    stale = [p for name in names for p in folder.glob(f"{_temp_prefix(name)}*.tmp") if p.is_file()]
    freed = 0
    for p in stale:
        size = p.stat().st_size
        p.unlink(missing_ok=True)
        freed += size
    if stale:
        logger.info("removed %d stale temporary file(s) left by an interrupted save from %s (%.1f MB freed)",
                    len(stale), folder, freed / 1e6)
    return len(stale), freed
