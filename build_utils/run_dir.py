"""Run folders `runs/<task>/expN`, numbered the way users expect."""

from __future__ import annotations

import re
from pathlib import Path


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
