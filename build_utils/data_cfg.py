"""Darknet `.data` files and class-name lists: where a dataset's splits, names and category ids live.

A `.data` file is edited by hand and names other files, so every problem is a `ConfigError` whose message
starts with `path:line:`, and relative paths are resolved the way users expect (next to the `.data` file,
then the working directory, then the project). A dataset YAML gives the same dict (`data_yaml.py`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from build_utils.data_yaml import is_data_yaml, parse_category_ids, parse_data_yaml
from build_utils.errors import ConfigError
from build_utils.parse_config import parse_number
from build_utils.project_files import PROJECT_ROOT, locate
from build_utils.text_io import read_utf8


def load_class_names(path: str | Path) -> list[str]:
    """One class name per non-empty line, surrounding whitespace stripped."""
    path = locate(path)
    if not path.is_file():
        raise ConfigError(f"{path}:0: names file not found; it should list one class name per line")
    return [line.strip() for line in read_utf8(path).splitlines() if line.strip()]


_DATA_PATH_KEYS = ("train", "valid", "names")


def _resolve_data_path(value: str, key: str, data_path: Path, lineno: int, required: bool) -> str | None:
    """Relative paths are tried against the `.data` file's folder first, then the working directory, then
    the project (the shipped `.data` files name paths from the project's root)."""
    candidate = Path(value).expanduser()
    tried = [candidate] if candidate.is_absolute() else [data_path.parent / candidate, Path.cwd() / candidate,
                                                         PROJECT_ROOT / candidate]
    for place in tried:
        if place.exists():
            return str(place.resolve())
    if not required:
        return None
    looked = " and ".join(str(p) for p in tried)
    raise ConfigError(f"{data_path}:{lineno}: {key}={value} not found; looked in {looked}")


def parse_data_cfg(path: str | Path) -> dict[str, Any]:
    """Parse a Darknet `.data` file (or a dataset YAML: `data_yaml.parse_data_yaml`); referenced files
    resolved, `class_names` loaded and counted, `category_ids` read into a list of ints.

    `train`/`valid`/`names` must exist; other keys naming an existing file or folder are resolved,
    the rest are kept as typed values (ints/floats where numeric, else strings).
    """
    path = locate(path)
    if is_data_yaml(path):
        return parse_data_yaml(path)
    if path.is_dir():
        raise ConfigError(f"{path}:0: is a folder; pass its .data file or dataset YAML (make one with "
                          f"python data/scripts/make_data.py --root {path})")
    if not path.is_file():
        raise ConfigError(f"{path}:0: .data file not found; pass e.g. data/coco128.data")
    out: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for lineno, raw_line in enumerate(read_utf8(path).splitlines(), start=1):
        line = re.split(r"[#;]", raw_line, maxsplit=1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ConfigError(f"{path}:{lineno}: expected 'key=value', got {line!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        out[key], lines[key] = value, lineno
    for key in ("classes", *_DATA_PATH_KEYS):
        if key not in out:
            raise ConfigError(
                f"{path}:1: missing '{key}='; a .data file needs classes, train, valid and names"
            )
    try:
        out["classes"] = int(out["classes"])
    except ValueError:
        raise ConfigError(
            f"{path}:{lines['classes']}: classes={out['classes']!r} is not an integer"
        ) from None
    for key, value in list(out.items()):
        if key == "classes":
            continue
        required = key in _DATA_PATH_KEYS
        resolved = _resolve_data_path(value, key, path, lines[key], required)
        if resolved is not None:
            out[key] = resolved
        else:
            try:
                out[key] = parse_number(value)
            except ValueError:
                out[key] = value
    names = load_class_names(out["names"])
    if len(names) != out["classes"]:
        raise ConfigError(
            f"{path}:{lines['classes']}: classes={out['classes']} but {out['names']} "
            f"lists {len(names)} names; "
            f"make them agree (and regenerate the cfg with data/scripts/make_cfg.py --classes {len(names)})"
        )
    out["class_names"] = names
    if "category_ids" in out:
        out["category_ids"] = parse_category_ids(out["category_ids"], f"{path}:{lines['category_ids']}")
    return out
