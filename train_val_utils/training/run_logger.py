"""The text side of a run folder: args.yaml, results.csv, results.txt and TensorBoard scalars.

results.csv has one row per finished epoch with named columns (easy to load in pandas); results.txt
keeps the seed's whitespace line format that older plotting scripts parse. The rows also travel
in the checkpoint, so `--resume` rewrites both files exactly up to the resumed epoch.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ("epoch", "box_loss", "obj_loss", "class_loss", "total_loss", "targets", "img_size",
                  "precision", "recall", "map50", "map", "lr", "seconds")


def write_args_yaml(save_dir: Path, options: dict[str, Any], hyp: dict[str, Any]) -> Path:
    """The resolved options and hyp, so a run folder alone says how it was trained."""
    path = save_dir / "args.yaml"
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"options": options, "hyp": hyp}, f, sort_keys=False)
    return path


def _txt_line(row: dict[str, Any], epochs: int) -> str:
    """Seed format: 'epoch/last  mem  box obj cls total  targets img_size  P R mAP50 mAP lr'."""
    head = f"{int(row['epoch'])}/{epochs - 1}".rjust(10) + "        -"
    losses = "".join(f"{row[k]:10.4g}" for k in ("box_loss", "obj_loss", "class_loss", "total_loss"))
    counts = f"{int(row['targets']):10d}{int(row['img_size']):10d}"
    metrics = "".join(f"{row[k]:10.4g}" for k in ("precision", "recall", "map50", "map", "lr"))
    return head + losses + counts + metrics


class RunLogger:
    """Appends epoch rows to results.csv/results.txt and TensorBoard; rank 0 creates it."""

    def __init__(self, save_dir: Path, epochs: int, rows: list[dict[str, Any]] | None = None,
                 tensorboard: bool = True) -> None:
        self.save_dir = Path(save_dir)
        self.epochs = epochs
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows or []]
        self._rewrite()
        self.tb = self._open_tensorboard() if tensorboard else None

    def _open_tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("TensorBoard logging is off: pip install tensorboard (or '.[tb]') to enable it")
            return None
        logger.info("TensorBoard: tensorboard --logdir %s", self.save_dir.parent)
        return SummaryWriter(log_dir=str(self.save_dir))

    def _rewrite(self) -> None:
        with open(self.save_dir / "results.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in RESULT_COLUMNS} for r in self.rows)
        with open(self.save_dir / "results.txt", "w", encoding="utf-8") as f:
            f.writelines(_txt_line(r, self.epochs) + "\n" for r in self.rows)

    def add_row(self, row: dict[str, Any]) -> None:
        """Record one finished epoch (keys of RESULT_COLUMNS) in `rows` only; `write_row` writes it.

        Two steps so the trainer can save the checkpoint (which carries `rows`) first: results.csv
        is then never ahead of last.pt, even when that save fails on a full disk.
        """
        self.rows.append({k: row[k] for k in RESULT_COLUMNS})

    def write_row(self) -> None:
        """Append the newest row to results.csv, results.txt and TensorBoard."""
        row = self.rows[-1]
        with open(self.save_dir / "results.csv", "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=RESULT_COLUMNS).writerow(row)
        with open(self.save_dir / "results.txt", "a", encoding="utf-8") as f:
            f.write(_txt_line(row, self.epochs) + "\n")
        if self.tb is not None:
            for key in RESULT_COLUMNS[1:]:
                if key not in ("targets", "img_size"):
                    self.tb.add_scalar(key, float(row[key]), int(row["epoch"]))
            self.tb.flush()

    def add_histogram(self, name: str, values: Any, epoch: int) -> None:
        """A TensorBoard histogram (e.g. the batch-norm scales of a --sr run); nothing without TensorBoard."""
        if self.tb is not None:
            self.tb.add_histogram(name, values, epoch)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
