"""docs/architecture.md cannot drift: what it cites exists, and every module is cited.

The page's convention (its section 8), which this file enforces:
- a backticked path ending in `.py` is written from the repository root and must exist;
- a table row (or `- ` bullet) whose first backticked span is a module path is that module's entry; in a
  table column headed "public names" every backticked span must start with a public name defined in the
  module (`Name`, `Name.attr`, `name(args)`); anywhere else in the entry, a span written as a call
  (`name(...)`) must name one too; in a script's entry every `--flag` span must be a flag of its parser;
- a backticked dotted name under `build_utils.`, `modules.` or `train_val_utils.` must import;
- every module of the packages, `data/scripts/` and `bench/`, and every top-level script, is cited;
- the checkpoint table lists exactly the keys the code writes.

Package modules are imported (attributes such as `DarkNet.fuse` resolved on the objects); scripts are
read by AST, so no script runs.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
PACKAGES = ("build_utils", "modules", "train_val_utils")
SCRIPT_DIRS = ("data/scripts", "bench")

SPAN = re.compile(r"`([^`\n]+)`")
PY_PATH = re.compile(r"(?<![\w./-])((?:\.{1,2}/)?(?:[\w.-]+/)*[\w-]+\.py)(?![\w/])")
MODULE_PATH = re.compile(r"^(?:[\w-]+/)*[\w-]+\.py$")
NAME_CHAIN = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
CALL = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\(")
DOTTED = re.compile(r"^((?:build_utils|modules|train_val_utils)(?:\.[A-Za-z_]\w*)+)(?:\(|$)")
FLAG = re.compile(r"^(--[\w-]+)")


# ---- reading the page ------------------------------------------------------------------------------
def split_cells(row: str) -> list[str]:
    """The cells of a markdown table row; a `|` inside backticks does not split."""
    cells, current, in_code = [], [], False
    for ch in row.strip().strip("|"):
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    cells.append("".join(current).strip())
    return cells


def is_separator(cells: list[str]) -> bool:
    return all(c and set(c) <= set("-: ") for c in cells)


def entries(text: str) -> list[tuple[int, list[str], list[tuple[str, str]]]]:
    """(line, module paths, [(column header, cell text)]) of every module entry on the page.

    A table row whose first cell starts with a `.py` path span, or a `- ` bullet starting with one (its
    indented continuation lines included, under the header "")."""
    found, header, lines = [], [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|"):
            cells = split_cells(line)
            if is_separator(cells):
                header = [c.lower() for c in split_cells(lines[i - 1])]
                continue
            first = SPAN.match(cells[0])
            if first and MODULE_PATH.match(first.group(1)):
                paths = [s for s in SPAN.findall(cells[0]) if MODULE_PATH.match(s)]
                found.append((i + 1, paths, list(zip(header + [""] * len(cells), cells))))
        elif re.match(r"^\s*- `", line) and MODULE_PATH.match(SPAN.findall(line)[0]):
            indent = len(line) - len(line.lstrip())
            body = [line]
            for more in lines[i + 1:]:
                if not more.strip() or re.match(r"^\s*- ", more) or len(more) - len(more.lstrip()) <= indent:
                    break
                body.append(more)
            found.append((i + 1, [SPAN.findall(line)[0]], [("", " ".join(body))]))
    return found


# ---- what the code defines -------------------------------------------------------------------------
def dotted_of(path: str) -> str | None:
    """`modules/checkpoint.py` -> `modules.checkpoint` for package modules; None for scripts."""
    parts = Path(path).with_suffix("").parts
    return ".".join(parts) if parts[0] in PACKAGES else None


@functools.cache
def top_level_names(path: str) -> frozenset[str]:
    """Names a file defines at its top level (def, class, assignment), imports excluded."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    names, bodies = set(), [tree.body]
    while bodies:
        for node in bodies.pop():
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            elif isinstance(node, ast.If | ast.Try):
                bodies += [node.body, node.orelse, *[h.body for h in getattr(node, "handlers", [])]]
    return frozenset(names)


