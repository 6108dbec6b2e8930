"""Run folders `runs/<task>/expN`, numbered the way users expect, and output folders that may fail."""

from __future__ import annotations

import re
from pathlib import Path

from build_utils.errors import UserError


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
