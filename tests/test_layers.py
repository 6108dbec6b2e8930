"""The floor plan holds: every import, those inside functions included, goes down the layer order.

Layers, lowest first (a module may import its own rank or lower; the longest matching prefix decides):
build_utils < build_utils.dataset < build_utils.datasets < modules < train_val_utils.evaluation <
train_val_utils.training, train_val_utils.predict < the train_val_utils entry points (engine, trainer,
loss) < train_val_utils.tune, train_val_utils.benchmarks < the scripts (train.py, bench/, data/scripts/).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("build_utils", "modules", "train_val_utils")

RANKS: dict[str, int] = {
    "build_utils": 0,
    "build_utils.dataset": 1,
    "build_utils.datasets": 2,
    "modules": 3,
    "train_val_utils.evaluation": 4,
    "train_val_utils.training": 5,
    "train_val_utils.predict": 5,
    "train_val_utils": 6,
    "train_val_utils.tune": 7,
    "train_val_utils.benchmarks": 7,
}
SCRIPT_RANK = 8


def rank_of(module: str) -> int | None:
    """The rank of a project module by its longest prefix in RANKS; None for outside modules."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in RANKS:
            return RANKS[prefix]
    return None


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import in `source`, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from pkg import sub` imports the sub-module pkg.sub
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if node.module in RANKS or node.module.split(".")[0] in PACKAGES]
    return found


def violations(module: str, own_rank: int, source: str) -> list[str]:
    bad = []
    for line, target in imported_modules(source):
        target_rank = rank_of(target)
        if target_rank is not None and target_rank > own_rank:
            bad.append(f"{module}:{line} imports {target} (rank {target_rank} > {own_rank})")
    return bad


def project_files() -> list[tuple[str, int, Path]]:
    """(dotted name, rank, path) of every Python file of the packages and the scripts."""
    files = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in {".venv", "runs", "tests", "build"} or rel.parts[0].startswith("."):
            continue
        dotted = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        own = rank_of(dotted) if rel.parts[0] in PACKAGES else SCRIPT_RANK
        files.append((dotted, own, path))
    return files


def test_no_import_goes_up_the_layers():
    bad = []
    for dotted, own, path in project_files():
        bad += violations(dotted, own, path.read_text(encoding="utf-8"))
    assert not bad, "\n".join(bad)


def test_every_package_module_has_a_rank():
    for dotted, own, _ in project_files():
        if dotted.split(".")[0] in PACKAGES:
            assert own is not None, dotted


@pytest.mark.parametrize("module, source", [
    ("build_utils.hyp", "def f():\n    from train_val_utils.loss import YoloLoss\n"),
    ("modules.model", "import train_val_utils.engine\n"),
    ("train_val_utils.evaluation.nms", "from train_val_utils import engine\n"),
    ("train_val_utils.training.ema", "from train_val_utils.tune.evolve import run_evolve\n"),
])
def test_a_planted_upward_import_is_caught(module, source):
    assert violations(module, rank_of(module), source)


def test_downward_and_outside_imports_pass():
    source = "import torch\nfrom build_utils.errors import UserError\nfrom modules.model import DarkNet\n"
    assert not violations("train_val_utils.engine", rank_of("train_val_utils.engine"), source)


def test_no_folder_holds_more_than_sixteen_modules():
    for package in PACKAGES:
        for folder in [REPO / package, *(p for p in (REPO / package).iterdir() if p.is_dir())]:
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            assert len(modules) <= 16, f"{folder.relative_to(REPO)} holds {len(modules)} modules"


def test_every_sub_package_says_what_lives_there():
    for init in REPO.glob("*/**/__init__.py"):
        if init.parts[len(REPO.parts)] in PACKAGES:
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert doc and "Imports" in doc, f"{init.relative_to(REPO)} needs a docstring naming its imports"
