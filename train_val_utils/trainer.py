"""`Trainer`: one training run from a frozen `RunConfig` to best.pt (the body of train.py).

`fit()` reads as the run does: for each epoch, `train_epoch` then `after_epoch` (evaluate, patience,
save), then `finalize`. Set-up order matters for exact resume: seeds, model, starting weights,
freezing, optimizer, schedule, scaler, EMA, data, then the saved state on top. Rank 0 alone writes
files; plots are drawn in a background thread so no epoch waits for matplotlib.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from build_utils.atomic import remove_stale_temp_files
from build_utils.data_cfg import parse_data_cfg
from build_utils.datasets import LoadImagesAndLabels, collate_fn, validation_loader
from build_utils.errors import DiskFullError, UserError
from build_utils.hyp import load_hyp, optimizer_hyp, validate_hyp
from build_utils.parse_config import read_cfg_text
from build_utils.run_dir import RunLock, check_writable, make_run_dir
from build_utils.torch_utils import unwrap_model
from modules.checkpoint import (
    build_checkpoint,
    deployable_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from modules.loading import as_deployed, load_model
from modules.memory_estimate import check_cfg_memory
from modules.model import DarkNet
from train_val_utils.engine import StepSchedule, TrainKit, evaluate, scoring_options, train_one_epoch
from train_val_utils.evaluation.reporting import eta_text
from train_val_utils.loss import YoloLoss
from train_val_utils.training.distill import Distiller, load_teacher
from train_val_utils.training.distributed_utils import DistInfo, barrier, broadcast_object, pin_cpu_threads
from train_val_utils.training.elastic import mark_run_folder
from train_val_utils.training.ema import ModelEMA
from train_val_utils.training.image_weights import ImageWeightSampler
from train_val_utils.training.mid_epoch import MidEpochSaver, ResumeSampler, restore_position
from train_val_utils.training.optim import build_optimizer, cosine_lr_lambda, log_step_plan, warmup_iterations
from train_val_utils.training.plot_queue import PlotQueue
from train_val_utils.training.resume import mark_finished, only_finalisation_left, reconcile_best
from train_val_utils.training.run_config import RunConfig, resolve_amp
from train_val_utils.training.run_logger import RunLogger, write_args_yaml
from train_val_utils.training.sparsity import bn_scales, plot_bn_histogram
from train_val_utils.training.train_plots import plot_labels, plot_results
from train_val_utils.training.train_setup import (
    ClassTransfer,
    class_mismatch_error,
    first_closed_epoch,
    freeze_layers,
    load_start_weights,
    mosaic_plan,
    seed_everything,
)

logger = logging.getLogger(__name__)

NOT_EVALUATED = {"precision": math.nan, "recall": math.nan, "map50": math.nan, "map": math.nan}
# called on rank 0 after each epoch with (epoch, metrics incl. "fitness"); returning True stops the run
EpochCallback = Callable[[int, dict[str, Any]], bool | None]


def fitness(metrics: dict[str, float]) -> float:
    """The single number best.pt and --patience follow: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95."""
    return 0.1 * float(metrics["map50"]) + 0.9 * float(metrics["map"])


class Trainer:
    """Holds the run's objects; `fit()` trains and returns the final evaluation."""

    def __init__(self, run: RunConfig, dist_info: DistInfo, ckpt: dict[str, Any] | None = None,
                 ckpt_path: Path | None = None, epoch_callback: EpochCallback | None = None) -> None:
        run = resolve_amp(run, dist_info.device, resumed=ckpt is not None)
        self.run, self.dist, self.device = run, dist_info, dist_info.device
        self.epoch_callback = epoch_callback  # e.g. the --evolve trial's pruning check
        seed_everything(run.seed, run.deterministic)
        pin_cpu_threads(dist_info, run.deterministic)
        self.hyp = validate_hyp(ckpt["hyp"], str(ckpt_path)) if ckpt else load_hyp(run.hyp)
        self._setup_data_cfg()
        self.model = self._build_model(ckpt)
        self._setup_optimization()
        self._setup_data()
        self.start_epoch, self.best_fitness, rows = 0, -1.0, []
        self.position = None  # where inside its epoch a mid-epoch last.pt resumes
        self.finalize_only = ckpt is not None and only_finalisation_left(ckpt, run.epochs)
        # what last.pt holds now (re-saved with finished=True at the end of finalize) and its epoch
        self.last_ckpt = ckpt if self.finalize_only else None
        self.saved_epoch: int | None = int(ckpt["epoch"]) if ckpt is not None else None
        if ckpt is not None:
            self.start_epoch, self.best_fitness = restore_training_state(
                ckpt, self.model, self.ema, self.optimizer, self.scaler, self.scheduler)
            rows = ckpt.get("results", [])
            if isinstance(self.sampler, ImageWeightSampler) and ckpt.get("class_maps") is not None:
                self.sampler.set_class_maps(ckpt["class_maps"])
            self.save_dir = ckpt_path.parent.parent
            self.position = restore_position(ckpt, ckpt_path, dist_info, self.batch)
            if self.position is not None:
                logger.info("resuming %s inside epoch %d at batch %d (saved mid-epoch)", ckpt_path,
                            self.position.epoch, self.position.batch)
            elif self.finalize_only:
                logger.info("%s: every epoch is trained but the final evaluation did not run (interrupted); "
                            "finishing it now", ckpt_path)
            else:
                logger.info("resuming %s at epoch %d of %d", ckpt_path, self.start_epoch, run.epochs)
        else:
            self.save_dir = self._new_run_dir()
        self.wdir = self.save_dir / "weights"
        self.best_epoch: int | None = None  # epoch of best.pt
        self.lock = dist_info.on_main(lambda: RunLock(self.save_dir).acquire())  # one live run per folder
        self.mid_epoch = MidEpochSaver(dist_info, self.batch, run.save_period_steps, run.save_period_min,
                                       self._save_mid_epoch)
        if dist_info.is_main:
            check_writable(self.save_dir, self.wdir)  # a read-only folder fails now, not after an epoch
            remove_stale_temp_files(self.wdir, ("last.pt", "best.pt"))
            if ckpt is not None:
                self.best_fitness, self.best_epoch = reconcile_best(ckpt, self.wdir / "best.pt")
        self.plots = PlotQueue(enabled=dist_info.is_main)
        self.log = dist_info.on_main(RunLogger, self.save_dir, run.epochs, rows)
        self.epochs_run, self.stale_epochs = 0, 0
        self.final_eval: tuple[int, dict[str, Any]] | None = None  # (epoch, metrics) evaluated with plots
        if dist_info.is_main:
            write_args_yaml(self.save_dir, run.as_dict(), self.hyp)
            if ckpt is None:
                self.plots.submit(plot_labels, self.train_set.labels, self.names,
                                  self.save_dir / "labels.jpg")

    # ---- set-up -------------------------------------------------------------------------------
    def _setup_data_cfg(self) -> None:
        data = parse_data_cfg(self.run.data)
        self.data = data
        self.nc = 1 if self.run.single_cls else int(data["classes"])
        self.names = ["object"] if self.run.single_cls else list(data["class_names"])
        ids = data.get("category_ids")
        self.category_ids = None if self.run.single_cls or not isinstance(ids, list) else ids
        # the split's one ground truth (COCO JSON or labels), as validation.py and benchmark.py score it
        self.eval_options = scoring_options(data, self.run.data, single_cls=self.run.single_cls)

    def _build_model(self, ckpt: dict[str, Any] | None) -> torch.nn.Module:
        """A resumed run is built from the cfg text in its checkpoint (resume checked the file agrees)."""
        run = self.run
        stored = ckpt.get("cfg_text") if ckpt is not None else None
        text = stored if isinstance(stored, str) else read_cfg_text(run.cfg)
        largest = run.img_size * 3 // 2 if run.multi_scale else run.img_size  # multi-scale goes up to 1.5x
        mixed = run.amp or (run.amp is None and self.device.type == "cuda")  # 2-byte activations
        check_cfg_memory(text, run.cfg, batch=max(run.batch_size // self.dist.world_size, 1), height=largest,
                         width=largest, training=True, device=self.device, fix="--img-size or --batch-size",
                         activation_bytes=2 if mixed else 4)
        model = DarkNet(run.cfg, cfg_text=text)
        if model.nc != self.nc:
            raise class_mismatch_error(model, run.cfg, run.data, self.nc, run.single_cls)
        if ckpt is None:
            transfer = ClassTransfer(self.names, run.source_names) if run.transfer else None
            load_start_weights(model, run.weights, transfer)
        freeze_layers(model, run.freeze)
        model.to(self.device)
        if run.channels_last:
            model.to(memory_format=torch.channels_last)
        self.max_stride = model.max_stride
        if self.dist.distributed:
            if run.sync_bn and self.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def _setup_optimization(self) -> None:
        run = self.run
        self.optim_hyp = optimizer_hyp(self.hyp)
        self.optimizer = build_optimizer(unwrap_model(self.model), run.optimizer, self.optim_hyp)
        self.lr_lambda = cosine_lr_lambda(run.epochs, self.optim_hyp.lrf)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lr_lambda)
        cuda = self.device.type == "cuda"
        self.amp = bool(run.amp)  # resolve_amp made auto concrete
        self.amp_dtype = getattr(torch, run.amp_dtype) if cuda else torch.bfloat16
        use_scaler = self.amp and self.amp_dtype == torch.float16  # bfloat16 needs no loss scaling
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.ema = ModelEMA(self.model) if run.ema else None
        forward_model = torch.compile(self.model) if run.compile else self.model
        loss_fn = YoloLoss(self.model, self.hyp, run.img_size)
        distiller = None
        if run.teacher and run.distill > 0:  # --distill 0 turns the teacher off without editing the command
            teacher = load_teacher(run.teacher, run.teacher_cfg, self.model, self.device, run.channels_last)
            distiller = Distiller.for_student(teacher, self.model, loss_fn.gains, run.distill)
        self.kit = TrainKit(model=forward_model, loss_fn=loss_fn, optimizer=self.optimizer,
                            scaler=self.scaler, ema=self.ema, device=self.device, dist=self.dist,
                            ema_source=self.model, distiller=distiller)

    def _loader(self, dataset: LoadImagesAndLabels, batch: int, workers: int,
                sampler: Any = None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch, sampler=sampler, shuffle=False, num_workers=workers,
                          pin_memory=self.device.type == "cuda", collate_fn=collate_fn,
                          persistent_workers=workers > 0)

    def _setup_data(self) -> None:
        run, world = self.run, self.dist.world_size
        if run.batch_size % world:
            raise UserError(f"--batch-size {run.batch_size} is not divisible by the {world} torchrun "
                            "processes; pass a multiple of the process count")
        self.batch = run.batch_size // world
        self.accumulate = max(round(run.nbs / run.batch_size), 1)
        workers = min(run.workers, os.cpu_count() or 1)
        # labels are checked against the .data class count; --single-cls then maps them all to 0
        common = dict(img_size=run.img_size, hyp=self.hyp, single_cls=run.single_cls, stride=self.max_stride,
                      nc=int(self.data["classes"]), strict=run.strict, cache_images=run.cache_images)
        self.train_set = LoadImagesAndLabels(self.data["train"], batch_size=self.batch, augment=True,
                                             rect=run.rect, seed=run.seed, **common,
                                             mosaic_epochs=first_closed_epoch(run.epochs, run.close_mosaic))
        if run.image_weights:
            if run.rect:
                raise UserError("--image-weights draws images at random, --rect needs them in aspect order; "
                                "drop one of the two")
            self.sampler: Any = ImageWeightSampler(self.train_set.labels, self.nc, run.seed, self.dist.rank,
                                                   world)
        elif self.dist.distributed:
            self.sampler = DistributedSampler(self.train_set, shuffle=not run.rect, seed=run.seed)
        elif run.rect:
            self.sampler = SequentialSampler(self.train_set)
        else:
            self.shuffle_gen = torch.Generator()
            self.sampler = RandomSampler(self.train_set, generator=self.shuffle_gen)
        self.loader_sampler = ResumeSampler(self.sampler)  # skips a resumed epoch's trained batches
        self.train_loader = self._loader(self.train_set, self.batch, workers, self.loader_sampler)
        self.val_loader = None
        if self.dist.is_main:
            self.val_loader = validation_loader(
                self.data["valid"], run.img_size, self.batch * 2, int(self.data["classes"]), True, workers,
                self.device.type == "cuda", stride=self.max_stride, single_cls=run.single_cls,
                strict=run.strict, cache_images=run.cache_images, persistent_workers=True)
        nb = len(self.train_loader)
        warmup_iters = warmup_iterations(nb, self.optim_hyp, nb * run.epochs)
        self.schedule = StepSchedule(
            accumulate=self.accumulate, nbs=run.nbs, warmup_iters=warmup_iters, img_size=run.img_size,
            optim_hyp=self.optim_hyp,
            multi_scale=run.multi_scale, grid=self.max_stride, amp=self.amp, amp_dtype=self.amp_dtype,
            seed=run.seed, channels_last=run.channels_last, sr=run.sr, sr_keep=run.sr_keep)
        logger.info("batch %d per rank x %d rank(s), accumulate %d (nominal batch %d), AMP %s, "
                    "channels_last %s, compile %s", self.batch, world, self.accumulate, run.nbs,
                    f"on ({self.amp_dtype})" if self.amp else "off", run.channels_last, run.compile)
        log_step_plan(nb, run.epochs, warmup_iters, self.accumulate)
        plan = mosaic_plan(run.epochs, run.close_mosaic, self.train_set.hyp.mosaic, run.rect)
        if plan and self.dist.is_main:
            logger.info("%s", plan)

    def _new_run_dir(self) -> Path:
        path = self.dist.on_main(make_run_dir, self.run.project, self.run.name, self.run.exist_ok)
        path = Path(broadcast_object(str(path) if path else None, self.dist))
        (path / "weights").mkdir(parents=True, exist_ok=True)
        self.dist.on_main(mark_run_folder, path)  # a torchrun restart finds this run by its id
        return path

    # ---- the run --------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        last_epoch = self.start_epoch if self.finalize_only else self.run.epochs  # finalize_only: train none
        started = time.time()
        try:
            for epoch in range(self.start_epoch, last_epoch):
                losses, seconds = self.train_epoch(epoch)
                self.epochs_run += 1
                if self.after_epoch(epoch, losses, seconds):
                    break
                if self.dist.is_main and epoch + 1 < last_epoch:  # the run's pace so far, evaluation included
                    left = last_epoch - epoch - 1
                    logger.info("%s", eta_text(time.time() - started, self.epochs_run, left))
            barrier(self.dist)
            return self.finalize()
        finally:
            if self.lock is not None:
                self.lock.release()

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        """One pass over the training data; returns the epoch's losses and lr, and its seconds."""
        self.train_set.set_epoch(epoch)
        if isinstance(self.sampler, DistributedSampler | ImageWeightSampler):
            self.sampler.set_epoch(epoch)
        elif isinstance(self.sampler, RandomSampler):
            self.shuffle_gen.manual_seed(self.run.seed * 1_000_003 + epoch)  # same order after resume
        start = time.time()
        on_batch = self._plot_train_batch if epoch == 0 and self.dist.is_main else None
        position = self.position if self.position is not None and self.position.epoch == epoch else None
        self.position = None  # only the first epoch of a resumed run starts inside
        if position is not None:
            self.loader_sampler.skip_next_epoch(position.batch * self.batch)
        losses = train_one_epoch(self.kit, self.train_loader, epoch, self.run.epochs, self.lr_lambda(epoch),
                                 self.schedule, on_batch, start=position.batch if position else 0,
                                 loop_state=position.loop if position else None,
                                 on_step=self.mid_epoch.on_step(epoch))
        lr = self.optimizer.param_groups[1]["lr"]
        self.scheduler.step()
        return {**losses, "lr": lr}, time.time() - start

    def _plot_train_batch(self, ni: int, imgs: torch.Tensor, targets: torch.Tensor, paths: Any) -> None:
        from train_val_utils.evaluation.plots import plot_images

        self.plots.submit(plot_images, imgs.detach().cpu().float(), targets.detach().cpu(), paths,
                          str(self.save_dir / f"train_batch{ni}.jpg"), list(self.names))

    def after_epoch(self, epoch: int, losses: dict[str, float], seconds: float) -> bool:
        """Evaluate (unless --notest skips this epoch), track best and patience, save; True = stop.

        Epochs skipped by --notest log NaN metrics (blank in results.png, never read as mAP 0) and
        neither change the best fitness nor count towards --patience.
        """
        stop = False
        if self.dist.is_main:
            last = epoch == self.run.epochs - 1
            evaluated = not self.run.notest or last
            metrics = self._evaluate(epoch, plots=last) if evaluated else NOT_EVALUATED
            fit = fitness(metrics) if evaluated else math.nan
            improved = evaluated and fit > self.best_fitness
            if improved:
                self.best_fitness, self.best_epoch = fit, epoch
            if evaluated:
                self.stale_epochs = 0 if improved else self.stale_epochs + 1
            if evaluated and isinstance(self.sampler, ImageWeightSampler):
                self.sampler.set_class_maps([c["ap50"] for c in metrics["per_class"]])
            stop = bool(self.run.patience) and self.stale_epochs >= self.run.patience and not last
            self.log.add_row({"epoch": epoch, **losses, **{k: float(metrics[k]) for k in NOT_EVALUATED},
                              "seconds": round(seconds, 2)})
            self._save(epoch, fit, improved, stop)  # writes the row to results.csv once last.pt holds it
            self.plots.submit(plot_results, [dict(r) for r in self.log.rows], self.save_dir / "results.png")
            if self.run.sr:
                self._log_bn_scales(epoch)
            if stop:
                logger.info("early stop: no better fitness for %d epochs (--patience)", self.run.patience)
            if self.epoch_callback is not None and self.epoch_callback(epoch, {**metrics, "fitness": fit}):
                stop = True
        if isinstance(self.sampler, ImageWeightSampler) and self.dist.distributed:
            self.sampler.set_class_maps(broadcast_object(self.sampler.class_maps.tolist(), self.dist))
        self.mid_epoch.period.reset()  # the epoch-end last.pt counts as a save
        return bool(broadcast_object(stop, self.dist))

    def _log_bn_scales(self, epoch: int) -> None:
        """--sr runs: bn_scales.png (redrawn every epoch) and a TensorBoard histogram of |gamma|."""
        scales = bn_scales(unwrap_model(self.model))
        self.plots.submit(plot_bn_histogram, scales, self.save_dir / "bn_scales.png", f"epoch {epoch}:")
        self.log.add_histogram("bn_scales", scales, epoch)

    def _evaluate(self, epoch: int, plots: bool) -> dict[str, Any]:
        """Score what best.pt would hold (`as_deployed`: the EMA rounded to float16, fused), so the log,
        validation.py and benchmark.py print one mAP for one best.pt."""
        metrics = self._score(as_deployed(self.ema.ema if self.ema is not None else unwrap_model(self.model)),
                              plots)
        if plots:
            self.final_eval = (epoch, metrics)
        return metrics

    def _score(self, model: torch.nn.Module, plots: bool) -> dict[str, Any]:
        options = replace(self.eval_options, plots=plots)
        return evaluate(model, self.val_loader, self.names, self.device, options, save_dir=self.save_dir,
                        plotter=self.plots)

    def _save(self, epoch: int, fit: float, improved: bool, stop: bool) -> None:
        """best.pt if improved, then last.pt, then the epoch's row in results.csv/txt and TensorBoard.

        best.pt is committed before the last.pt that records it, so no kill can leave last.pt naming a
        best epoch whose weights were never written (`reconcile_best` keeps a best.pt that is ahead). The
        rows travel in last.pt, so results.csv is never ahead of it; a full disk ends the run with one
        line naming the last good checkpoint (the atomic write keeps the previous file whole).
        """
        ckpt = self.checkpoint(epoch, stop)
        if improved and self.run.savebest:
            self._save_file(deployable_checkpoint(ckpt), self.wdir / "best.pt")  # fp16 EMA only
        self._save_file(ckpt, self.wdir / "last.pt")
        self.last_ckpt, self.saved_epoch = ckpt, epoch  # the state tensors are shared, not copied
        self.log.write_row()
        scored = f"fitness {fit:.4f}" if fit == fit else "not evaluated (--notest)"  # NaN: skipped
        best = f"best {self.best_fitness:.4f}" if self.best_fitness >= 0 else "no evaluation yet"
        logger.info("epoch %d/%d saved to %s (%s, %s)", epoch, self.run.epochs - 1, self.wdir / "last.pt",
                    scored, best)

    def checkpoint(self, epoch: int, stop: bool = False) -> dict[str, Any]:
        """last.pt's dict after `epoch` finished (rank 0; mid-epoch saves add `mid_epoch` to it)."""
        ckpt = build_checkpoint(self.model, self.ema, self.optimizer, self.scaler, self.scheduler, epoch,
                                self.best_fitness, self.hyp, self.run.as_dict(), self.names, self.log.rows,
                                early_stopped=stop, category_ids=self.category_ids)
        if isinstance(self.sampler, ImageWeightSampler):  # --image-weights resumes with the same weights
            ckpt["class_maps"] = self.sampler.class_maps.tolist()
        ckpt["best_epoch"] = self.best_epoch
        return ckpt

    def _save_mid_epoch(self, epoch: int, entry: dict[str, Any]) -> None:
        """last.pt inside `epoch`: the state after epoch - 1's end plus where in `epoch` it stands.
        best.pt is not touched (no evaluation ran), so a mid-epoch save can never lose it."""
        ckpt = self.checkpoint(epoch - 1)
        ckpt["mid_epoch"] = entry
        self._save_file(ckpt, self.wdir / "last.pt")

    def _save_file(self, ckpt: dict[str, Any], path: Path) -> None:
        try:
            save_checkpoint(ckpt, path)
        except DiskFullError as err:
            last = self.wdir / "last.pt"
            saved = self.saved_epoch is not None
            good = f"the last good checkpoint is epoch {self.saved_epoch} ({last})" if saved else \
                "no epoch was saved yet"
            resume = f"`python train.py --resume {last}`" if saved else "run again"
            raise DiskFullError(err.path, err.cause, f"; {good}; free space and {resume}") from None

    def finalize(self) -> dict[str, Any]:
        """Evaluate the final weights (best.pt, else last.pt) with plots, unless that was just done."""
        if not self.dist.is_main:
            return {}
        best = self.wdir / "best.pt"
        final = best if best.is_file() else self.wdir / "last.pt"
        final_epoch = self.best_epoch if final == best else self.start_epoch + self.epochs_run - 1
        if self.final_eval is not None and self.final_eval[0] == final_epoch:
            metrics, how = self.final_eval[1], f"epoch {final_epoch}'s evaluation"
        else:
            metrics = self._score(load_model(final, device=self.device, fuse=True)[0], plots=True)
            how = "evaluated now"
        self.plots.close()
        self.log.close()
        if self.last_ckpt is not None:  # --resume now refuses this run as finished
            self._save_file(mark_finished(self.last_ckpt), self.wdir / "last.pt")
        logger.info("final evaluation of %s (%s): P %.4f R %.4f mAP@0.5 %.4f mAP@0.5:0.95 %.4f", final, how,
                    metrics["precision"], metrics["recall"], metrics["map50"], metrics["map"])
        return {**metrics, "weights": str(final), "save_dir": str(self.save_dir)}
