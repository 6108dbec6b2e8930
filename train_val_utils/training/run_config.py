"""`RunConfig`: a training run's options, resolved once (command line, or the checkpoint) and frozen.

Everything below `train.py` reads its settings from this one object; nothing edits the parsed
arguments. On `--resume` the checkpoint's options win, except the few a resumed run may change
(`resume.py`); options added to the suite after a checkpoint was written take this
command line's values.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from build_utils.errors import UserError
from build_utils.torch_utils import fast_dtype
from modules.checkpoint import load_checkpoint
from train_val_utils.training.resume import (
    BEFORE_THE_OPTION_EXISTED,
    check_cfg_unchanged,
    find_last_checkpoint,
    resume_options,
)


@dataclass(frozen=True)
class RunConfig:
    """The options of one training run (the flags of `train.py --help`, which holds their defaults)."""

    cfg: str
    data: str
    hyp: str
    weights: str
    epochs: int
    batch_size: int
    nbs: int
    img_size: int
    multi_scale: bool
    rect: bool
    cache_images: bool
    freeze: str
    optimizer: str
    device: str
    workers: int
    amp: bool | None
    amp_dtype: str
    ema: bool
    resume: str | None
    notest: bool
    savebest: bool
    patience: int
    close_mosaic: int
    single_cls: bool
    sync_bn: bool
    seed: int
    deterministic: bool
    strict: bool
    project: str
    name: str
    exist_ok: bool
    verbose: bool
    channels_last: bool
    compile: bool
    image_weights: bool
    sr: float
    sr_keep: float
    teacher: str
    teacher_cfg: str | None
    distill: float
    evolve: int
    evolve_sampler: str
    evolve_storage: str | None
    evolve_name: str | None
    evolve_space: str
    transfer: bool
    source_names: str | None
    save_period_steps: int
    save_period_min: float
    dist_timeout: float
    evolve_keep_weights: bool

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RunConfig:
        """Build from a plain dict (``vars(args)`` or a checkpoint's options); unknown keys are ignored."""
        missing = [f.name for f in fields(cls) if f.name not in options]
        if missing:
            raise UserError(f"run options lack {', '.join(missing)}; pass them on the command line")
        return cls(**{f.name: options[f.name] for f in fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        """Plain types only: checkpoints store this (weights_only loading reads it)."""
        return asdict(self)


def resolve_run_config(args: argparse.Namespace, defaults: dict[str, Any]
                       ) -> tuple[RunConfig, dict[str, Any] | None, Path | None]:
    """(frozen options, checkpoint to resume or None, its path or None); `args` is left untouched."""
    given = dict(vars(args))
    unknown = sorted(set(given) - {f.name for f in fields(RunConfig)})
    if unknown:  # a train.py flag without a RunConfig field would be silently dropped
        raise TypeError(f"train.py flags without a RunConfig field: {', '.join(unknown)}")
    if given.get("resume") is None:
        return RunConfig.from_options(given), None, None
    path = find_last_checkpoint(given["project"]) if given["resume"] == "latest" else Path(given["resume"])
    ckpt = load_checkpoint(path)
    merged = resume_options(ckpt, path, given, defaults)
    check_cfg_unchanged(ckpt, path, merged["cfg"])
    merged["resume"] = str(path)
    for key, value in BEFORE_THE_OPTION_EXISTED.items():  # a checkpoint from an older version
        merged.setdefault(key, value)
    return RunConfig.from_options({**given, **merged}), ckpt, path


def resolve_amp(run: RunConfig, device: torch.device, resumed: bool) -> RunConfig:
    """`--amp` left on auto (None) made concrete, so checkpoints record what ran and a resume keeps it.

    Auto is on where the device computes reduced precision natively: CUDA (float16, or --amp-dtype) and
    CPUs with AVX512_BF16 or AMX (bfloat16, twice float32's convolution rate; BENCHMARKS.md has the
    accuracy check). `--no-amp` is the Darknet-exact float32 path. A checkpoint that stores None was
    written when auto meant CUDA only, so it resumes as it ran: on for CUDA, off on every CPU.
    """
    if run.amp is not None:
        return run
    return replace(run, amp=device.type == "cuda" if resumed else fast_dtype(device) is not None)
