"""End-to-end predict.py speed: images/s over a folder, with the decode / forward / NMS / write split.

    python bench/bench_predict.py                      # coco128 at 416, CPU: yolov3-tiny and yolov3-spp
    python bench/bench_predict.py --device 0 --half    # on a GPU
    python bench/bench_predict.py --weights tiny.pt tiny.onnx tiny.int8.onnx   # any formats, side by side

Runs `predict.main` exactly as the CLI does (decode and letterbox in the prefetch thread, forward
and NMS here, drawing and JPEG writing in the writer thread), fused, annotated images saved to a
temporary folder. yolov3-tiny uses the official weights; yolov3-spp has no weights in the
reference data, so it runs a random-weight `.pt` (speed does not depend on the values, and the
initial objectness bias keeps the detection count realistic). Each setting runs --repeats times
after one warm-up pass (OpenCV/oneDNN set-up per input shape); the best pass is reported, and the
split is summed per stage and divided by the image count (decode and write overlap the forward,
so the stages add up to more than the wall time). The timed passes alternate between the settings
(round robin), so load from other processes hits every row alike: compare rows of one run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
from pathlib import Path

import torch

from build_utils.cli import ArgumentParser, run_cli, setup_logging
from modules import export_utils
from modules.model import DarkNet

logger = logging.getLogger("bench_predict")
REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--source", default=str(REFERENCE / "coco128" / "images"), help="folder of images")
    parser.add_argument("--tiny-weights", default=str(REFERENCE / "weights" / "yolov3-tiny.weights"))
    parser.add_argument("--models", nargs="+", default=["yolov3-tiny", "yolov3-spp"],
                        help="cfg names under cfg/ (yolov3-tiny uses --tiny-weights, others random weights)")
    parser.add_argument("--weights", nargs="+", default=None,
                        help="files of any format (.pt, .weights with --cfg, .onnx, .torchscript) to compare "
                             "instead of --models")
    parser.add_argument("--cfg", default=None, help="cfg for Darknet .weights in --weights")
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=False, help="CUDA only")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per model (best reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


def weights_for(name: str, args: argparse.Namespace, tmp: Path) -> tuple[Path, Path | None]:
    cfg = REPO / "cfg" / f"{name}.cfg"
    if name == "yolov3-tiny" and Path(args.tiny_weights).is_file():
        return Path(args.tiny_weights), cfg
    model = DarkNet(cfg).eval()
    pt = tmp / f"{name}-random.pt"
    export_utils.save_as_checkpoint(model, [str(i) for i in range(model.nc)], pt, {})
    return pt, None


def load_predict():
    """predict.py is a script beside the packages, not one of them: import it from the repository root."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("predict")


def one_pass(weights: Path, cfg: Path | None, args: argparse.Namespace, project: Path):
    argv = ["--weights", str(weights), "--source", args.source, "--img-size", str(args.img_size),
            "--device", args.device, "--batch-size", str(args.batch_size), "--project", str(project),
            "--half" if args.half else "--no-half"]
    if cfg is not None:
        argv += ["--cfg", str(cfg)]
    predict = load_predict()
    stats = predict.main(predict.get_args_parser().parse_args(argv))
    logging.getLogger("train_val_utils.predict.predictor").setLevel(logging.WARNING)  # no per-image lines
    return stats


def settings(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path, Path | None]]:
    """(row label, weights, cfg or None) per row: --weights files as given, else one per --models cfg."""
    if args.weights:
        return [(Path(w).name, Path(w), Path(args.cfg) if args.cfg and Path(w).suffix == ".weights" else None)
                for w in args.weights]
    return [(name, *weights_for(name, args, tmp)) for name in args.models]


def main(args: argparse.Namespace) -> None:
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("train_val_utils.predict.predictor").setLevel(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        runs = settings(args, tmp)
        for _, weights, cfg in runs:
            one_pass(weights, cfg, args, tmp / "runs")  # warm-up
        passes: dict[str, list] = {label: [] for label, _, _ in runs}
        for _ in range(args.repeats):  # round robin: every row sees the same background load
            for label, weights, cfg in runs:
                passes[label].append(one_pass(weights, cfg, args, tmp / "runs"))
        for label, _, _ in runs:
            best = min(passes[label], key=lambda s: s.wall_s)
            n = best.images
            rows.append(f"| {label} | {args.img_size} | {args.batch_size} | {n} | {n / best.wall_s:.1f} | "
                        f"{1000 * best.decode_s / n:.1f} | {1000 * best.forward_s / n:.1f} | "
                        f"{1000 * best.nms_s / n:.1f} | {1000 * best.write_s / n:.1f} |")
            logger.info("row: %s", rows[-1])
    logger.info("device %s, torch %s, %d threads", args.device, torch.__version__, torch.get_num_threads())
    logger.info("| model | size | batch | images | images/s end to end | decode+letterbox ms | forward ms | "
                "NMS ms | draw+write ms |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n%s",
                "\n".join(rows))


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