@functools.cache
def parser_flags(path: str) -> frozenset[str]:
    """The `--flags` a script's parser declares (read from its `add_argument` calls), with the `--no-`
    form of each `BooleanOptionalAction` switch."""
    flags = set()
    for node in ast.walk(ast.parse((REPO / path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = {str(a.value) for a in node.args if isinstance(a, ast.Constant)
                     and str(a.value).startswith("--")}
            action = next((ast.unparse(k.value) for k in node.keywords if k.arg == "action"), "")
            switch = action.endswith("BooleanOptionalAction") or action == "bool_flag"
            flags |= names | ({f"--no-{n[2:]}" for n in names} if switch else set())
    return frozenset(flags)


def has_attribute(obj: object, attr: str) -> bool:
    """`attr` of a module, class or dataclass: a class attribute, a dataclass field, or `self.attr =`."""
    if attr.startswith("_"):
        return False
    if hasattr(obj, attr) or attr in getattr(obj, "__dataclass_fields__", {}):
        return True
    if inspect.isclass(obj):
        try:
            return re.search(rf"\bself\.{attr}\s*(?::[^=]+)?=", inspect.getsource(obj)) is not None
        except (OSError, TypeError):
            return False
    return False


def name_problem(path: str, chain: str) -> str | None:
    """Why `chain` (`Name` or `Name.attr`) is not a public name of the module at `path`; None if it is."""
    first, *attrs = chain.split(".")
    if first.startswith("_") or first not in top_level_names(path):
        return f"{path} defines no public name {first!r}"
    dotted = dotted_of(path)
    if dotted is None:
        return None  # scripts are not imported: their top-level name is all that is checked
    obj: object = getattr(importlib.import_module(dotted), first)
    for attr in attrs:
        if not has_attribute(obj, attr):
            return f"{path}: {first} has no attribute {attr!r}"
        obj = getattr(obj, attr, None)
    return None


def dotted_problem(chain: str) -> str | None:
    """Why a dotted reference such as `modules.model_fit.input_size` does not resolve; None if it does."""
    parts = chain.split(".")
    for n in range(len(parts), 0, -1):
        module = ".".join(parts[:n])
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:  # a parent package is missing
            spec = None
        if spec is None:
            continue
        if n == len(parts):
            return None
        if spec.submodule_search_locations is not None:  # a package: the next part must be its attribute
            return None if has_attribute(importlib.import_module(module), parts[n]) else \
                f"{module} has no module or attribute {parts[n]!r}"
        return name_problem(module.replace(".", "/") + ".py", ".".join(parts[n:]))
    return f"no module {parts[0]!r}"


# ---- the rules -------------------------------------------------------------------------------------
def path_problems(text: str) -> list[str]:
    """Rule (a): every cited `.py` path exists, written from the repository root."""
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for span in SPAN.findall(line):
            for path in PY_PATH.findall(span):
                if path.startswith("../"):
                    continue
                if "/" not in path and not (REPO / path).is_file():
                    problems.append(f"line {lineno}: `{path}`: write module paths from the repository root "
                                    f"(e.g. `build_utils/{path}`)")
                elif not (REPO / path).is_file():
                    problems.append(f"line {lineno}: `{path}` does not exist")
    return problems


def entry_problems(text: str) -> list[str]:
    """Rule (b): names and flags cited in a module's entry exist in that module."""
    problems = []
    for lineno, paths, cells in entries(text):
        paths = [p for p in paths if (REPO / p).is_file()]  # a missing path is rule (a)'s message
        if not paths:
            continue
        flags = frozenset().union(*(parser_flags(p) for p in paths))
        for header, cell in cells:
            for span in SPAN.findall(cell):
                if MODULE_PATH.match(span) or PY_PATH.search(span):
                    continue
                flag = FLAG.match(span)
                if flag:
                    if flags and flag.group(1) not in flags:
                        problems.append(f"line {lineno}: {' / '.join(paths)} has no flag {flag.group(1)}")
                    continue
                call, name = CALL.match(span), NAME_CHAIN.match(span)
                if header == "public names" and not name:
                    problems.append(f"line {lineno}: `{span}` in the public names of {paths[0]} is not a "
                                    "name")
                    continue
                chain = call or (name if header == "public names" else None)
                if chain is None or DOTTED.match(span):
                    continue
                why = [name_problem(p, chain.group(1)) for p in paths]
                if all(why):
                    problems.append(f"line {lineno}: `{span}`: {why[0]}")
    return problems


def dotted_problems(text: str) -> list[str]:
    """Rule (b), anywhere on the page: `package.module.Name` references import."""
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for span in SPAN.findall(line):
            match = DOTTED.match(span)
            if match and (why := dotted_problem(match.group(1))):
                problems.append(f"line {lineno}: `{span}`: {why}")
    return problems


def project_modules() -> list[str]:
    """Every module the page must cite: package and script-folder modules (no `__init__`), top scripts."""
    found = [p for folder in (*PACKAGES, *SCRIPT_DIRS) for p in (REPO / folder).rglob("*.py")
             if p.name != "__init__.py"]
    found += list(REPO.glob("*.py"))
    return sorted(p.relative_to(REPO).as_posix() for p in found if "__pycache__" not in p.parts)


def cited_paths(text: str) -> set[str]:
    return {path for span in SPAN.findall(text) for path in PY_PATH.findall(span)}


def missing_citation(module: str, text: str) -> str | None:
    """Rule (c): the fix, when the page does not cite `module`."""
    if module in cited_paths(text):
        return None
    folder = Path(module).parent.as_posix()
    where = f"the `{folder}/` table of section 5" if folder.split("/")[0] in PACKAGES else (
        "section 7 (scripts)" if folder == "." else f"the `{folder}/` table of section 7")
    return (f"docs/architecture.md does not cite {module}: add its row (| `{module}` | public names | what "
            f"it holds |) to {where}")


# ---- tests -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_every_cited_module_path_exists(doc):
    problems = path_problems(doc)
    assert not problems, "docs/architecture.md:\n" + "\n".join(problems)


def test_every_cited_name_and_flag_exists(doc):
    problems = entry_problems(doc)
    assert not problems, "docs/architecture.md:\n" + "\n".join(problems)


def test_every_dotted_reference_imports(doc):
    problems = dotted_problems(doc)
    assert not problems, "docs/architecture.md:\n" + "\n".join(problems)


@pytest.mark.parametrize("module", project_modules())
def test_every_module_is_cited(module, doc):
    problem = missing_citation(module, doc)
    assert problem is None, problem


def test_the_page_has_an_entry_for_each_package_module(doc):
    """Citing a module in passing is not enough for the packages: it needs its row of public names."""
    with_entry = {p for _, paths, _ in entries(doc) for p in paths}
    lacking = [m for m in project_modules() if m.split("/")[0] in PACKAGES and m not in with_entry]
    assert lacking == [], f"add a row to section 5 for: {', '.join(lacking)}"


def test_checkpoint_table_matches_what_the_code_writes(doc):
    from modules.checkpoint import build_checkpoint, deployable_checkpoint
    from modules.export_utils import checkpoint_from_model
    from modules.model import DarkNet

    model = DarkNet(REPO / "cfg" / "yolov3-tiny.cfg")
    names = ["a"] * model.nc
    ckpt = build_checkpoint(model, None, None, None, None, 0, 0.0, {}, {"img_size": 416}, names, [])
    written = set(ckpt) | set(deployable_checkpoint(ckpt)) | set(checkpoint_from_model(model, names, {}))
    section = doc.split("## 6.", 1)[1].split("\n## ", 1)[0]
    rows = [split_cells(r) for r in section.splitlines() if r.startswith("| `")]
    documented = {key for cells in rows for key in SPAN.findall(cells[0])}
    trainer = (REPO / "train_val_utils" / "trainer.py").read_text(encoding="utf-8")
    extra = {k for k in documented - written if f'ckpt["{k}"]' not in trainer}
    assert written - documented == set(), "keys the code writes but the table lacks"
    assert extra == set(), "keys in the table that no code writes"


# ---- self-tests: the rules catch planted drift -----------------------------------------------------
def test_a_stale_name_in_the_real_page_is_caught(doc):
    planted = doc.replace("`deployable_checkpoint(ckpt)`", "`strip_checkpoint(ckpt)`", 1)
    assert planted != doc
    assert entry_problems(planted) == [
        f"line {_line_of(planted, 'strip_checkpoint')}: `strip_checkpoint(ckpt)`: modules/checkpoint.py "
        "defines no public name 'strip_checkpoint'"]


def test_planted_drift_of_every_kind_is_caught():
    page = "\n".join([
        "| module | public names | what it holds |",
        "| --- | --- | --- |",
        "| `modules/checkpoint.py` | `save_checkpoint(c, p)`, `RESUME_CHANGEABLE` | `load_checkpoint(p)` |",
        "| `modules/model.py` | `DarkNet.fuse()`, `DarkNet.no_such_method()`, `DarkNet.module_list` | x |",
        "| `build_utils/datasets.py` | `(n, 6) labels` | `strip_checkpoint(ckpt)` |",
        "| `modules/nowhere.py` | `anything` | |",
        "| script | main flags | what |",
        "| --- | --- | --- |",
        "| `train.py` | `--epochs`, `--no-ema`, `--no-seed` | `main(args)`, `evolve(a)`, `gone(args)` |",
        "See `geometry.py`, `modules.model_fit.input_size`, `modules.model_fit.no_such_check`,",
        "`train_val_utils.evaluation.thresholds.EVAL_IOU_THRES` and `build_utils.nowhere.read`.",
        "- `modules/loading.py`: `load_model(weights)` and",
        "  `stale_loader(weights)` on a continuation line.",
    ])
    assert path_problems(page) == [
        "line 6: `modules/nowhere.py` does not exist",
        "line 10: `geometry.py`: write module paths from the repository root "
        "(e.g. `build_utils/geometry.py`)"]
    assert entry_problems(page) == [
        "line 3: `RESUME_CHANGEABLE`: modules/checkpoint.py defines no public name 'RESUME_CHANGEABLE'",
        "line 4: `DarkNet.no_such_method()`: modules/model.py: DarkNet has no attribute 'no_such_method'",
        "line 5: `(n, 6) labels` in the public names of build_utils/datasets.py is not a name",
        "line 5: `strip_checkpoint(ckpt)`: build_utils/datasets.py defines no public name 'strip_checkpoint'",
        "line 9: train.py has no flag --no-seed",
        "line 9: `gone(args)`: train.py defines no public name 'gone'",
        "line 12: `stale_loader(weights)`: modules/loading.py defines no public name 'stale_loader'"]
    assert dotted_problems(page) == [
        "line 10: `modules.model_fit.no_such_check`: modules/model_fit.py defines no public name "
        "'no_such_check'",
        "line 11: `build_utils.nowhere.read`: build_utils has no module or attribute 'nowhere'"]


def test_an_uncited_module_is_named_with_its_fix(doc):
    planted = doc.replace("`modules/quantize.py`", "`modules/export_utils.py`")
    assert missing_citation("modules/quantize.py", planted) == (
        "docs/architecture.md does not cite modules/quantize.py: add its row (| `modules/quantize.py` | "
        "public names | what it holds |) to the `modules/` table of section 5")
    assert missing_citation("modules/quantize.py", doc) is None
    assert "train_val_utils/training/resume.py" in project_modules()
    assert "train.py" in project_modules() and "bench/equality_run.py" in project_modules()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)
