"""Dataset YAML files (the format public datasets ship in) read into the dict `parse_data_cfg` returns.

    path: ../datasets/coco128   # dataset root; relative to the YAML's folder, else the working directory
    train: images/train         # a folder, a .txt list, a glob, or a list of these (relative to path)
    val: images/val             # `valid` is accepted too
    test: images/test           # optional
    nc: 80                      # optional; must equal the number of names when given
    names: [person, bicycle]    # a list, or a dict {0: person, 1: bicycle} with ids 0..nc-1
    category_ids: [1, 2]        # optional: COCO category id of each class (predictions.json, evaluation)

So train.py, validation.py and predict.py take a YAML wherever they take a `.data`, and nothing
below them changes: the result has `classes`, `train`, `valid`, `names` (the YAML's path),
`class_names`, and the other keys as given (paths resolved when they exist).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from build_utils.errors import ConfigError

YAML_SUFFIXES = (".yaml", ".yml")


def is_data_yaml(path: str | Path) -> bool:
    return Path(path).suffix.lower() in YAML_SUFFIXES


def parse_category_ids(value: Any, source: str) -> list[int] | None:
    """`category_ids`: a list, a JSON file, a JSON list or comma-separated ids (class index -> COCO id)."""
    if value is None:
        return None
    try:
        if isinstance(value, list | tuple):
            return [int(v) for v in value]
        if isinstance(value, str | Path) and Path(str(value)).is_file():
            return [int(v) for v in json.loads(Path(str(value)).read_text())]
        text = str(value).strip()
        ids = json.loads(text) if text.startswith("[") else [int(v) for v in text.split(",") if v.strip()]
        return [int(v) for v in (ids if isinstance(ids, list) else [ids])]
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{source}: category_ids={value!r} is not a list of integers ({err}); "
                          "write it as a JSON list or comma-separated ids, one per class") from None


def _names(raw: Any, source: str) -> list[str]:
    if isinstance(raw, dict):
        try:
            ids = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: names keys must be class ids 0, 1, ...; "
                              f"got {list(raw)[:3]}") from None
        if ids != list(range(len(ids))):
            raise ConfigError(f"{source}: names ids must run 0..{len(ids) - 1} without gaps; got {ids[:10]}")
        return [str(raw[k] if k in raw else raw[str(k)]).strip() for k in ids]
    if isinstance(raw, list) and raw:
        return [str(n).strip() for n in raw]
    raise ConfigError(f"{source}: names must be a list [a, b, ...] or a dict {{0: a, 1: b}}; got {raw!r}")


def _resolve(value: str, root: Path, key: str, source: str) -> str:
    """A path relative to the dataset root; globs are kept as written (under the root)."""
    p = Path(value).expanduser()
    place = p if p.is_absolute() else root / p
    if place.exists() or any(ch in value for ch in "*?["):
        return str(place.resolve()) if place.exists() else str(place)
    raise ConfigError(f"{source}: {key}: {value} not found (looked at {place})")


def _split(value: Any, root: Path, key: str, source: str) -> str | list[str]:
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError(f"{source}: {key}: an empty list; give at least one folder or .txt list")
        return [_resolve(str(v), root, key, source) for v in value]
    return _resolve(str(value), root, key, source)


def _root(raw: dict[str, Any], path: Path) -> Path:
    """`path:` against the YAML's folder first, then the working directory (as `.data` paths are)."""
    given = raw.get("path")
    if given is None:
        return path.parent.resolve()
    p = Path(str(given)).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [path.parent / p, Path.cwd() / p]
    for place in candidates:
        if place.is_dir():
            return place.resolve()
    looked = " and ".join(str(c) for c in candidates)
    raise ConfigError(f"{path}: path: {given} not found; looked in {looked}. Point path: at the dataset root")


def parse_data_yaml(path: str | Path) -> dict[str, Any]:
    """Read a dataset YAML into `parse_data_cfg`'s dict (`classes`, `train`, `valid`, `names`, ...)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}:0: dataset YAML not found; pass e.g. data/coco128.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise ConfigError(f"{path}:{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}:1: expected a mapping with path, train, val and names")
    source = str(path)
    for key in ("train", "names"):
        if key not in raw:
            raise ConfigError(f"{path}: missing '{key}:'; a dataset YAML needs train, val and names")
    if "val" not in raw and "valid" not in raw:
        raise ConfigError(f"{path}: missing 'val:'; a dataset YAML needs train, val and names")
    names = _names(raw["names"], source)
    if raw.get("nc") is not None and int(raw["nc"]) != len(names):
        raise ConfigError(f"{path}: nc: {raw['nc']} but names lists {len(names)} classes; make them agree "
                          f"(and regenerate the cfg with data/scripts/make_cfg.py --classes {len(names)})")
    root = _root(raw, path)
    out: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("path", "nc", "names", "val")}
    out.update(classes=len(names), names=str(path.resolve()), class_names=names, path=str(root))
    out["train"] = _split(raw["train"], root, "train", source)
    out["valid"] = _split(raw.get("val", raw.get("valid")), root, "val", source)
    if raw.get("test"):
        out["test"] = _split(raw["test"], root, "test", source)
    for key in ("valid_json", "coco_json"):
        if out.get(key):
            out[key] = _resolve(str(out[key]), root, key, source)
    if out.get("category_ids") is not None:
        out["category_ids"] = parse_category_ids(out["category_ids"], source)
    return out
