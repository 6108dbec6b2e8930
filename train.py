"""Train a Darknet-cfg YOLOv3 model (yolov3-spp by default) on a `.data` dataset.

    python train.py --cfg cfg/yolov3-spp.cfg --data data/shapes/shapes.data --weights '' --epochs 30
    python train.py --resume                       # continue the newest unfinished run under runs/train
    torchrun --nproc_per_node 2 train.py ...       # several GPUs (or CPU processes with gloo)

The loop itself lives in train_val_utils (train_one_epoch, evaluate); this script wires the
pieces together: options, model and starting weights, data loaders, optimizer and schedule,
per-epoch evaluation, checkpoints and the run folder.
"""

from __future__ import annotations

import build_utils.omp_env  # noqa: F401 - first: OpenMP threads then sleep, not spin, when idle

# isort: split
import argparse
import logging
import sys
import time
from typing import Any

import torch

from build_utils.cli import (
    ArgumentParser,
    Terminated,
    check_img_size,
    check_positive,
    run_cli,
    setup_logging,
)
from build_utils.errors import UserError
from train_val_utils.trainer import Trainer
from train_val_utils.training.distributed_utils import (
    DEFAULT_DIST_TIMEOUT_S,
    barrier,
    cleanup_distributed,
    init_distributed,
    naming_failed_ranks,
)
from train_val_utils.training.elastic import agree_on_restart, elastic_resume_path
from train_val_utils.training.resume import resume_command
from train_val_utils.training.run_config import resolve_run_config

