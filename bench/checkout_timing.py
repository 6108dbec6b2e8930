"""Whole processes timed in two checkouts, alternately: the shared half of `bench_short_run.py` (training)
and `bench_predict_process.py` (predict).

Runs go this, other, this, other, ... so drift in a shared machine's load hits both checkouts; the
table gives each run's seconds and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


def checkout_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with --other and --rounds; each script adds its own flags."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", default=None,
                   help="a second checkout to time alternately (e.g. the previous main)")
    p.add_argument("--rounds", type=int, default=1, help="runs per checkout")
    return p


def alternate(other: str | None, rounds: int, time_one: Callable[[Path, str], float],
              per_run: Callable[[float], str] = lambda s: "") -> dict[Path, list[float]]:
    """Seconds of `time_one(checkout, tag)` per checkout, this one first, alternating for `rounds`."""
    checkouts = [REPO] + ([Path(other).resolve()] if other else [])
    times: dict[Path, list[float]] = {c: [] for c in checkouts}
    for r in range(rounds):
        for c in checkouts:
            seconds = time_one(c, f"runs{r}_{len(times[c])}_{c.name}")
            times[c].append(seconds)
            print(f"round {r}: {c}: {seconds:.1f} s{per_run(seconds)}", flush=True)
    return times


def print_table(times: dict[Path, list[float]], rate: Callable[[float], str] | None = None) -> None:
    """Markdown rows (runs, median, optional rate column) and the speed-up of this checkout."""
    extra = " images/s |" if rate else ""
    print(f"| checkout | runs (s) | median s |{extra}\n| --- | --- | --- |{' --- |' if rate else ''}")
    for c, ts in times.items():
        med = statistics.median(ts)
        print(f"| {c} | {', '.join(f'{t:.1f}' for t in ts)} | {med:.1f} |{f' {rate(med)} |' if rate else ''}")
    if len(times) == 2:
        mine, other = (statistics.median(ts) for ts in times.values())
        print(f"speed-up of {REPO.name} over {list(times)[1].name}: {other / mine:.2f}x")


def fail(checkout: Path, script: str, stderr: str) -> None:
    sys.exit(f"{checkout}: {script} failed:\n{stderr[-2000:]}")
