"""hyp.yaml validation: the shipped file loads and equals the in-code defaults; every kind of mistake
is reported, all together; each section has one reader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from build_utils.errors import HypError
from build_utils.hyp import (
    DEFAULT_HYP,
    REQUIRED_KEYS,
    SECTIONS,
    AugmentHyp,
    LossHyp,
    OptimizerHyp,
    augment_hyp,
    load_hyp,
    loss_hyp,
    optimizer_hyp,
)


def _write(tmp_path: Path, repo_root: Path, **changes) -> Path:
    hyp = yaml.safe_load((repo_root / "cfg" / "hyp.yaml").read_text())
    for k, v in changes.items():
        if v is ...:
            hyp.pop(k)
        else:
            hyp[k] = v
    path = tmp_path / "hyp.yaml"
    path.write_text(yaml.safe_dump(hyp))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(HypError) as e:
        load_hyp(path)
    msg = str(e.value)
    assert str(path) in msg.splitlines()[0]
    return msg.splitlines()[1:]


def test_shipped_hyp_loads(repo_root):
    hyp = load_hyp(repo_root / "cfg" / "hyp.yaml")
    assert set(hyp) == set(REQUIRED_KEYS)
    assert hyp["giou"] == pytest.approx(3.54) and hyp["iou_type"] == "giou"
    assert all(isinstance(v, float) for k, v in hyp.items() if k != "iou_type")


def test_int_accepted_as_number(tmp_path, repo_root):
    assert load_hyp(_write(tmp_path, repo_root, degrees=5))["degrees"] == 5.0


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"giuo": 3.0}, "giuo: unknown key"),
        ({"obj": ...}, "obj: missing"),
        ({"lr0": "fast"}, "lr0: expected a number"),
        ({"mosaic": True}, "mosaic: expected a number"),  # bool is not a number
        ({"giou": -1.0}, "giou: -1.0 is out of range"),
        ({"fliplr": 1.5}, "fliplr: 1.5 is out of range"),
        ({"lrf": 0.0}, "lrf: 0.0 is out of range"),
        ({"lrf": 1.2}, "lrf: 1.2 is out of range"),
        ({"iou_type": "xiou"}, "iou_type: 'xiou' is not one of iou, giou, diou, ciou"),
        ({"lr0": float("nan")}, "lr0: nan is out of range"),
    ],
)
def test_single_problem(tmp_path, repo_root, changes, fragment):
    problems = _problems(_write(tmp_path, repo_root, **changes))
    assert len(problems) == 1
    assert fragment in problems[0]


def test_all_problems_listed_together(tmp_path, repo_root):
    path = _write(tmp_path, repo_root, foo=1, cls=..., momentum=True, iou_t=2.0, iou_type="dice")
    problems = _problems(path)
    assert len(problems) == 5
    for key in ("foo", "cls", "momentum", "iou_t", "iou_type"):
        assert any(p.strip().startswith(key + ":") for p in problems), key


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(HypError, match="not found"):
        load_hyp(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("giou: 1\n  cls: [2\n")
    with pytest.raises(HypError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_hyp(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(HypError, match="expected a mapping"):
        load_hyp(listy)


def test_shipped_hyp_equals_the_defaults(repo_root):
    """cfg/hyp.yaml and the section defaults in hyp.py are one set of values (the dataset uses the latter)."""
    raw = yaml.safe_load((repo_root / "cfg" / "hyp.yaml").read_text())
    assert raw == DEFAULT_HYP
    assert load_hyp(repo_root / "cfg" / "hyp.yaml") == DEFAULT_HYP


def test_sections_partition_the_schema():
    names = [f for section in SECTIONS for f in section.__dataclass_fields__]
    assert len(names) == len(set(names)) and set(names) == set(REQUIRED_KEYS)


def test_section_readers(tmp_path, repo_root):
    hyp = load_hyp(_write(tmp_path, repo_root, lr0=0.02, mosaic=0.5, giou=1.5))
    loss, opt, aug = loss_hyp(hyp), optimizer_hyp(hyp), augment_hyp(hyp)
    assert isinstance(loss, LossHyp) and loss.giou == 1.5 and loss.iou_type == "giou"
    assert isinstance(opt, OptimizerHyp) and opt.lr0 == 0.02 and opt.momentum == pytest.approx(0.937)
    assert isinstance(aug, AugmentHyp) and aug.mosaic == 0.5 and aug.fliplr == 0.5
    assert loss_hyp(loss) is loss and augment_hyp(aug) is aug  # a section passes through
    with pytest.raises(AttributeError):
        opt.lr0 = 1.0  # frozen
    with pytest.raises(HypError, match="hsv_h, hsv_s, hsv_v.*missing from the AugmentHyp section"):
        augment_hyp({"mosaic": 1.0})



def test_duplicate_keys_are_refused_with_both_lines(repo_root, tmp_path):
    text = (repo_root / "cfg" / "hyp.yaml").read_text(encoding="utf-8")
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("lr0:"))
    path = tmp_path / "hyp.yaml"
    path.write_text(text + "lr0: 0.5\n", encoding="utf-8")
    last = len(text.splitlines()) + 1
    with pytest.raises(HypError) as info:
        load_hyp(path)
    want = f"{path}:{last}: not valid YAML (duplicate key 'lr0' (first at line {first}))"
    assert str(info.value).startswith(want), str(info.value)


def test_nested_duplicates_and_latin1_in_hyp(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("a:\n  b: 1\n  b: 2\n")
    want = r"nested\.yaml:3: not valid YAML \(duplicate key 'b' \(first at line 2"
    with pytest.raises(HypError, match=want):
        load_hyp(nested)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# réglé\nlr0: 0.01\n".encode("latin-1"))
    with pytest.raises(HypError, match=r"latin\.yaml:1: byte offset 3 \(0xe9\) is not valid UTF-8"):
        load_hyp(latin)


@pytest.mark.parametrize(("name", "lr0"), [("hyp-sparsity.yaml", 0.01), ("hyp-pruned.yaml", 0.02)])
def test_pruning_hyps_are_the_shipped_one_with_another_lr0(repo_root, name, lr0):
    """The pruning recipe's hyp files differ from cfg/hyp.yaml in lr0 only (README, BENCHMARKS.md)."""
    hyp = load_hyp(repo_root / "cfg" / name)
    assert hyp["lr0"] == lr0
    others = {k: v for k, v in DEFAULT_HYP.items() if k != "lr0"}
    assert {k: v for k, v in hyp.items() if k != "lr0"} == others
