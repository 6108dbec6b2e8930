"""Files the project ships (`cfg/hyp.yaml`, `cfg/*.cfg`, `cfg/evolve.yaml`, `data/*.names`, `data/*.data`),
found whatever the working directory.

Users run the scripts from anywhere (`cd ~/mydata && python ~/yolo/train.py --data my.data`). Their own
paths mean what they say from the working directory; only a relative path that does not exist there
falls back to the project's own copy, so the defaults (`--hyp cfg/hyp.yaml`, `--cfg cfg/yolov3-spp.cfg`)
work from any folder and a user's file of the same name still wins.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def locate(path: str | Path) -> Path:
    """`path` when it exists from the working directory (or is absolute); else the project's file of that
    relative path when it exists; else `path` unchanged, so the caller's not-found error names it."""
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute():
        return given
    shipped = PROJECT_ROOT / given
    return shipped if shipped.exists() else given
