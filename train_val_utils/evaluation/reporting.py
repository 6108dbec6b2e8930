"""What a run prints and writes as text: the epoch bar, the results table, the speed line, record_mAP.txt.

Training and `validation.py` share these, so a number looks the same wherever it is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

LOSS_KEYS = ("box_loss", "obj_loss", "class_loss")
TABLE_HEADER = ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")


def epoch_header() -> str:
    """Column titles above the training progress bar."""
    return "".join(f"{h:>10}" for h in ("epoch", "mem", "box", "obj", "cls", "total", "targets", "size"))


def epoch_bar_text(epoch: int, epochs: int, mean_losses: Sequence[float], n_targets: int, size: int,
                   device: torch.device) -> str:
    """`epoch/last  memory  box obj cls total  targets size` for the tqdm bar. `targets` counts the labelled
    boxes seen so far this epoch, so at the epoch's end it is results.csv's `targets`."""
    mem = f"{torch.cuda.memory_reserved(device) / 1e9:.3g}G" if device.type == "cuda" else "cpu"
    losses = "".join(f"{v:10.4g}" for v in mean_losses)
    return f"{epoch}/{epochs - 1}".rjust(10) + mem.rjust(10) + losses + f"{n_targets:10d}{size:10d}"


def _table_row(name: str, images: int, instances: int, p: float, r: float, ap50: float, ap: float) -> str:
    """Four decimals, as results.csv and benchmark.py: one mAP reads the same in every tool."""
    return f"{name:>20}{images:>11}{instances:>11}{p:>11.4f}{r:>11.4f}{ap50:>11.4f}{ap:>11.4f}"


def results_table(results: dict[str, Any], per_class: bool = False) -> str:
    """`Class Images Instances P R mAP50 mAP50-95`: the 'all' row (COCO mAPs), then optionally per class."""
    lines = [f"{TABLE_HEADER[0]:>20}" + "".join(f"{h:>11}" for h in TABLE_HEADER[1:])]
    lines.append(_table_row("all", results["n_images"], results["n_instances"], results["precision"],
                            results["recall"], results["map50"], results["map"]))
    if per_class:
        lines += [_table_row(c["name"], c["images"], c["instances"], c["p"], c["r"], c["ap50"], c["ap"])
                  for c in results["per_class"] if c["instances"] > 0]
    return "\n".join(lines)


def eta_text(elapsed_s: float, epochs_done: int, epochs_left: int) -> str:
    """`run ETA 12.5 min (7 epochs left at 1.8 min each, evaluation included)` from this run's pace."""
    if epochs_done <= 0 or epochs_left <= 0:
        return "run ETA: done" if epochs_left <= 0 else "run ETA: after the first epoch"
    per_epoch = elapsed_s / epochs_done
    left = per_epoch * epochs_left

    def fmt(s: float) -> str:
        return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"

    epochs = f"{epochs_left} epoch{'s' if epochs_left != 1 else ''}"
    return f"run ETA {fmt(left)} ({epochs} left at {fmt(per_epoch)} each, evaluation included)"


def speed_line(speed_ms: dict[str, float]) -> str:
    """`Speed: 1.0ms pre-process, 20.0ms inference, 2.0ms NMS per image`."""
    return (f"Speed: {speed_ms['pre']:.1f}ms pre-process, {speed_ms['inference']:.1f}ms inference, "
            f"{speed_ms['nms']:.1f}ms NMS per image")


def record_map_text(results: dict[str, Any]) -> str:
    """record_mAP.txt: the COCO summary, then AP@0.5 per class (our metric)."""
    lines = [results["coco_summary"].rstrip(), "", "AP@0.5 per class:"]
    lines += [f"{c['name']:>20}: {c['ap50']:.4f}" for c in results["per_class"] if c["instances"] > 0]
    lines.append(f"{'mAP@0.5 (own)':>20}: {results['own_map50']:.4f}")
    tta = "on" if results.get("augment") else "off"
    lines.append(f"{'NMS':>20}: {results.get('nms', 'plain')}, TTA {tta}")
    return "\n".join(lines) + "\n"
