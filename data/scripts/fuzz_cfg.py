"""Fuzz the cfg contract: seeded random edits of real cfgs must build and run, or raise a `ConfigError`.

The contract of `DarkNet`: any cfg either builds a model that runs forward at every multiple of
its largest stride, or raises `ConfigError` whose message starts with `path:line:`. Each mutant
(a deleted or duplicated line or section, a number set to 0/-1/huge/float/garbage, swapped
values, a typical hand edit such as pad=0 or an extra stride=2, binary garbage, Latin-1 or UTF-16
text) is written to a file, built, and, if it builds, run in eval mode on one image at two input
sizes that are multiples of its max stride. Anything else (another exception, a forward crash,
a YOLO grid that disagrees with its stride) is a violation; the exit code is 1 if there is any.

    python data/scripts/fuzz_cfg.py --seed 1 --n 200
    python data/scripts/fuzz_cfg.py --seed 7 --n 50 --cfg cfg/yolov3.cfg --img-size 64
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from build_utils.cli import ArgumentParser
from build_utils.errors import ConfigError
from modules.model import DarkNet

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CFGS = (REPO / "cfg" / "yolov3-tiny.cfg", REPO / "cfg" / "yolov3-spp.cfg")
ERROR, RAN, VIOLATION = "ConfigError with path:line", "built and ran", "VIOLATION"

# Replacement values for a number: the edge cases users and tools produce.
ODD_NUMBERS = ("0", "-1", "-512", "1", "2", "3", "5", "65537", "2147483647", "2147483648",
               "99999999999999999999", "1e20", "0.5", "-5", "nan", "inf", "abc", "", "1,2", "0x10")
# Typical hand edits per section type: (key, value) set in one section of that type.
HAND_EDITS = {
    "net": [("channels", "0"), ("channels", "1"), ("channels", "4"), ("width", "0")],
    "convolutional": [("pad", "0"), ("size", "2"), ("size", "0"), ("size", "-1"), ("stride", "2"),
                      ("stride", "-1"), ("stride", "2147483648"), ("filters", "0"), ("filters", "-512"),
                      ("filters", "2147483648"), ("filters", "99999999999999999999"), ("groups", "2"),
                      ("groups", "3"), ("groups", "0"), ("dilation", "2"), ("activation", "gelu"),
                      ("batch_normalize", "0"), ("size", "1e20")],
    "maxpool": [("stride", "0"), ("stride", "1"), ("stride", "3"), ("size", "0"), ("size", "3")],
    "upsample": [("stride", "0"), ("stride", "1"), ("stride", "3"), ("stride", "4"), ("stride", "-2")],
    "route": [("layers", "0"), ("layers", "-1,-2"), ("layers", "-3"), ("groups", "0"), ("groups", "2"),
              ("groups", "3"), ("group_id", "5")],
    "shortcut": [("from", "-2"), ("from", "0"), ("from", "-4"), ("activation", "leaky")],
    "yolo": [("classes", "0"), ("classes", "1"), ("mask", "3,3,3"), ("mask", "9"),
             ("anchors", "-10,14, 23,27, 37,58"), ("scale_x_y", "-5"), ("scale_x_y", "1.1"), ("num", "2")],
}
_KEY_RE = re.compile(r"^\s*([A-Za-z_]+)\s*=\s*(.*?)\s*$")
_SECTION_RE = re.compile(r"^\s*\[([^\]]*)\]")


def _key_lines(lines: list[str]) -> list[int]:
    return [i for i, ln in enumerate(lines) if _KEY_RE.match(ln) and not ln.lstrip().startswith("#")]


def _sections(lines: list[str]) -> list[tuple[str, int, int]]:
    """(type, first line index, end index) of each [section] block."""
    starts = [(m.group(1).strip().lower(), i) for i, ln in enumerate(lines) if (m := _SECTION_RE.match(ln))]
    ends = [s for _, s in starts[1:]] + [len(lines)]
    return [(kind, start, end) for (kind, start), end in zip(starts, ends)]


def delete_line(lines: list[str], rng: random.Random) -> tuple[str, list[str]]:
    i = rng.choice([i for i, ln in enumerate(lines) if ln.strip()])
    return f"delete line {i + 1} {lines[i].strip()!r}", lines[:i] + lines[i + 1:]


def duplicate_line(lines: list[str], rng: random.Random) -> tuple[str, list[str]]:
    i = rng.choice([i for i, ln in enumerate(lines) if ln.strip()])
    return f"duplicate line {i + 1} {lines[i].strip()!r}", lines[:i + 1] + lines[i:]


def set_number(lines: list[str], rng: random.Random) -> tuple[str, list[str]]:
    numeric = [i for i in _key_lines(lines) if re.search(r"\d", _KEY_RE.match(lines[i]).group(2))]
    i = rng.choice(numeric)
    key, value = _KEY_RE.match(lines[i]).groups()
    parts = value.split(",")
    j = rng.randrange(len(parts))
    parts[j] = rng.choice(ODD_NUMBERS)
    new = f"{key}={','.join(parts)}"
    return f"line {i + 1}: {key}={value} -> {new}", lines[:i] + [new] + lines[i + 1:]


def swap_values(lines: list[str], rng: random.Random) -> tuple[str, list[str]]:
    a, b = rng.sample(_key_lines(lines), 2)
    (ka, va), (kb, vb) = _KEY_RE.match(lines[a]).groups(), _KEY_RE.match(lines[b]).groups()
    out = list(lines)
    out[a], out[b] = f"{ka}={vb}", f"{kb}={va}"
    return f"swap values of line {a + 1} ({ka}) and line {b + 1} ({kb})", out


def delete_section(lines: list[str], rng: random.Random) -> tuple[str, list[str]]:
    kind, start, end = rng.choice(_sections(lines))
    return f"delete [{kind}] at line {start + 1}", lines[:start] + lines[end:]


def duplicate_section(lines: list[str], rng: random.Random) -> tuple[str, list[str]]:
    kind, start, end = rng.choice(_sections(lines)[1:])
    return f"duplicate [{kind}] at line {start + 1}", lines[:end] + lines[start:end] + lines[end:]


def hand_edit(lines: list[str], rng: random.Random) -> tuple[str, list[str]]:
    """Set one key of one section to a value from `HAND_EDITS` (replacing the key if present)."""
    kind, start, end = rng.choice([s for s in _sections(lines) if s[0] in HAND_EDITS])
    key, value = rng.choice(HAND_EDITS[kind])
    own = [i for i in range(start + 1, end) if (m := _KEY_RE.match(lines[i])) and m.group(1) == key]
    out = list(lines)
    if own:
        out[own[0]] = f"{key}={value}"
    else:
        out.insert(start + 1, f"{key}={value}")
    return f"[{kind}] at line {start + 1}: {key}={value}", out


TextMutation = Callable[[list[str], random.Random], tuple[str, list[str]]]
TEXT_MUTATIONS: dict[str, TextMutation] = {
    "delete_line": delete_line, "duplicate_line": duplicate_line, "set_number": set_number,
    "swap_values": swap_values, "delete_section": delete_section, "duplicate_section": duplicate_section,
    "hand_edit": hand_edit,
}


def encoding_mutation(text: str, rng: random.Random) -> tuple[str, str, bytes]:
    """(kind, description, bytes): binary garbage, Latin-1, UTF-16, a UTF-8 BOM, CRLF or truncation."""
    raw = text.encode("utf-8")
    kind = rng.choice(["binary", "latin1", "utf16", "utf16le", "bom", "crlf", "truncate"])
    at = rng.randrange(len(raw))
    if kind == "binary":
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        return kind, f"{len(junk)} random bytes at offset {at}", raw[:at] + junk + raw[at:]
    if kind == "latin1":
        line = "# réglé pour l'été\n".encode("latin-1")
        return kind, "a Latin-1 comment first", line + raw
    if kind in ("utf16", "utf16le"):
        return kind, f"saved as {kind}", text.encode("utf-16" if kind == "utf16" else "utf-16-le")
    if kind == "bom":
        return kind, "UTF-8 byte-order mark", b"\xef\xbb\xbf" + raw
    if kind == "crlf":
        return kind, "CRLF line ends", raw.replace(b"\n", b"\r\n")
    return kind, f"truncated at byte {at}", raw[:at]


@dataclass
class Mutant:
    base: str  # cfg file name the mutant came from
    kind: str
    description: str
    data: bytes


def make_mutants(cfgs: list[Path], n: int, seed: int, weights: list[float] | None = None) -> list[Mutant]:
    """`n` seeded mutants of `cfgs` (chosen with `weights`); a fifth are encoding mutations."""
    rng = random.Random(seed)
    texts = {p: p.read_text(encoding="utf-8") for p in cfgs}
    mutants = []
    for _ in range(n):
        base = rng.choices(cfgs, weights=weights)[0]
        text = texts[base]
        if rng.random() < 0.2:
            kind, desc, data = encoding_mutation(text, rng)
        else:
            kind = rng.choice(list(TEXT_MUTATIONS))
            desc, lines = TEXT_MUTATIONS[kind](text.splitlines(), rng)
            data = ("\n".join(lines) + "\n").encode("utf-8")
        mutants.append(Mutant(base.name, kind, desc, data))
    return mutants


def forward_sizes(max_stride: int, img_size: int) -> list[tuple[int, int]]:
    """(h, w) inputs: `img_size` rounded up to a multiple of the stride, and the smallest, non-square."""
    s = max_stride * max(1, math.ceil(img_size / max_stride))
    return [(s, s), (max_stride, 2 * max_stride)]


def _run_forward(model: DarkNet, h: int, w: int) -> str | None:
    """None when eval forward at (h, w) gives one decoded row per grid cell and anchor; else why not."""
    with torch.no_grad():
        pred, raw = model(torch.rand(1, 3, h, w))
    for head, p in zip(model.yolo_modules(), raw):  # p: (1, na, ny, nx, 5+nc)
        if tuple(p.shape[2:4]) != (h // head.stride, w // head.stride):
            return f"head of stride {head.stride} has a {p.shape[2]}x{p.shape[3]} grid at input {h}x{w}"
    n_rows = sum(p.shape[1] * p.shape[2] * p.shape[3] for p in raw)
    if tuple(pred.shape) != (1, n_rows, model.nc + 5):
        return f"decoded output {tuple(pred.shape)}, expected (1, {n_rows}, {model.nc + 5})"
    return None


def classify(path: Path, img_size: int) -> tuple[str, str]:
    """(outcome, detail) for the cfg file at `path`: ERROR, RAN or VIOLATION."""
    try:
        model = DarkNet(path).eval()
    except ConfigError as err:
        if re.match(rf"{re.escape(str(path))}:\d+: \S", str(err)):
            return ERROR, str(err)
        return VIOLATION, f"ConfigError without {path}:line: {err}"
    except Exception as err:  # noqa: BLE001 - anything but a ConfigError breaks the contract
        return VIOLATION, f"build raised {type(err).__name__}: {err}"
    for h, w in forward_sizes(model.max_stride, img_size):
        try:
            problem = _run_forward(model, h, w)
        except Exception as err:  # noqa: BLE001
            problem = f"forward at {h}x{w} raised {type(err).__name__}: {err}"
        if problem:
            return VIOLATION, problem
    return RAN, f"max stride {model.max_stride}"


def run_fuzz(mutants: list[Mutant], img_size: int, workdir: Path) -> list[tuple[Mutant, str, str]]:
    """Write each mutant to `workdir` and classify it; returns (mutant, outcome, detail) per mutant."""
    results = []
    for k, mutant in enumerate(mutants):
        path = workdir / f"mutant{k:04d}-{mutant.base}"
        path.write_bytes(mutant.data)
        results.append((mutant, *classify(path, img_size)))
    return results


def summary_table(results: list[tuple[Mutant, str, str]]) -> str:
    """Counts per mutation kind and outcome, a total row, then one line per violation."""
    counts = Counter((m.kind, outcome) for m, outcome, _ in results)
    kinds = sorted({m.kind for m, _, _ in results})
    rows = [f"{'mutation':<18}{ERROR:>30}{RAN:>16}{VIOLATION:>11}"]
    for kind in kinds + ["total"]:
        got = [sum(c for (k, o), c in counts.items() if o == outcome and kind in (k, "total"))
               for outcome in (ERROR, RAN, VIOLATION)]
        rows.append(f"{kind:<18}{got[0]:>30}{got[1]:>16}{got[2]:>11}")
    rows += [f"VIOLATION {m.base} {m.kind} ({m.description}): {detail}"
             for m, outcome, detail in results if outcome == VIOLATION]
    return "\n".join(rows)


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutations")
    parser.add_argument("--n", type=int, default=200, help="number of mutants")
    parser.add_argument("--cfg", type=Path, nargs="+", default=list(DEFAULT_CFGS),
                        help="cfgs to mutate (each mutant picks one at random)")
    parser.add_argument("--img-size", type=int, default=64,
                        help="forward input side, rounded up to a multiple of the mutant's max stride")
    parser.add_argument("--every-mutant", action=argparse.BooleanOptionalAction, default=False,
                        help="print every mutant's outcome, not only the violations")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the fuzz and print the table; 1 if any mutant broke the contract, else 0."""
    missing = [str(p) for p in args.cfg if not p.is_file()]
    if missing:
        print(f"error: cfg not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    mutants = make_mutants(args.cfg, args.n, args.seed)
    with tempfile.TemporaryDirectory(prefix="fuzz_cfg_") as tmp:
        results = run_fuzz(mutants, args.img_size, Path(tmp))
    if args.every_mutant:
        for m, outcome, detail in results:
            print(f"{outcome:<28} {m.base} {m.kind} ({m.description}): {detail}")
    print(f"{len(results)} mutants of {', '.join(p.name for p in args.cfg)}, seed {args.seed}:")
    print(summary_table(results))
    return 1 if any(outcome == VIOLATION for _, outcome, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