logger = logging.getLogger("train")


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Train a YOLOv3 / YOLOv3-SPP / YOLOv3-tiny detector.")
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--cfg", default="cfg/yolov3-spp.cfg",
                   help="Darknet model cfg (classes must match --data)")
    p.add_argument("--data", default="data/shapes/shapes.data",
                   help=".data file (classes, train, valid, names) or dataset YAML (path, train, val, names)")
    p.add_argument("--hyp", default="cfg/hyp.yaml", help="hyperparameter file, validated at load")
    p.add_argument("--weights", default="", help="starting weights: '' (from scratch), Darknet .weights "
                   "(darknet53.conv.74-style backbone files recognised by size) or our .pt")
    p.add_argument("--transfer", action=bool_flag, default=True,
                   help="load the predictor rows of the classes --weights knows by name (case, spaces, '_' "
                        "and '-' ignored) in the new class order, the others start from the bias prior; "
                        "--no-transfer: rows of another class count re-initialise, of the same count load")
    p.add_argument("--source-names", default=None, metavar="FILE",
                   help="class names of --weights, one a line; None = a .pt's own names, data/coco.names "
                        "for 80-class Darknet weights")
    p.add_argument("--epochs", type=int, default=30, help="number of epochs")
    p.add_argument("--batch-size", type=int, default=16, help="total batch size (split over torchrun ranks)")
    p.add_argument("--nbs", type=int, default=64,
                   help="nominal batch: accumulate = max(round(nbs / batch), 1)")
    p.add_argument("--img-size", type=int, default=416, help="train and test image size, a multiple of 32")
    p.add_argument("--multi-scale", action=bool_flag, default=False,
                   help="a new size in [0.67, 1.5] x img-size (multiples of 32) every accumulation step")
    p.add_argument("--rect", action=bool_flag, default=False, help="rectangular training batches (no mosaic)")
    p.add_argument("--cache-images", action=bool_flag, default=False, help="keep decoded images in memory")
    p.add_argument("--freeze", choices=("none", "backbone", "heads-only"), default="none",
                   help="freeze the backbone, or everything but the predictor convs")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd",
                   help="SGD is nesterov; BN weights and biases never get weight decay")
    p.add_argument("--device", default="", help="'' (first GPU, else CPU), cpu, 0, or 0,1")
    p.add_argument("--workers", type=int, default=4, help="data-loader worker processes per rank")
    p.add_argument("--amp", action=bool_flag, default=None,
                   help="mixed precision; None = on where the hardware has it: CUDA (float16) and CPUs with "
                        "AVX512_BF16 or AMX (bfloat16); --no-amp = float32, Darknet-exact")
    p.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default="float16",
                   help="autocast dtype; CPU autocast always uses bfloat16")
    p.add_argument("--channels-last", action=bool_flag, default=True,
                   help="model and batches in channels_last memory (faster convs on CPU and GPU; changes "
                        "float rounding, so --no-channels-last for bit-equality with older runs)")
    p.add_argument("--compile", action=bool_flag, default=False,
                   help="torch.compile the training forward (needs a C++ compiler on CPU; first steps slow)")
    p.add_argument("--ema", action=bool_flag, default=True, help="keep an EMA of the weights for evaluation")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue a run: bare --resume = the newest unfinished --project/*/weights/last.pt, "
                        "or PATH")
    p.add_argument("--notest", action=bool_flag, default=False, help="evaluate only after the last epoch")
    p.add_argument("--savebest", action=bool_flag, default=True,
                   help="keep weights/best.pt (highest fitness)")
    p.add_argument("--close-mosaic", type=int, default=10, metavar="N",
                   help="train the last N epochs without mosaic, on whole letterboxed images as evaluation "
                        "sees them (a fine-tune of N epochs or fewer never uses mosaic); 0 = mosaic to the "
                        "end")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after this many epochs without a better fitness (0 = never)")
    p.add_argument("--single-cls", action=bool_flag, default=False, help="train every class as one class")
    p.add_argument("--sync-bn", action=bool_flag, default=False, help="SyncBatchNorm under torchrun on GPUs")
    p.add_argument("--seed", type=int, default=0, help="seed for weights init, shuffling and augmentation")
    p.add_argument("--deterministic", action=bool_flag, default=False,
                   help="deterministic algorithms (bit-exact resume on CPU; slower)")
    p.add_argument("--save-period-steps", type=int, default=0, metavar="N",
                   help="also write last.pt every N optimizer steps inside an epoch (0 = only at epoch "
                        "ends); a resume continues from that step exactly")
    p.add_argument("--save-period-min", type=float, default=0.0, metavar="M",
                   help="also write last.pt mid-epoch once M minutes passed since the last save (0 = off)")
    p.add_argument("--dist-timeout", type=float, default=DEFAULT_DIST_TIMEOUT_S, metavar="S",
                   help="seconds a collective waits for the other ranks before the job fails naming the "
                        "rank that stopped answering (torchrun/srun runs)")
    p.add_argument("--strict", action=bool_flag, default=False, help="any bad image or label is an error")
    p.add_argument("--project", default="runs/train", help="run folders go under this folder")
    p.add_argument("--name", default="exp", help="run folder name (exp, exp2, ... auto-increment)")
    p.add_argument("--exist-ok", action=bool_flag, default=False,
                   help="reuse project/name instead of a new one")
    p.add_argument("--image-weights", action=bool_flag, default=False,
                   help="draw training images by class weight: inverse class frequency x (1 - last AP@0.5)^2")
    p.add_argument("--sr", type=float, default=0.0, metavar="S",
                   help="L1 sparsity on the batch-norm scales, added to their gradients before each step "
                        "(network slimming; then data/scripts/prune.py); 0 = off")
    p.add_argument("--sr-keep", type=float, default=0.0, metavar="K",
                   help="with --sr, from the run's half on: the K share of channels with the largest "
                        "scales (those pruning will keep) get 1%% of the pull; 0 = one pull for all")
    p.add_argument("--teacher", default="", metavar="PATH",
                   help="distil from this model while training (a .pt, or .weights with --teacher-cfg): the "
                        "unpruned model when fine-tuning a pruned cfg; same YOLO layers and classes")
    p.add_argument("--teacher-cfg", default=None, metavar="CFG", help="the cfg of Darknet --teacher weights")
    p.add_argument("--distill", type=float, default=0.25, metavar="W",
                   help="weight of the distillation terms against the label loss (with --teacher); 1 "
                        "pulled a pruned tiny towards a weaker teacher's mAP on coco128, 0.25 did not")
    p.add_argument("--evolve", type=int, default=0, metavar="N",
                   help="hyperparameter search: N Optuna trials (needs the [tune] extra); see --evolve-*")
    p.add_argument("--evolve-sampler", choices=("tpe", "cmaes", "ga"), default="tpe",
                   help="Optuna sampler: TPE, CMA-ES, or ga (NSGA-II genetic, the classic method)")
    p.add_argument("--evolve-storage", default=None, metavar="URL",
                   help="study storage: sqlite:///path.db, postgresql://... or mysql://... (shared by "
                        "many machines); default: sqlite in runs/evolve/expN/study.db")
    p.add_argument("--evolve-name", default=None, help="study name (same storage + name continues it)")
    p.add_argument("--evolve-space", default="cfg/evolve.yaml",
                   help="search space: per hyp key low/high/log; keys not listed stay fixed")
    p.add_argument("--evolve-keep-weights", action=bool_flag, default=False,
                   help="keep every trial's weights/; without it only the best trial keeps them (every "
                        "trial keeps its metrics)")
    p.add_argument("--verbose", action=bool_flag, default=False, help="debug logging")
    return p


def check_options(args: argparse.Namespace) -> None:
    """Option mistakes a user can make, reported before any work starts."""
    check_img_size(args.img_size)
    for flag in ("epochs", "batch_size", "nbs"):
        check_positive(getattr(args, flag), flag)
    for flag in ("workers", "patience", "evolve", "save_period_steps", "sr", "close_mosaic", "distill"):
        check_positive(getattr(args, flag), flag, minimum=0)
    if not 0 <= args.sr_keep < 1:
        raise UserError(f"--sr-keep {args.sr_keep}: a share of the channels in [0, 1) (0.5 keeps half)")
    if args.sr_keep and not args.sr:
        raise UserError(f"--sr-keep {args.sr_keep} without --sr: pass --sr S, the L1 pull it shares out")
    if args.teacher_cfg and not args.teacher:
        raise UserError(f"--teacher-cfg {args.teacher_cfg} without --teacher: pass the Darknet weights to "
                        "distil from")
    if args.save_period_min < 0 or args.dist_timeout <= 0:
        raise UserError(f"--save-period-min {args.save_period_min} must be >= 0 and --dist-timeout "
                        f"{args.dist_timeout} > 0 (minutes, seconds)")
    if args.evolve and args.resume is not None:
        raise UserError("--evolve with --resume: continue a study with the same --evolve-storage and "
                        "--evolve-name instead")


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train; returns the final evaluation of best.pt (or last.pt) as a dict."""
    setup_logging(args.verbose)
    check_options(args)
    defaults = vars(get_args_parser().parse_args([]))
    dist_info = init_distributed(args.device, args.dist_timeout)
    try:
        with naming_failed_ranks(dist_info):  # a hung or dead rank ends the job with its number
            result = evolve(args, defaults, dist_info) if args.evolve else train(args, defaults, dist_info)
            # every rank leaves together: rank 0 alone finalises (evaluation, plots), and a rank that tears
            # its process group down while a peer still uses it can abort that peer's exit (gloo, loopback)
            barrier(dist_info)
            return result
    finally:
        cleanup_distributed()


def train(args: argparse.Namespace, defaults: dict[str, Any], dist_info: Any) -> dict[str, Any]:
    """One run; a torchrun restart (TORCHELASTIC_RESTART_COUNT > 0) resumes its newest last.pt by itself."""
    restart = elastic_resume_path(vars(args), dist_info)
    given = argparse.Namespace(**{**vars(args), "resume": restart}) if restart else args
    run, ckpt, ckpt_path = resolve_run_config(given, defaults)
    if restart:
        agree_on_restart(ckpt, ckpt_path, dist_info)
    trainer = Trainer(run, dist_info, ckpt, ckpt_path)
    start = time.time()
    try:
        result = trainer.fit()
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM from a scheduler (build_utils.cli.Terminated)
        if dist_info.is_main:
            how = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
            logger.warning("%s: %s", how, resume_command(trainer.wdir / "last.pt"))
        raise
    if dist_info.is_main:
        logger.info("%d epochs in %.1f min; results in %s", trainer.epochs_run,
                    (time.time() - start) / 60, trainer.save_dir)
    return result


def evolve(args: argparse.Namespace, defaults: dict[str, Any], dist_info: Any) -> dict[str, Any]:
    """--evolve N: N trials of the Optuna study; returns the best trial's number and values."""
    from build_utils.hyp import load_hyp
    from build_utils.run_dir import make_run_dir
    from train_val_utils.training.run_config import RunConfig
    from train_val_utils.tune.evolve import import_optuna, load_search_space, run_evolve
    from train_val_utils.tune.trial_weights import best_complete_trial

    import_optuna()  # one clear line before any work when the [tune] extra is missing
    run = RunConfig.from_options(vars(args))
    space, base_hyp = load_search_space(args.evolve_space), load_hyp(args.hyp)
    project = "runs/evolve" if args.project == defaults["project"] else args.project
    evolve_dir = make_run_dir(project, args.name, exist_ok=args.exist_ok)
    study = run_evolve(run, base_hyp, space, evolve_dir, dist_info, args.evolve, args.evolve_storage,
                       args.evolve_name, args.evolve_sampler, keep_weights=args.evolve_keep_weights)
    best = best_complete_trial(study)
    logger.info("evolve: %d trials in the study; best %s; hyp_evolved.yaml in %s", len(study.trials),
                f"trial {best.number} fitness {best.value:.4f}" if best else "none complete yet", evolve_dir)
    return {"save_dir": str(evolve_dir), "best_trial": best.number if best else None,
            "best_params": dict(best.params) if best else {}}


if __name__ == "__main__":
    torch.set_printoptions(precision=4)
    sys.exit(run_cli(main, get_args_parser().parse_args()))
