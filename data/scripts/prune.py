"""Remove the channels with the smallest batch-norm scales; write a slimmer plain Darknet cfg and weights.

    python train.py --cfg cfg/yolov3-tiny.cfg --weights yolov3-tiny.weights --sr 0.1 --sr-keep 0.5 ...  # 1.
    python data/scripts/prune.py --weights runs/train/exp/weights/last.pt --target-flops 0.5            # 2.
    python train.py --cfg last-pruned.cfg --weights last-pruned.pt --teacher yolov3-tiny.weights ...    # 3.

Writes OUT.cfg, OUT.pt and OUT.weights (OUT defaults to the weights' path with `-pruned`) and prints
GFLOPs and parameters before and after. The threshold on |gamma| is global; shortcut sums, route
concatenations and `groups` routes keep coupled channels together; predictor convs keep their
filters; each layer keeps at least --floor of its channels, rounded up to multiples of --multiple.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from build_utils.cli import ArgumentParser, check_img_size, run_cli, setup_logging
from build_utils.data_cfg import load_class_names
from build_utils.errors import UserError
from modules.checkpoint import load_checkpoint
from modules.export_utils import load_for_conversion, save_as_checkpoint, save_as_darknet
from modules.prune_apply import prune_model

logger = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--weights", required=True, help="a .pt (best after train.py --sr) or Darknet .weights")
    p.add_argument("--cfg", default=None, help="cfg for Darknet .weights (a .pt carries its own)")
    p.add_argument("--names", default=None,
                   help="class names file for Darknet .weights (e.g. data/coco.names)")
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument("--percent", type=float,
                        help="remove this %% of the prunable channels (global |gamma|)")
    amount.add_argument("--target-flops", type=float, metavar="F",
                        help="remove as few channels as bring the FLOPs to F x the original's (e.g. 0.5)")
    p.add_argument("--floor", type=float, default=0.1,
                   help="every layer keeps at least this share of its channels")
    p.add_argument("--multiple", type=int, default=8, help="kept channel counts are multiples of this")
    p.add_argument("--img-size", type=int, default=416, help="input size the FLOPs are counted at")
    p.add_argument("--out", type=Path, default=None,
                   help="output path without suffix (default: WEIGHTS-pruned)")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False, help="debug logging")
    return p


def check_options(args: argparse.Namespace) -> None:
    """Values a user can get wrong, reported before the model loads."""
    check_img_size(args.img_size)
    if args.percent is not None and not 0 <= args.percent < 100:
        raise UserError(f"--percent {args.percent}: must be in [0, 100)")
    if args.target_flops is not None and not 0 < args.target_flops <= 1:
        raise UserError(f"--target-flops {args.target_flops}: a fraction of the original FLOPs in (0, 1]")
    if not 0 < args.floor <= 1:
        raise UserError(f"--floor {args.floor}: a share of each layer's channels in (0, 1]")
    if args.multiple < 1:
        raise UserError(f"--multiple {args.multiple}: must be at least 1")


def teacher_hint(weights: str | Path) -> str:
    """` --teacher W [--teacher-cfg C]` naming the weights the sparsity run started from (read from the
    checkpoint's options), the distillation teacher the README's recipe uses; '' when unknown."""
    if Path(weights).suffix != ".pt":
        return ""
    options = load_checkpoint(weights).get("options") or {}
    start, cfg = options.get("weights"), options.get("cfg")
    if not start or not Path(start).is_file():
        return ""
    return f" --teacher {start}" + (f" --teacher-cfg {cfg}" if Path(start).suffix != ".pt" and cfg else "")


def main(args: argparse.Namespace) -> dict[str, str]:
    """Prune and write OUT.cfg/.pt/.weights; returns their paths."""
    setup_logging(args.verbose)
    check_options(args)
    model, names, header = load_for_conversion(args.weights, args.cfg)
    if names is None:
        if args.names is None:
            raise UserError(f"{args.weights}: Darknet weights carry no class names; "
                            "pass --names data/coco.names")
        names = load_class_names(args.names)
    pruned, summary, percent = prune_model(model, args.percent, args.target_flops, args.img_size,
                                           args.floor, args.multiple)
    out = args.out or Path(args.weights).with_name(Path(args.weights).stem + "-pruned")
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg_path, pt_path, weights_path = (out.with_name(out.name + ext) for ext in (".cfg", ".pt", ".weights"))
    cfg_path.write_text(pruned.cfg_text, encoding="utf-8")
    pruned.cfg_name = cfg_path.name
    options = {"pruned_from": str(args.weights), "percent": percent, "floor": args.floor,
               "multiple": args.multiple}
    pt = save_as_checkpoint(pruned, names, pt_path, options, header)
    weights = save_as_darknet(pruned, weights_path, header)
    logger.info("pruned %.2f%% of the prunable channels", percent)
    for line in summary.lines():
        logger.info("%s", line)
    logger.info("wrote %s, %s, %s; fine-tune with: python train.py --cfg %s --weights %s",
                cfg_path, pt, weights, cfg_path, pt)
    hint = teacher_hint(args.weights)
    if hint:
        logger.info("and distil from the weights the sparsity run started from, if they predict the same "
                    "classes with the same anchors (README, pruning):%s", hint)
    return {"cfg": str(cfg_path), "pt": str(pt), "weights": str(weights)}


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
