"""Mutation testing of the numerical core: do the tests fail when the code is wrong?

Copies the repository (sources and tests, not .git or .venv) to a temporary folder, links
`../shared` beside the copy so the reference-data tests run, then for each mutant of
`bench/mutation_table.py`: writes the one-snippet change into the copy, runs only the test files that
cover that module (`pytest -x -q`), records killed (a test failed, the collection broke, or the run
timed out) or survived, and restores the file. The working tree is never modified.

    make mutation                                   # all mutants; exit 1 below --min-rate (0.90)
    python bench/mutation_run.py --only nms letterbox   # mutants whose name contains a word
    python bench/mutation_run.py --list             # the table, no run

Writes `runs/mutation/report.json` (per mutant: status, seconds, the first failing test) and prints
the rate and every survivor with the reason it is accepted, if the table gives one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Queue

from mutation_table import MUTANTS, TESTS, Mutant

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".ruff_cache", "build"}
SKIP_DATA = {"shapes", "shapes-eq"}  # generated datasets under data/


class TableError(Exception):
    """A mutant's snippet is missing or ambiguous, or it names a module without covering tests."""


@dataclass
class Outcome:
    name: str
    path: str
    status: str  # killed | survived | timeout | error
    seconds: float
    killed_by: str = ""
    accepted: str = ""


def check_table(root: Path, mutants: list[Mutant]) -> None:
    """Every snippet present exactly once in its file, names unique, every module mapped to tests."""
    problems, seen = [], set()
    for m in mutants:
        if m.name in seen:
            problems.append(f"{m.name}: duplicate name")
        seen.add(m.name)
        if m.path not in TESTS:
            problems.append(f"{m.name}: {m.path} has no covering tests in TESTS")
        src = root / m.path
        if not src.is_file():
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        count = src.read_text(encoding="utf-8").count(m.find)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            problems.append(f"{m.name}: snippet {m.find!r} {where} in {m.path}; "
                            "update bench/mutation_table.py")
        if m.find == m.replace:
            problems.append(f"{m.name}: replacement equals the snippet")
    for path, tests in TESTS.items():
        problems += [f"TESTS[{path!r}]: {t} does not exist" for t in tests if not (root / t).is_file()]
    if problems:
        raise TableError("mutation table out of date:\n  " + "\n  ".join(problems))


def _ignore(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n in SKIP_DIRS or n.endswith(".egg-info")}
    if Path(folder) == REPO / "data":
        skip |= SKIP_DATA & set(names)
    return skip


def make_copy(base: Path) -> Path:
    """A copy of the repository at base/repo with base/shared linked to ../shared, when present."""
    root = base / "repo"
    shutil.copytree(REPO, root, ignore=_ignore, symlinks=True)
    shared = REPO.parent / "shared"
    if shared.exists():
        (base / "shared").symlink_to(shared, target_is_directory=True)
    return root


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
            "YOLOV3_CACHE": str(root / "runs" / "cache")}


def check_imports_from_copy(root: Path) -> None:
    """The copy's modules must shadow the editable install of the working tree, or nothing is mutated."""
    code = "import train_val_utils.loss as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=_env(root), capture_output=True,
                         text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise TableError(f"the copy imports {out}, not its own sources; check the editable install")


