"""CPU time of building the training dataset when its label cache is present (the start of every run).

    python bench/bench_dataset_build.py --path /tmp/coco128copy --repeats 15

Builds `LoadImagesAndLabels` once to write the cache, then `--repeats` more times and prints the median
process CPU time and wall time of one construction as JSON. Import the tree to measure with PYTHONPATH
(e.g. `cd OTHER_CHECKOUT && PYTHONPATH=. python /path/to/this/script.py`) to compare two versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", required=True, help="images folder (labels beside it, a private copy)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from build_utils.datasets import LoadImagesAndLabels

    LoadImagesAndLabels(args.path, img_size=416, augment=True, nc=80)  # writes the cache
    cpu, wall = [], []
    for _ in range(args.repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        LoadImagesAndLabels(args.path, img_size=416, augment=True, nc=80)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    print(json.dumps({"cpu_ms": 1000 * statistics.median(cpu), "wall_ms": 1000 * statistics.median(wall)}))


if __name__ == "__main__":
    main()
