"""The cfg contract: a cfg builds a model that runs at every multiple of its max stride, or raises
`ConfigError` at `path:line` saying what is wrong. Hand-made cases from the reliability issue, the
encodings, the shape dry-run, and a seeded fuzz of the shipped cfgs."""

from __future__ import annotations

import importlib
import re
import time
from pathlib import Path

import pytest
import torch

from build_utils.errors import ConfigError
from build_utils.parse_config import parse_model_cfg
from modules.graph_check import MAX_PARAMETERS
from modules.model import DarkNet

fuzz = importlib.import_module("data.scripts.fuzz_cfg")

REPO = Path(__file__).resolve().parents[1]
TINY = (REPO / "cfg" / "yolov3-tiny.cfg").read_text(encoding="utf-8")
SPP = (REPO / "cfg" / "yolov3-spp.cfg").read_text(encoding="utf-8")


def _set(text: str, kind: str, nth: int, key: str, value: str) -> tuple[str, int]:
    """Set `key=value` in the nth `[kind]` section (replacing the key or inserting it after the header).

    Returns the new text and the 1-based line of the edited key.
    """
    lines = text.splitlines()
    heads = [i for i, ln in enumerate(lines) if ln.startswith("[")]
    start = [i for i in heads if lines[i].strip() == f"[{kind}]"][nth]
    end = next((i for i in heads if i > start), len(lines))
    own = [i for i in range(start + 1, end) if re.match(rf"\s*{key}\s*=", lines[i])]
    at = own[0] if own else start + 1
    lines[at:at + bool(own)] = [f"{key}={value}"]
    return "\n".join(lines) + "\n", at + 1


def _header(text: str, kind: str, nth: int) -> int:
    return [i + 1 for i, ln in enumerate(text.splitlines()) if ln.strip() == f"[{kind}]"][nth]


def _build_error(tmp_path: Path, text: str | bytes) -> tuple[str, Path]:
    path = tmp_path / "mine.cfg"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(ConfigError) as info:
        DarkNet(path)
    return str(info.value), path


# (base, section, nth, key, value, words in the message); the error is at the edited key's line
VALUE_CASES = [
    (TINY, "yolo", 0, "classes", "0", ["[yolo] (layer 16) classes=0", "must be from 1"]),
    (TINY, "upsample", 0, "stride", "0", ["[upsample] (layer 19) stride=0", "from 1 to 32"]),
    (TINY, "upsample", 0, "stride", "-2", ["stride=-2", "from 1 to 32"]),
    (TINY, "route", 0, "groups", "0", ["[route] (layer 17) groups=0", "from 1"]),
    (TINY, "maxpool", 0, "stride", "0", ["[maxpool] (layer 1) stride=0", "from 1 to 32"]),
    (TINY, "net", 0, "channels", "0", ["[net] channels=0", "set channels=3"]),
    (TINY, "net", 0, "channels", "1", ["[net] channels=1", "RGB"]),
    (TINY, "route", 0, "group_id", "5", ["group_id=5", "below groups=1", "from 0 to 0"]),
    (TINY, "yolo", 0, "anchors", "-10,14, 23,27, 37,58, 81,82, 135,169, 344,319",
     ["anchors=-10,14,23,27", "must be > 0"]),
    (TINY, "yolo", 0, "mask", "3,3,3", ["mask=3,3,3", "distinct"]),
    (TINY, "yolo", 0, "scale_x_y", "-5", ["scale_x_y=-5.0", "must be > 0"]),
    (TINY, "convolutional", 0, "filters", "-512", ["filters=-512", "from 1 to 65536"]),
    (TINY, "convolutional", 0, "filters", "0", ["filters=0", "from 1 to 65536"]),
    (TINY, "convolutional", 0, "size", "-1", ["size=-1", "from 1 to 63"]),
    (TINY, "convolutional", 0, "size", "0", ["size=0", "from 1 to 63"]),
    (TINY, "convolutional", 0, "stride", "-1", ["stride=-1", "from 1 to 32"]),
    (TINY, "convolutional", 0, "filters", "2147483648", ["filters=2147483648", "out of range"]),
    (TINY, "convolutional", 0, "filters", "2147483647", ["filters=2147483647", "from 1 to 65536"]),
    (TINY, "convolutional", 0, "filters", "99999999999999999999", ["99999999999999999999", "out of range"]),
    (TINY, "convolutional", 0, "stride", "2147483648", ["stride=2147483648", "out of range"]),
    (TINY, "convolutional", 0, "size", "1e20", ["size='1e20' is not numeric", "an integer"]),
    (TINY, "convolutional", 0, "groups", "3", ["groups=3", "does not divide filters=16"]),
    (TINY, "convolutional", 0, "dilation", "2", ["dilation=2", "not supported"]),
    (TINY, "convolutional", 0, "pad", "2", ["pad=2", "pad=1 pads by size//2"]),
    (TINY, "maxpool", 0, "padding", "0", ["padding=0", "size-1", "remove padding="]),
    (TINY, "yolo", 0, "jitter", "inf", ["jitter=inf", "finite"]),
    (SPP, "shortcut", 0, "activation", "leaky", ["[shortcut] (layer 4) activation=leaky", "linear"]),
]


