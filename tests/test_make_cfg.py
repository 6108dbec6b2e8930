"""rewrite_cfg_classes / make_cfg.py: only classes, anchors, num and predictor filters change."""

from __future__ import annotations

import difflib
import importlib

import pytest

from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.errors import ConfigError, UserError
from build_utils.parse_config import parse_model_cfg_text
from modules.model import DarkNet

make_cfg = importlib.import_module("data.scripts.make_cfg")


def _changed(a: str, b: str) -> list[str]:
    diff = difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def test_classes_only_touches_yolo_and_predictors(repo_root):
    text = (repo_root / "cfg" / "yolov3-spp.cfg").read_text()
    out = rewrite_cfg_classes(text, 3, source="spp.cfg")
    changed = _changed(text, out)
    assert sorted(changed) == sorted(["-filters=255"] * 3 + ["+filters=24"] * 3
                                     + ["-classes=80"] * 3 + ["+classes=3"] * 3)
    model = DarkNet.from_cfg_text(out, "spp3.cfg")
    assert model.nc == 3 and all(h.no == 8 for h in model.yolo_modules())


def test_anchors_and_comments_kept(repo_root):
    text = (repo_root / "cfg" / "yolov3-tiny.cfg").read_text()
    text = text.replace("classes=80", "classes = 80   # coco", 1)
    anchors = [(5, 6), (12, 14), (30, 40), (60, 70), (100, 120), (200, 220)]
    out = rewrite_cfg_classes(text, 1, anchors, "tiny.cfg")
    assert "classes = 1   # coco" in out and "# The official yolov3-tiny.weights" in out
    yolos = [s for s in parse_model_cfg_text(out, "tiny.cfg") if s["type"] == "yolo"]
    assert all(y["anchors"] == [v for a in anchors for v in a] and y["num"] == 6 for y in yolos)
    assert [y["mask"] for y in yolos] == [[3, 4, 5], [1, 2, 3]]
    assert out.count("filters=18") == 2


def test_missing_num_is_inserted_and_bad_anchors_rejected(repo_root):
    text = (repo_root / "cfg" / "yolov3-tiny.cfg").read_text().replace("num=6\n", "")
    out = rewrite_cfg_classes(text, 2, [(1, 2)] * 6)
    assert out.count("num=6") == 2
    with pytest.raises(ConfigError, match="mask index 3 is past its anchors"):
        rewrite_cfg_classes(text, 2, [(1, 2)] * 3, "tiny.cfg")
    with pytest.raises(ConfigError, match="classes=0"):
        rewrite_cfg_classes(text, 0)


def test_cli_writes_and_refuses_overwrite(repo_root, tmp_path):
    out = tmp_path / "my.cfg"
    base = repo_root / "cfg" / "yolov3-tiny.cfg"
    args = make_cfg.get_args_parser().parse_args(
        ["--base", str(base), "--classes", "4", "--anchors", "1,2, 3,4, 5,6, 7,8, 9,10, 11,12",
         "--out", str(out)])
    make_cfg.main(args)
    assert DarkNet(out).nc == 4
    with pytest.raises(UserError, match="--overwrite"):
        make_cfg.main(args)
    args.overwrite, args.classes = True, 5
    make_cfg.main(args)
    assert DarkNet(out).nc == 5
    with pytest.raises(ConfigError, match="w,h pairs"):
        make_cfg.parse_anchors("1,2,3")
