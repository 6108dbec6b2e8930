"""Threshold defaults have one home: `train_val_utils/evaluation/thresholds.py`.

A score or NMS IoU threshold written as a number anywhere else (a parser default, a dataclass field, a
keyword default, a keyword argument, an options dict) fails here, so the evaluation and deployment
values cannot drift apart between scripts.
"""

from __future__ import annotations

import ast
from pathlib import Path

from train_val_utils.evaluation import thresholds

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / "train_val_utils" / "evaluation" / "thresholds.py"
NAMES = {"conf_thres", "iou_thres", "--conf-thres", "--iou-thres"}


def _is_number(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, float | int) and not isinstance(
        node.value, bool)


def literal_thresholds(source: str) -> list[int]:
    """Line numbers where a threshold-named value is a numeric literal."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.arguments):
            args = node.posonlyargs + node.args
            defaults = [None] * (len(args) - len(node.defaults)) + node.defaults
            pairs = list(zip(args, defaults)) + list(zip(node.kwonlyargs, node.kw_defaults))
            lines += [d.lineno for a, d in pairs if a.arg in NAMES and _is_number(d)]
        elif isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if names & NAMES and _is_number(node.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            lines += [k.value.lineno for k in node.keywords if k.arg in NAMES and _is_number(k.value)]
            flag = node.args[0] if node.args else None
            if isinstance(flag, ast.Constant) and flag.value in NAMES:
                lines += [k.value.lineno for k in node.keywords if k.arg == "default" and _is_number(k.value)]
        elif isinstance(node, ast.Dict):
            lines += [v.lineno for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and k.value in NAMES and _is_number(v)]
    return lines


def test_threshold_literals_live_only_in_their_module():
    offenders = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        skipped = rel.parts[0] in {"tests", "runs", "build"} or rel.parts[0].startswith(".")
        if skipped or path == HOME:
            continue
        offenders += [f"{rel}:{line}" for line in literal_thresholds(path.read_text(encoding="utf-8"))]
    assert not offenders, "threshold literals outside thresholds.py: " + ", ".join(offenders)


def test_the_detector_finds_each_kind_of_literal():
    source = (
        "def f(conf_thres=0.25, *, iou_thres=0.45): pass\n"
        "class O:\n    conf_thres: float = 0.001\n"
        "p.add_argument('--iou-thres', type=float, default=0.6)\n"
        "nms(x, conf_thres=0.3)\n"
        "SPEED = {'iou_thres': 0.45}\n"
    )
    assert literal_thresholds(source) == sorted(literal_thresholds(source)) and len(
        literal_thresholds(source)) == 6
    assert literal_thresholds("def f(conf_thres=EVAL_CONF_THRES): pass\n") == []


def test_the_named_values():
    assert (thresholds.EVAL_CONF_THRES, thresholds.EVAL_IOU_THRES) == (0.001, 0.6)
    assert (thresholds.DEPLOY_CONF_THRES, thresholds.DEPLOY_IOU_THRES) == (0.25, 0.45)