@pytest.mark.parametrize(("base", "kind", "nth", "key", "value", "words"), VALUE_CASES,
                         ids=[f"{c[1]}-{c[3]}={c[4][:12]}" for c in VALUE_CASES])
def test_bad_values_are_config_errors_at_their_line(tmp_path, base, kind, nth, key, value, words):
    text, line = _set(base, kind, nth, key, value)
    msg, path = _build_error(tmp_path, text)
    assert msg.startswith(f"{path}:{line}: "), msg
    for w in words:
        assert w in msg, msg


# (base, section, nth, key, value, section whose header line is reported, its nth, words)
GRAPH_CASES = [
    (TINY, "convolutional", 8, "pad", "0", "convolutional", 8,
     ["(layer 14) size=3 stride=1 pad=0", "into 0x0 cells at input 32x32 instead of 1x1", "odd size"]),
    (TINY, "convolutional", 6, "size", "2", "convolutional", 6, ["(layer 12) size=2", "odd size"]),
    (TINY, "upsample", 0, "stride", "4", "route", 1,
     ["[route] (layer 20) joins layers 19 (128x52x52) and 8 (256x26x26) at input 416x416"]),
    (TINY, "route", 0, "layers", "0", "upsample", 0,
     ["[upsample] (layer 19) stride=2", "larger than the input"]),
    (TINY, "route", 1, "groups", "3", "route", 1, ["groups=3 does not divide the 128 channels of layer 19"]),
    (SPP, "shortcut", 0, "from", "-2", "shortcut", 0,
     ["[shortcut] (layer 4) adds layer 2 (32x208x208) to layer 3 (64x208x208)", "equal channels"]),
]


@pytest.mark.parametrize(("base", "kind", "nth", "key", "value", "at_kind", "at_nth", "words"), GRAPH_CASES,
                         ids=[f"{c[1]}{c[2]}-{c[3]}={c[4]}" for c in GRAPH_CASES])
def test_shape_dry_run_reports_the_breaking_layer(tmp_path, base, kind, nth, key, value, at_kind, at_nth,
                                                  words):
    text, _ = _set(base, kind, nth, key, value)
    msg, path = _build_error(tmp_path, text)
    assert msg.startswith(f"{path}:{_header(text, at_kind, at_nth)}: [{at_kind}]"), msg
    for w in words:
        assert w in msg, msg


def test_deleted_layers_found_where_the_join_fails(tmp_path):
    lines = SPP.splitlines()
    start = _header(SPP, "shortcut", 0) - 1  # drop the first [shortcut] and its keys (4 lines)
    text = "\n".join(lines[:start] + lines[start + 4:]) + "\n"
    msg, path = _build_error(tmp_path, text)
    route = [i + 1 for i, ln in enumerate(text.splitlines()) if ln.startswith("[")][1 + 92]  # layers=-1,61
    assert msg.startswith(f"{path}:{route}: [route] (layer 92) joins layers 91 (256x26x26) and 61 "
                          f"(1024x13x13)"), msg


def test_downsampling_past_the_largest_head(tmp_path):
    """Without the stride-32 head, inputs need only be multiples of 16, where layer 9 would be 0.5 wide."""
    lines = TINY.splitlines()
    start = _header(TINY, "yolo", 0) - 1
    end = _header(TINY, "route", 0) - 1
    text = "\n".join(lines[:start] + lines[end:]) + "\n"
    msg, path = _build_error(tmp_path, text)
    assert msg.startswith(f"{path}:{_header(text, 'maxpool', 4)}: [maxpool] (layer 9) size=2 stride=2: its "
                          f"total stride is 32 but inputs need only be multiples of 16"), msg


