"""Reading the text files users edit by hand (`.cfg`, `.data`, `.names`, `hyp.yaml`) strictly.

Lenient reading hides mistakes: decoding with replacement characters turns a Latin-1 comment or
binary garbage into a confusing error further on, and PyYAML lets the last of two equal keys win
without a word. Here both are errors that name the file, the line and the byte or key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from build_utils.errors import ConfigError, UserError


def read_utf8(path: str | Path, error: type[UserError] = ConfigError) -> str:
    """Decode a file as UTF-8 (a leading BOM is dropped); the first bad byte raises `error` at its offset.

    NUL bytes count as bad: they are valid UTF-8 but mean binary data or UTF-16 without a BOM.
    """
    path = Path(path)
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(f"{path}:1: the file is UTF-16 text (it starts with a UTF-16 byte-order mark); "
                    f"save it as UTF-8")
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
        bad, why = len(data), ""
    except UnicodeDecodeError as err:
        bad = bom + err.start
        text, why = "", f"(0x{data[bad]:02x}) is not valid UTF-8 ({err.reason})"
    nul = data.find(b"\x00", 0, bad)
    if nul >= 0:
        bad, why = nul, "is a NUL byte, so this is binary or UTF-16 data, not a text file"
    if bad < len(data):
        line = data.count(b"\n", 0, bad) + 1
        raise error(f"{path}:{line}: byte offset {bad} {why}; save the file as UTF-8 text")
    return text


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a mapping with the same key twice (YAML requires unique keys)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                earlier = first_line.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if earlier is not None:
                raise ConstructorError(None, None, f"duplicate key {key!r} (first at line {earlier})",
                                       key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """`yaml.safe_load` that raises a `yaml.YAMLError` (with `problem_mark`) on duplicate keys."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: Path, error: type[UserError], fix: str) -> Any:
    """A hand-edited YAML file (hyp.yaml, the --evolve-space file) read strictly: bad UTF-8, a syntax
    error, a duplicate key or a tag such as `!!python/object` raise one `error` at `path:line`, ending
    with `fix` (e.g. 'start from cfg/hyp.yaml')."""
    try:
        return load_yaml_text(read_utf8(path, error))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise error(f"{where}: not valid YAML ({problem}); fix the line or {fix}") from None
