"""`Trainer`: one training run from options to best.pt (the body of train.py).

Set-up order matters for exact resume: options (from the checkpoint when resuming), seeds, model,
starting weights, freezing, optimizer, schedule, scaler, EMA, data, then the saved state on top.
Each epoch: train_one_epoch, LR step, evaluation of the EMA model on rank 0, results row,
last.pt (and best.pt), all written atomically by rank 0.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from build_utils.datasets import LoadImagesAndLabels, collate_fn
from build_utils.errors import ConfigError, UserError
from build_utils.parse_config import parse_data_cfg
from build_utils.run_dir import increment_path
from build_utils.torch_utils import unwrap_model
from modules.checkpoint import load_checkpoint, save_checkpoint
from modules.loading import load_model
from modules.model import DarkNet
from train_val_utils.checkpoint_state import (
    build_checkpoint,
    find_last_checkpoint,
    restore_training_state,
    resume_options,
    strip_checkpoint,
)
from train_val_utils.distributed_utils import DistInfo, barrier, broadcast_object
from train_val_utils.ema import ModelEMA
from train_val_utils.hyp import load_hyp, optimizer_hyp, validate_hyp
from train_val_utils.loss import YoloLoss
from train_val_utils.optim import build_optimizer, cosine_lr_lambda, warmup_iterations
from train_val_utils.run_logger import RunLogger, write_args_yaml
from train_val_utils.train_eval_body import evaluate
from train_val_utils.train_loop import EpochConfig, train_one_epoch
from train_val_utils.train_plots import plot_labels, plot_results
from train_val_utils.train_setup import freeze_layers, load_start_weights

logger = logging.getLogger(__name__)


def fitness(metrics: dict[str, float]) -> float:
    """The single number best.pt and --patience follow: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95."""
    return 0.1 * float(metrics["map50"]) + 0.9 * float(metrics["map"])


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


class Trainer:
    """Holds the run's objects; `fit()` trains and returns the final evaluation."""

    def __init__(self, args: argparse.Namespace, defaults: dict[str, Any], dist_info: DistInfo) -> None:
        self.dist = dist_info
        self.device = dist_info.device
        ckpt, ckpt_path = self._resume_checkpoint(args, defaults)
        opt = self.opt = args
        seed_everything(opt.seed, opt.deterministic)
        self.hyp = validate_hyp(ckpt["hyp"], str(ckpt_path)) if ckpt else load_hyp(opt.hyp)
        self._setup_data_cfg()
        self.model = self._build_model(ckpt is None)
        self._setup_optimization()
        self._setup_data()
        self.start_epoch, self.best_fitness, rows = 0, -1.0, []
        if ckpt is not None:
            self.start_epoch, self.best_fitness = restore_training_state(
                ckpt, self.model, self.ema, self.optimizer, self.scaler, self.scheduler)
            rows = ckpt.get("results", [])
            self.save_dir = ckpt_path.parent.parent
            logger.info("resuming %s at epoch %d of %d", ckpt_path, self.start_epoch, opt.epochs)
        else:
            self.save_dir = self._new_run_dir()
        self.wdir = self.save_dir / "weights"
        self.rows = rows
        self.log = dist_info.on_main(RunLogger, self.save_dir, opt.epochs, rows)
        self.epochs_run = 0
        if dist_info.is_main:
            write_args_yaml(self.save_dir, vars(opt), self.hyp)
            if ckpt is None:
                plot_labels(self.train_set.labels, self.names, self.save_dir / "labels.jpg")

    # ---- set-up -------------------------------------------------------------------------------
    def _resume_checkpoint(self, args: argparse.Namespace, defaults: dict[str, Any]) -> tuple[Any, Any]:
        if args.resume is None:
            return None, None
        path = find_last_checkpoint(args.project) if args.resume == "latest" else Path(args.resume)
        ckpt = load_checkpoint(path)
        merged = resume_options(ckpt, path, vars(args), defaults)
        merged["resume"] = str(path)
        vars(args).clear()
        vars(args).update(merged)
        return ckpt, path

    def _setup_data_cfg(self) -> None:
        data = parse_data_cfg(self.opt.data)
        self.data = data
        self.nc = 1 if self.opt.single_cls else int(data["classes"])
        self.names = ["object"] if self.opt.single_cls else list(data["class_names"])

    def _build_model(self, fresh: bool) -> torch.nn.Module:
        opt = self.opt
        model = DarkNet(opt.cfg)
        if model.nc != self.nc:
            raise ConfigError(f"{opt.cfg}:0: the cfg has classes={model.nc} but {opt.data} has {self.nc}"
                              f"{' (--single-cls)' if opt.single_cls else ''}; generate a matching cfg: "
                              f"python data/scripts/make_cfg.py --classes {self.nc}")
        if fresh:
            load_start_weights(model, opt.weights)
        freeze_layers(model, opt.freeze)
        model.to(self.device)
        self.max_stride = model.max_stride
        if self.dist.distributed:
            if opt.sync_bn and self.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def _setup_optimization(self) -> None:
        opt = self.opt
        self.optim_hyp = optimizer_hyp(self.hyp)
        self.optimizer = build_optimizer(unwrap_model(self.model), opt.optimizer, self.optim_hyp)
        self.lr_lambda = cosine_lr_lambda(opt.epochs, self.optim_hyp.lrf)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lr_lambda)
        cuda = self.device.type == "cuda"
        self.amp = cuda if opt.amp is None else bool(opt.amp)
        self.amp_dtype = getattr(torch, opt.amp_dtype) if cuda else torch.bfloat16
        use_scaler = self.amp and self.amp_dtype == torch.float16  # bfloat16 needs no loss scaling
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.ema = ModelEMA(self.model) if opt.ema else None
        self.loss_fn = YoloLoss(self.model, self.hyp, opt.img_size)

    def _setup_data(self) -> None:
        opt, world = self.opt, self.dist.world_size
        if opt.batch_size % world:
            raise UserError(f"--batch-size {opt.batch_size} is not divisible by the {world} torchrun "
                            "processes; pass a multiple of the process count")
        self.batch = opt.batch_size // world
        self.accumulate = max(round(opt.nbs / opt.batch_size), 1)
        workers = min(opt.workers, os.cpu_count() or 1)
        # labels are checked against the .data class count; --single-cls then maps them all to 0
        common = dict(img_size=opt.img_size, hyp=self.hyp, single_cls=opt.single_cls, stride=self.max_stride,
                      nc=int(self.data["classes"]), strict=opt.strict, cache_images=opt.cache_images)
        self.train_set = LoadImagesAndLabels(self.data["train"], batch_size=self.batch, augment=True,
                                             rect=opt.rect, seed=opt.seed, **common)
        if self.dist.distributed:
            self.sampler: Any = DistributedSampler(self.train_set, shuffle=not opt.rect, seed=opt.seed)
        elif opt.rect:
            self.sampler = SequentialSampler(self.train_set)
        else:
            self.shuffle_gen = torch.Generator()
            self.sampler = RandomSampler(self.train_set, generator=self.shuffle_gen)
        self.train_loader = DataLoader(self.train_set, batch_size=self.batch, sampler=self.sampler,
                                       num_workers=workers, pin_memory=self.device.type == "cuda",
                                       collate_fn=collate_fn, persistent_workers=workers > 0)
        self.val_loader = None
        if self.dist.is_main:
            val_set = LoadImagesAndLabels(self.data["valid"], batch_size=self.batch * 2, augment=False,
                                          rect=True, **common)
            self.val_loader = DataLoader(val_set, batch_size=self.batch * 2, shuffle=False,
                                         num_workers=workers, collate_fn=collate_fn)
        self.warmup_iters = warmup_iterations(len(self.train_loader), self.hyp)
        logger.info("batch %d per rank x %d rank(s), accumulate %d (nominal batch %d), warm-up %d iterations,"
                    " AMP %s", self.batch, world, self.accumulate, opt.nbs, self.warmup_iters,
                    f"on ({self.amp_dtype})" if self.amp else "off")

    def _new_run_dir(self) -> Path:
        path = self.dist.on_main(increment_path, self.opt.project, self.opt.name, self.opt.exist_ok)
        path = Path(broadcast_object(str(path) if path else None, self.dist))
        (path / "weights").mkdir(parents=True, exist_ok=True)
        return path

    # ---- loop -----------------------------------------------------------------------------------
    def _epoch_config(self, epoch: int) -> EpochConfig:
        opt = self.opt
        plot_dir = self.save_dir if epoch == 0 and self.dist.is_main else None
        return EpochConfig(epoch=epoch, epochs=opt.epochs, accumulate=self.accumulate, nbs=opt.nbs,
                           warmup_iters=self.warmup_iters, img_size=opt.img_size, multi_scale=opt.multi_scale,
                           grid=self.max_stride, amp=self.amp, amp_dtype=self.amp_dtype, seed=opt.seed,
                           names=tuple(self.names), plot_dir=plot_dir)

    def _evaluate(self) -> dict[str, float]:
        model = self.ema.ema if self.ema is not None else unwrap_model(self.model)
        return evaluate(model, self.val_loader, self.names, self.device)

    def _save(self, epoch: int, fit: float, improved: bool) -> None:
        ckpt = build_checkpoint(self.model, self.ema, self.optimizer, self.scaler, self.scheduler, epoch,
                                self.best_fitness, self.hyp, vars(self.opt), self.names, self.log.rows)
        save_checkpoint(ckpt, self.wdir / "last.pt")
        if improved and self.opt.savebest:
            save_checkpoint(ckpt, self.wdir / "best.pt")
        logger.info("epoch %d/%d saved to %s (fitness %.4f, best %.4f)", epoch, self.opt.epochs - 1,
                    self.wdir / "last.pt", fit, self.best_fitness)

    def _run_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        self.train_set.set_epoch(epoch)
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        elif isinstance(self.sampler, RandomSampler):
            self.shuffle_gen.manual_seed(self.opt.seed * 1_000_003 + epoch)  # same order after resume
        start = time.time()
        losses = train_one_epoch(self.model, self.optimizer, self.train_loader, self.device, self.loss_fn,
                                 self.optim_hyp,
                                 self._epoch_config(epoch), self.scaler, self.ema, self.lr_lambda(epoch),
                                 self.dist)
        lr = self.optimizer.param_groups[1]["lr"]
        self.scheduler.step()
        return {**losses, "lr": lr}, time.time() - start

    def fit(self) -> dict[str, Any]:
        opt, stale = self.opt, 0
        # Epochs skipped by --notest log NaN metrics (blank in results.png, never read as mAP 0) and
        # neither change the best fitness nor count towards --patience.
        not_evaluated = {"precision": math.nan, "recall": math.nan, "map50": math.nan, "map": math.nan}
        for epoch in range(self.start_epoch, opt.epochs):
            losses, seconds = self._run_epoch(epoch)
            last = epoch == opt.epochs - 1
            stop = False
            if self.dist.is_main:
                evaluated = not opt.notest or last
                metrics = self._evaluate() if evaluated else not_evaluated
                fit = fitness(metrics) if evaluated else math.nan
                improved = evaluated and fit > self.best_fitness
                self.best_fitness = max(fit, self.best_fitness) if evaluated else self.best_fitness
                if evaluated:
                    stale = 0 if improved else stale + 1
                row = {"epoch": epoch, **losses, **{k: float(metrics[k]) for k in not_evaluated},
                       "seconds": round(seconds, 2)}
                self.log.log_epoch(row)
                plot_results(self.log.rows, self.save_dir / "results.png")
                self._save(epoch, fit, improved)
                stop = bool(opt.patience) and stale >= opt.patience and not last
                if stop:
                    logger.info("early stop: no better fitness for %d epochs (--patience)", opt.patience)
            self.epochs_run += 1
            if broadcast_object(stop, self.dist):
                break
        barrier(self.dist)
        return self._finish()

    def _finish(self) -> dict[str, Any]:
        """Strip best.pt's optimizer and evaluate it (or last.pt without --savebest) once more."""
        if not self.dist.is_main:
            return {}
        self.log.close()
        best = self.wdir / "best.pt"
        final = best if best.is_file() else self.wdir / "last.pt"
        if best.is_file():
            save_checkpoint(strip_checkpoint(load_checkpoint(best)), best)
        model, _ = load_model(final, device=self.device)
        metrics = evaluate(model, self.val_loader, self.names, self.device, save_dir=self.save_dir,
                           plots=True)
        logger.info("final evaluation of %s: P %.3f R %.3f mAP@0.5 %.3f mAP@0.5:0.95 %.3f", final,
                    metrics["precision"], metrics["recall"], metrics["map50"], metrics["map"])
        return {**metrics, "weights": str(final), "save_dir": str(self.save_dir)}