def run_tests(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str, float]:
    """(pytest return code or None on timeout, its output, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.time()
    try:
        done = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        return None, out, time.time() - start
    return done.returncode, done.stdout + done.stderr, time.time() - start


def first_failure(output: str) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return found.group(1) if found else ""


def run_mutant(root: Path, m: Mutant, timeout: float) -> Outcome:
    """Apply one mutation to the copy at `root`, run its tests, restore the file."""
    src = root / m.path
    original = src.read_text(encoding="utf-8")
    try:
        src.write_text(original.replace(m.find, m.replace, 1), encoding="utf-8")
        rc, output, seconds = run_tests(root, TESTS[m.path], timeout)
    finally:
        src.write_text(original, encoding="utf-8")
    if rc is None:
        return Outcome(m.name, m.path, "timeout", seconds, f"timed out after {timeout:.0f} s", m.accepted)
    if rc == 0:
        return Outcome(m.name, m.path, "survived", seconds, "", m.accepted)
    if rc in (1, 2):  # 1: a test failed; 2: interrupted, e.g. the mutant broke the collection
        by = first_failure(output) or f"pytest exit {rc}"
        return Outcome(m.name, m.path, "killed", seconds, by, m.accepted)
    tail = output.strip().splitlines()[-1:] or [""]
    return Outcome(m.name, m.path, "error", seconds, f"pytest exit {rc}: {tail[0]}", m.accepted)


def select(words: list[str] | None) -> list[Mutant]:
    mutants = [m for m in MUTANTS if not words or any(w in m.name for w in words)]
    if not mutants:
        raise TableError(f"no mutant name contains any of {words}")
    return mutants


def summarize(outcomes: list[Outcome], min_rate: float) -> tuple[float, str]:
    scored = [o for o in outcomes if o.status != "error"]
    killed = [o for o in scored if o.status in ("killed", "timeout")]
    rate = len(killed) / max(len(scored), 1)
    lines = [f"mutation score: {len(killed)}/{len(scored)} killed = {rate:.1%} (keep >= {min_rate:.0%})"]
    for o in outcomes:
        if o.status == "survived":
            why = o.accepted or "not accepted: add a test that kills it"
            lines.append(f"  SURVIVED {o.name} ({o.path}): {why}")
        elif o.status == "error":
            lines.append(f"  ERROR    {o.name} ({o.path}): {o.killed_by}")
    return rate, "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", metavar="WORD", help="run the mutants whose name contains a word")
    p.add_argument("--list", action="store_true", help="print the table and the test mapping, run nothing")
    p.add_argument("--jobs", type=int, default=1, help="mutants run at once, each in its own copy")
    p.add_argument("--timeout", type=float, default=600, help="seconds per mutant before it counts as killed")
    p.add_argument("--min-rate", type=float, default=0.90, help="exit 1 when fewer are killed")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="first run every mapped test file unmutated (they must pass)")
    p.add_argument("--report", type=Path, default=REPO / "runs" / "mutation" / "report.json")
    return p


def main(args: argparse.Namespace) -> int:
    mutants = select(args.only)
    check_table(REPO, mutants)
    if args.list:
        for m in mutants:
            print(f"{m.name:48s} {m.path:40s} {m.find!r} -> {m.replace!r}")
        print(f"{len(mutants)} mutants; tests per module: {json.dumps(TESTS, indent=1)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        jobs = max(1, min(args.jobs, len(mutants)))
        roots: Queue[Path] = Queue()
        for j in range(jobs):
            (Path(tmp) / f"w{j}").mkdir()
            roots.put(make_copy(Path(tmp) / f"w{j}"))
        first = roots.get()
        check_imports_from_copy(first)
        if args.baseline:
            tests = tuple(dict.fromkeys(t for m in mutants for t in TESTS[m.path]))
            rc, output, seconds = run_tests(first, tests, args.timeout * 4)
            print(f"baseline: {len(tests)} test files in {seconds:.0f} s, pytest exit {rc}", flush=True)
            if rc != 0:
                print(output[-3000:], file=sys.stderr)
                print("error: the tests fail without any mutation; fix them first", file=sys.stderr)
                return 2
        roots.put(first)

        def work(m: Mutant) -> Outcome:
            root = roots.get()
            try:
                outcome = run_mutant(root, m, args.timeout)
            finally:
                roots.put(root)
            print(f"{outcome.status:8s} {outcome.seconds:6.1f} s  {m.name}  {outcome.killed_by}", flush=True)
            return outcome

        with ThreadPoolExecutor(jobs) as pool:
            outcomes = list(pool.map(work, mutants))
    rate, text = summarize(outcomes, args.min_rate)
    print(text)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps({"rate": rate, "mutants": [asdict(o) for o in outcomes]}, indent=1))
    print(f"report: {args.report}")
    return 0 if rate >= args.min_rate else 1


if __name__ == "__main__":
    try:
        sys.exit(main(get_args_parser().parse_args()))
    except TableError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
