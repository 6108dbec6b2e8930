"""hyp.yaml validation: the shipped file loads; every kind of mistake is reported, all together."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from build_utils.errors import HypError
from train_val_utils.hyp import REQUIRED_KEYS, load_hyp, scale_loss_gains


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
        ({"iou_type": "xiou"}, "iou_type: 'xiou' is not one of giou, diou, ciou, iou"),
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


def test_scale_loss_gains_returns_scaled_copy(repo_root):
    hyp = load_hyp(repo_root / "cfg" / "hyp.yaml")
    scaled = scale_loss_gains(hyp, nc=20, img_size=640)
    assert scaled["cls"] == pytest.approx(37.4 * 20 / 80)
    assert scaled["obj"] == pytest.approx(64.3 * 2)
    assert scaled["giou"] == hyp["giou"]
    assert hyp["cls"] == pytest.approx(37.4) and hyp["obj"] == pytest.approx(64.3)  # input untouched


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
    with pytest.raises(HypError, match=r"nested\.yaml:3: not valid YAML \(duplicate key 'b' \(first at line 2"):
        load_hyp(nested)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# réglé\nlr0: 0.01\n".encode("latin-1"))
    with pytest.raises(HypError, match=r"latin\.yaml:1: byte offset 3 \(0xe9\) is not valid UTF-8"):
        load_hyp(latin)