def test_parameter_cap_refuses_before_allocating(tmp_path):
    text, _ = _set(TINY, "convolutional", 6, "filters", "65536")
    text, _ = _set(text, "convolutional", 7, "filters", "65536")  # 1x1: 65536 x 65536 = 4.3e9 weights
    t0 = time.perf_counter()
    msg, path = _build_error(tmp_path, text)
    assert time.perf_counter() - t0 < 2.0
    assert msg.startswith(f"{path}:{_header(text, 'convolutional', 7)}: [convolutional] (layer 13) "
                          f"filters=65536: the model would have over"), msg
    assert f"at most {MAX_PARAMETERS:.0e}" in msg


def test_duplicate_key_in_a_section(tmp_path):
    lines = TINY.splitlines()
    at = lines.index("filters=16")
    msg, path = _build_error(tmp_path, "\n".join(lines[:at + 1] + ["filters=32"] + lines[at + 1:]))
    assert msg.startswith(f"{path}:{at + 2}: [convolutional] (layer 0) filters=32: filters is set twice "
                          f"in this section (first at line {at + 1}); keep one"), msg


@pytest.mark.parametrize(
    ("data", "line", "words"),
    [(TINY.encode()[:400] + b"\xff\xfe\x00garbage" + TINY.encode()[400:], TINY[:400].count("\n") + 1,
      ["byte offset 400 (0xff) is not valid UTF-8", "save the file as UTF-8"]),
     ("# réglage\n".encode("latin-1") + TINY.encode(), 1, ["byte offset 3 (0xe9) is not valid UTF-8"]),
     (TINY.encode("utf-16"), 1, ["UTF-16", "save it as UTF-8"]),
     (TINY.encode("utf-16-le"), 1, ["byte offset 1 is a NUL byte", "UTF-16"])],
    ids=["binary", "latin1", "utf16", "utf16le"],
)
def test_undecodable_text_names_the_byte(tmp_path, data, line, words):
    msg, path = _build_error(tmp_path, data)
    assert msg.startswith(f"{path}:{line}: "), msg
    for w in words:
        assert w in msg, msg
    with pytest.raises(ConfigError, match=re.escape(f"{path}:{line}: ")):
        parse_model_cfg(path)


def test_utf8_bom_and_crlf_build_the_same_model(tmp_path):
    path = tmp_path / "bom.cfg"
    path.write_bytes(b"\xef\xbb\xbf" + TINY.replace("\n", "\r\n").encode())
    model = DarkNet(path)
    assert len(model.module_list) == 24 and model.max_stride == 32


def test_extra_stride_builds_a_model_that_runs_at_its_new_multiples(tmp_path):
    text, _ = _set(TINY, "convolutional", 0, "stride", "2")
    path = tmp_path / "s2.cfg"
    path.write_text(text)
    model = DarkNet(path).eval()
    assert [h.stride for h in model.yolo_modules()] == [64, 32] and model.max_stride == 64
    with torch.no_grad():
        for h, w in ((64, 64), (64, 128)):
            _, raw = model(torch.rand(1, 3, h, w))
            assert [tuple(p.shape[2:4]) for p in raw] == [(h // 64, w // 64), (h // 32, w // 32)]


def test_mutants_are_reproducible():
    a = fuzz.make_mutants(list(fuzz.DEFAULT_CFGS), 30, seed=5)
    b = fuzz.make_mutants(list(fuzz.DEFAULT_CFGS), 30, seed=5)
    assert [(m.kind, m.description, m.data) for m in a] == [(m.kind, m.description, m.data) for m in b]
    assert len({m.kind for m in a}) >= 6


def test_fuzz_script_flags_a_violation(tmp_path, monkeypatch):
    """The classifier is not vacuous: a build that raises something else is a VIOLATION."""
    (tmp_path / "ok.cfg").write_text(TINY)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")

    monkeypatch.setattr(fuzz, "DarkNet", broken)
    outcome, detail = fuzz.classify(tmp_path / "ok.cfg", 64)
    assert outcome == fuzz.VIOLATION and "ZeroDivisionError" in detail


@pytest.mark.slow
def test_fuzz_contract_holds(tmp_path, capsys):
    """60 seeded mutants (mostly tiny, some spp): every one is a path:line ConfigError or runs."""
    mutants = fuzz.make_mutants(list(fuzz.DEFAULT_CFGS), 60, seed=20240611, weights=[0.9, 0.1])
    results = fuzz.run_fuzz(mutants, img_size=64, workdir=tmp_path)
    table = fuzz.summary_table(results)
    print(table)
    outcomes = [outcome for _, outcome, _ in results]
    assert outcomes.count(fuzz.VIOLATION) == 0, table
    assert outcomes.count(fuzz.ERROR) >= 25 and outcomes.count(fuzz.RAN) >= 15, table
    assert {m.base for m in mutants} == {"yolov3-tiny.cfg", "yolov3-spp.cfg"}
