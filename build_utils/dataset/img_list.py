"""Which images a dataset path means, and where each image's label file is.

A dataset path is a `.txt` list (one image per line; relative entries are resolved against the
list's own folder, so a dataset folder can be moved as a whole), a folder (searched recursively),
a glob pattern, or a Python list of any of these.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from build_utils.dataset.image_io import is_image_file
from build_utils.errors import DatasetError


def read_list_file(list_path: Path) -> list[Path]:
    """A `.txt` list: one path per line (blank lines and `#` comments skipped).

    A relative entry is resolved against the list's own folder, so a dataset folder can be moved
    as a whole; an entry that does not exist there is kept relative to the working directory.
    """
    root = list_path.parent
    out = []
    for line in list_path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry)
        out.append(p if p.is_absolute() or not (root / p).exists() and p.exists() else root / p)
    return out


def _expand_one(path: str | Path) -> list[str]:
    text = str(path)
    p = Path(text)
    if p.is_dir():  # os.walk: a listing of thousands of files without a Path object per file
        return sorted(os.path.join(d, f) for d, _, names in os.walk(text, followlinks=True)
                      for f in names if is_image_file(f))
    if p.is_file() and p.suffix.lower() == ".txt":
        return [str(f) for f in read_list_file(p) if is_image_file(f)]
    if p.is_file() and is_image_file(p):
        return [text]
    if any(ch in text for ch in "*?["):
        return sorted(f for f in glob.glob(text, recursive=True) if is_image_file(f))
    raise DatasetError(
        f"{text}: no such file or folder; pass a .txt list of images, a folder of images or a glob"
    )


def list_image_files(path: str | Path | list[str | Path]) -> list[str]:
    """Image paths (normalised, duplicates removed, order kept) that `path` refers to."""
    sources = path if isinstance(path, (list, tuple)) else [path]
    files: list[str] = []
    for source in sources:
        files.extend(os.path.normpath(f) for f in _expand_one(source))
    return list(dict.fromkeys(files))


def img2label_path(img_path: str) -> str:
    """The label file: the last `/images/` component replaced by `/labels/`, suffix `.txt`.

    Without an `images` folder in the path the label sits beside the image.
    """
    sep = os.sep
    marker = f"{sep}images{sep}"
    head, found, tail = img_path.rpartition(marker)
    base = f"{head}{sep}labels{sep}{tail}" if found else img_path
    return os.path.splitext(base)[0] + ".txt"


def label2img_dir(label_dir: str) -> str:
    """The image folder of a label folder (the inverse of `img2label_path`'s folder rule)."""
    sep = os.sep
    head, found, tail = (label_dir + sep).rpartition(f"{sep}labels{sep}")
    return (f"{head}{sep}images{sep}{tail}" if found else label_dir + sep).rstrip(sep)
