"""Run folders `runs/<task>/expN`, numbered the way users expect, output folders that may fail, the
lock that keeps one live run per folder, and the write check done before training starts."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from pathlib import Path

from build_utils.atomic import DISK_FULL_ERRNOS
from build_utils.errors import DiskFullError, UserError

LOGGER = logging.getLogger(__name__)


def increment_path(
    project: str | Path, name: str = "exp", exist_ok: bool = False, mkdir: bool = True
) -> Path:
    """Return `project/name`, or `project/name2`, `name3`, ... when it already exists.

    With `exist_ok` the plain `project/name` is reused. The folder is created unless `mkdir` is False.
    """
    project = Path(project)
    path = project / name
    if path.exists() and not exist_ok:
        pattern = re.compile(rf"^{re.escape(name)}(\d+)$")
        taken = [int(m.group(1)) for p in project.glob(f"{name}*") if (m := pattern.match(p.name))]
        path = project / f"{name}{max(taken, default=1) + 1}"
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _folder_error(path: Path, err: OSError, fix: str) -> UserError:
    """Name the folder, the component in the way (a regular file) if any, and the fix."""
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    why = f"{blocker} is a regular file" if blocker is not None else (err.strerror or type(err).__name__)
    return UserError(f"cannot create the output folder {path}: {why}; {fix}")


def ensure_dir(path: str | Path, fix: str) -> Path:
    """`mkdir -p path`; failure (a file in the way, no permission, read-only) is a `UserError` ending
    with `fix` (which flag to change)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _folder_error(path, err, fix) from None
    return path


def make_run_dir(project: str | Path, name: str = "exp", exist_ok: bool = False) -> Path:
    """`increment_path` for the entry scripts: a folder that cannot be created is a `UserError`."""
    try:
        return increment_path(project, name, exist_ok=exist_ok)
    except OSError as err:
        raise _folder_error(Path(project) / name, err,
                            "pass --project (and --name) with a folder you can write to") from None


LOCK_NAME = ".run.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _read_lock(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class RunLock:
    """One live run per folder: `folder/.run.lock` holds the PID and host of the run writing there.

    `--exist-ok` and `--resume` reuse a folder; two live runs in one would interleave results.csv and
    leave whichever weights finished last. A lock left by a process that no longer exists on this host
    (killed with -9, a crashed node) is taken over with a warning; one from another host cannot be
    checked, so it is refused with the command that removes it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._take_over_if_stale(me)
                continue
            except OSError as err:
                raise _write_error(self.path.parent, err) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise UserError(f"{self.path}: could not take the run lock (another run keeps taking it); "
                        "pass another --name")

    def _take_over_if_stale(self, me: dict) -> None:
        owner = _read_lock(self.path)
        pid, host = owner.get("pid"), owner.get("host")
        if host == me["host"] and isinstance(pid, int) and pid != me["pid"] and _pid_alive(pid):
            raise UserError(f"{self.path.parent} is in use by a live run (PID {pid} on this host, started "
                            f"{owner.get('started', '?')}); pass another --name (or --project), or wait "
                            "for that run to end")
        if host is not None and host != me["host"]:
            raise UserError(f"{self.path.parent} is in use by a run on host {host} (PID {pid}); pass another "
                            f"--name, or if that run is gone: rm {self.path}")
        if pid != me["pid"]:
            LOGGER.warning("%s: taking over the lock of PID %s on %s, which is no longer running", self.path,
                           pid, host or "an unknown host")
        stale = self.path.with_name(f"{LOCK_NAME}.stale{os.getpid()}")
        try:  # rename first: of two runs taking over at once, only one finds the stale lock to move
            os.replace(self.path, stale)
            stale.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.held and _read_lock(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


def _write_error(folder: Path, err: OSError) -> UserError:
    if err.errno in DISK_FULL_ERRNOS:
        return DiskFullError(folder, err, f"; free space in {folder} before starting")
    return UserError(f"cannot write into {folder} ({err.strerror or type(err).__name__}); pass --project "
                     "(and --name) with a folder you can write to, or fix its permissions")


def check_writable(*folders: str | Path) -> None:
    """Create and delete a small file in each folder, so a read-only or full place fails before any
    training starts (one line naming it) instead of after the first epoch."""
    for folder in folders:
        probe = Path(folder) / f".write_test.{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
            probe.unlink()
        except OSError as err:
            probe.unlink(missing_ok=True)
            raise _write_error(Path(folder), err) from None
