"""`.pt` checkpoints: atomic save, safe load, and class-count-tolerant state-dict loading.

A checkpoint is a dict of tensors and plain Python types only (docs/architecture.md), so it is
read with `torch.load(..., weights_only=True)`: a file carrying a pickled object is refused,
never executed.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from build_utils.atomic import atomic_write
from build_utils.errors import WeightsError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "yolov3-suite/1"


def save_checkpoint(ckpt: Mapping[str, Any], path: str | Path) -> None:
    """Write atomically: temp file in the same folder, flush, fsync, `os.replace`.

    A crash mid-write leaves the previous checkpoint intact instead of a truncated file.
    """
    with atomic_write(path) as f:
        torch.save(dict(ckpt), f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a `.pt` with `weights_only=True` onto the CPU; pickled objects raise `WeightsError`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(
            f"{path}: refused: it carries pickled Python objects, which could run code when loaded "
            f"({first[:200]}). Only checkpoints of tensors and plain types are read; re-save it with "
            "state_dict()s and plain values (e.g. vars(args), not an argparse.Namespace)"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise WeightsError(
            f"{path}: not a readable PyTorch checkpoint ({err}); is the file truncated?"
        ) from None
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt


def load_matching_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                             source: str) -> tuple[int, list[str]]:
    """Copy every tensor whose name and shape match; the rest keep their fresh initialisation.

    This is what lets COCO weights start a model with another class count: the predictor convs
    are skipped and re-initialised. Logs one summary line; matching nothing is an error.
    """
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in own if k not in matched)
    if not matched:
        cfg = getattr(model, "cfg_name", type(model).__name__)
        raise WeightsError(f"{source}: none of its {len(state_dict)} tensors match the model built "
                           f"from {cfg}; is it a checkpoint for a different cfg?")
    model.load_state_dict(matched, strict=False)
    shown = ", ".join(skipped[:8]) + (f", ... ({len(skipped) - 8} more)" if len(skipped) > 8 else "")
    logger.info("loaded %d/%d tensors from %s%s", len(matched), len(own), source,
                f"; re-initialised (name or shape differ): {shown}" if skipped else "")
    return len(matched), skipped
