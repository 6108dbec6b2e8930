"""Darknet .cfg / .data parsing: typed values, shipped cfgs equal to the official ones, every ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from build_utils.data_cfg import load_class_names, parse_data_cfg
from build_utils.errors import ConfigError
from build_utils.parse_config import parse_model_cfg, parse_model_cfg_text

TINY = """[net]
width=64
height = 64 ; trailing comment
channels=3
steps=400,450
scales=.1,.1

# a comment line
[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask = 0,1
anchors = 10,14,  23,27,  37,58
classes=4
num=3
"""


def _strip(sections):
    return [{k: v for k, v in s.items() if not k.startswith("_")} for s in sections]


def test_typed_values_and_lines():
    net, conv, pred, yolo = parse_model_cfg_text(TINY, "t.cfg")
    assert net == {**net, "type": "net", "width": 64, "height": 64, "steps": [400, 450], "scales": [0.1, 0.1]}
    assert conv["_line"] == 9 and conv["activation"] == "leaky" and conv["filters"] == 16
    assert yolo["mask"] == [0, 1] and yolo["anchors"] == [10, 14, 23, 27, 37, 58] and yolo["classes"] == 4
    assert pred["_line"] == 17


@pytest.mark.parametrize("name", ["yolov3-spp.cfg", "yolov3.cfg"])
def test_shipped_cfgs_parse_identically(repo_root, darknet_dir, name):
    assert _strip(parse_model_cfg(repo_root / "cfg" / name)) == _strip(parse_model_cfg(darknet_dir / name))


def test_tiny_cfg_differs_only_in_second_mask(repo_root, darknet_dir):
    ours = _strip(parse_model_cfg(repo_root / "cfg" / "yolov3-tiny.cfg"))
    ref = _strip(parse_model_cfg(darknet_dir / "yolov3-tiny.cfg"))
    diff = [i for i, (a, b) in enumerate(zip(ours, ref)) if a != b]
    assert len(ours) == len(ref) and diff == [24]
    assert ours[24]["mask"] == [1, 2, 3] and ref[24]["mask"] == [0, 1, 2]


def test_spp_layout(repo_root):
    layers = parse_model_cfg(repo_root / "cfg" / "yolov3-spp.cfg")[1:]
    assert len(layers) == 114
    assert [i for i, m in enumerate(layers) if m["type"] == "yolo"] == [89, 101, 113]
    assert [(layers[i]["size"], layers[i]["stride"]) for i in (78, 80, 82)] == [(5, 1), (9, 1), (13, 1)]
    assert all(layers[i]["filters"] == 255 and layers[i]["activation"] == "linear" for i in (88, 100, 112))


def _err(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_model_cfg_text(text, "bad.cfg")
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ("[yolo]", "[yolov9]", 24, ["unknown section [yolov9]", "[convolutional]"]),
        ("filters=16", "filterz=16", 11, ["unknown key 'filterz' for [convolutional]", "filters"]),
        ("size=3", "size=three", 12, ["size='three' is not numeric", "an integer"]),
        ("stride=2", "stride=1.5", 13, ["not numeric", "integer"]),
        ("filters=18", "filters=17", 21, ["filters=17", "(5+4)*2 = 18"]),
        ("mask = 0,1", "mask = 0,3", 25, ["mask index 3 is past its anchors", "0..2"]),
        ("num=3", "num=4", 28, ["num=4", "3 pairs"]),
        ("activation=leaky", "activation=gelu", 15, ["activation='gelu'", "leaky"]),
    ],
)
def test_malformed_cfg_errors(old, new, line, words):
    assert old in TINY
    msg = _err(TINY.replace(old, new, 1))
    assert msg.startswith(f"bad.cfg:{line}:"), msg
    for w in words:
        assert w in msg, msg


def test_route_outside_and_forward():
    outside = TINY.replace("[yolo]", "[route]\nlayers=-5\n\n[yolo]")
    msg = _err(outside)
    assert msg.startswith("bad.cfg:25:") and "points to layer -3, before the first layer" in msg
    forward = TINY.replace("[yolo]", "[shortcut]\nfrom=3\n\n[yolo]")
    msg = _err(forward)
    assert msg.startswith("bad.cfg:25:") and "from=3 points to layer 3, forward" in msg


def test_no_yolo_and_no_net():
    msg = _err(TINY.split("[yolo]")[0])
    assert msg.startswith("bad.cfg:1:") and "no [yolo] section" in msg
    net_keys = "width=64\nheight = 64 ; trailing comment\nchannels=3\nsteps=400,450\nscales=.1,.1\n"
    msg = _err(TINY.replace("[net]", "[convolutional]", 1).replace(net_keys, ""))
    assert msg.startswith("bad.cfg:") and "must start with a [net]" in msg


def test_predictor_must_precede_yolo():
    msg = _err(TINY.replace("[yolo]", "[maxpool]\nsize=2\nstride=1\n\n[yolo]"))
    assert "must follow a [convolutional] predictor" in msg


def test_missing_cfg_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        parse_model_cfg(tmp_path / "nope.cfg")


def _data(tmp_path: Path, body: str) -> Path:
    (tmp_path / "sub").mkdir(exist_ok=True)
    (tmp_path / "sub" / "train.txt").write_text("a.jpg\n")
    (tmp_path / "sub" / "my.names").write_text("cat\ndog\n\n")
    path = tmp_path / "sub" / "my.data"
    path.write_text(body)
    return path


def test_data_cfg_resolves_relative_to_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = "classes=2\ntrain=train.txt\nvalid = train.txt\nnames=my.names\nbackup=backup/\neval=coco\n"
    path = _data(tmp_path, body)
    out = parse_data_cfg(path)
    assert out["classes"] == 2 and out["class_names"] == ["cat", "dog"]
    assert out["train"] == str((tmp_path / "sub" / "train.txt").resolve())
    assert out["eval"] == "coco" and out["backup"] == "backup/"


def test_data_cfg_falls_back_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "val.txt").write_text("b.jpg\n")
    out = parse_data_cfg(_data(tmp_path, "classes=2\ntrain=train.txt\nvalid=val.txt\nnames=my.names\n"))
    assert out["valid"] == str((tmp_path / "val.txt").resolve())


def test_data_cfg_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _data(tmp_path, "classes=2\ntrain=train.txt\nvalid=missing.txt\nnames=my.names\n")
    with pytest.raises(ConfigError) as info:
        parse_data_cfg(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:3:") and "valid=missing.txt not found" in msg
    assert str(tmp_path / "sub" / "missing.txt") in msg and str(tmp_path / "missing.txt") in msg
    path = _data(tmp_path, "classes=3\ntrain=train.txt\nvalid=train.txt\nnames=my.names\n")
    with pytest.raises(ConfigError, match=r"my.data:1: classes=3 but .* lists 2 names"):
        parse_data_cfg(path)
    path = _data(tmp_path, "classes=2\ntrain=train.txt\nnames=my.names\n")
    with pytest.raises(ConfigError, match="missing 'valid='"):
        parse_data_cfg(path)
    path = _data(tmp_path, "classes=two\ntrain=train.txt\nvalid=train.txt\nnames=my.names\n")
    with pytest.raises(ConfigError, match="my.data:1: classes='two' is not an integer"):
        parse_data_cfg(path)


def test_load_class_names(repo_root):
    names = load_class_names(repo_root / "data" / "coco.names")
    assert len(names) == 80 and names[0] == "person" and names[16] == "dog"


def test_data_and_names_must_be_utf8(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _data(tmp_path, "classes=2\ntrain=train.txt\nvalid=train.txt\nnames=my.names\n")
    (tmp_path / "sub" / "my.names").write_bytes("cat\nchien\nsœur\n".encode("cp1252"))
    with pytest.raises(ConfigError, match=r"my\.names:3: byte offset 11 \(0x9c\) is not valid UTF-8"):
        parse_data_cfg(path)
    (tmp_path / "sub" / "my.names").write_bytes(b"\xef\xbb\xbfcat\ndog\n")  # a BOM is fine
    assert parse_data_cfg(path)["class_names"] == ["cat", "dog"]
