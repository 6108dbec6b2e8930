"""Run a detector on images, folders, globs, .txt lists, videos, cameras or URLs; save annotated results.

    python predict.py --weights weights/best.pt --source data/images
    python predict.py --weights weights/yolov3-tiny.weights --cfg cfg/yolov3-tiny.cfg \\
        --names data/coco.names --source clip.mp4 --img-size 416 --save-txt
    python predict.py --weights weights/best.onnx --source rtsp://camera.local/stream   # ONNX Runtime

Results go to runs/predict/expN: annotated images under their own names (subfolders kept),
videos as .mp4, labels/*.txt (`--save-txt`) and predictions.json (`--save-json`).
"""

from __future__ import annotations

import build_utils.omp_env  # noqa: F401 - first: OpenMP threads then sleep, not spin, when idle

# isort: split
import argparse
import logging
import sys
from pathlib import Path

import torch

from build_utils.cli import (
    ArgumentParser,
    check_fraction,
    check_img_size,
    check_positive,
    run_cli,
    setup_logging,
)
from build_utils.errors import DatasetError
from build_utils.run_dir import make_run_dir
from build_utils.torch_utils import fit_threads_to_free_cores, half_dtype_name, inference_half, select_device
from modules.backends import GRAPH_SUFFIXES, Backend, load_backend
from modules.memory_estimate import check_model_memory
from modules.model_fit import ModelClasses, check_class_filter, input_size, model_classes, read_names
from train_val_utils.evaluation.nms import NMS_AUTO, NMS_CHOICES, NMS_HELP
from train_val_utils.evaluation.thresholds import DEPLOY_CONF_THRES, DEPLOY_IOU_THRES
from train_val_utils.predict.detections_io import ResultWriter
from train_val_utils.predict.predictor import AUTO_BATCH_FILES, PredictOptions, PredictStats, run_predict
from train_val_utils.predict.sources import SourceSpec, is_image, resolve_source

logger = logging.getLogger("predict")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True,
                        help="a .pt, Darknet .weights with --cfg, or an exported .onnx/.torchscript")
    parser.add_argument("--cfg", default=None, help="Darknet .cfg for .weights (a .pt carries its own)")
    parser.add_argument("--names", default=None,
                        help="class names: a .names file (one per line), a .data or a dataset YAML (its "
                             "names and category_ids); None = the .pt's names, else class indices")
    parser.add_argument("--source", required=True,
                        help="an image, a folder (searched recursively), a glob, a .txt list, a video, "
                             "a camera index such as 0, or a URL (rtsp://, rtmp://, http(s)://)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="inference size in pixels (longest side); None = the model's training size "
                             "(a .pt or an export records it), else 416")
    parser.add_argument("--conf-thres", type=float, default=DEPLOY_CONF_THRES,
                        help="minimum score (objectness x class)")
    parser.add_argument("--iou-thres", type=float, default=DEPLOY_IOU_THRES, help="NMS IoU threshold")
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="keep only these class indices")
    parser.add_argument("--agnostic-nms", action=argparse.BooleanOptionalAction, default=False,
                        help="suppress overlapping boxes across classes")
    parser.add_argument("--nms", choices=NMS_CHOICES, default=NMS_AUTO, help=NMS_HELP)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                        help="test-time augmentation: also run the image flipped+enlarged 1.2, scaled 0.83 "
                             "and flipped+scaled 0.67; merge-NMS unless --nms plain is given")
    parser.add_argument("--max-det", type=int, default=300, help="at most this many detections per image")
    parser.add_argument("--device", default="", help="'cpu', a GPU index such as '0', or '' for auto")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=None,
                        help="reduced precision: float16 on CUDA, bfloat16 on a CPU (boxes are decoded and "
                             "NMS runs in float32); None = bfloat16 on a CPU with AVX512_BF16 or AMX (mAP "
                             "within 0.002 of float32 on coco128), else float32; --no-half = float32")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="frames per forward, of one letterboxed shape, gathered from a look-ahead of a "
                             f"few batches; default {AUTO_BATCH_FILES} for files, 1 for a camera or a live "
                             "stream")
    parser.add_argument("--save-txt", action=argparse.BooleanOptionalAction, default=False,
                        help="write labels/<name>.txt: 'class cx cy w h conf' normalised, one file per image")
    parser.add_argument("--save-json", action=argparse.BooleanOptionalAction, default=False,
                        help="write predictions.json: COCO-style detections with file names")
    parser.add_argument("--nosave", action=argparse.BooleanOptionalAction, default=False,
                        help="do not save annotated images or videos (no run folder unless "
                             "--save-txt/--save-json)")
    parser.add_argument("--line-thickness", type=int, default=None,
                        help="box line width (None = by image size)")
    parser.add_argument("--project", default="runs/predict", help="results go to project/name")
    parser.add_argument("--name", default="exp", help="run folder name (exp, exp2, ... when it exists)")
    parser.add_argument("--exist-ok", action=argparse.BooleanOptionalAction, default=False,
                        help="reuse project/name instead of numbering a new folder")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return parser


def default_batch_size(spec: SourceSpec) -> int:
    """--batch-size left out: batches for files (a folder of photos runs about 1.2x faster on a CPU at 4,
    BENCHMARKS.md), one frame at a time for a camera or live stream, where waiting for more adds latency."""
    if spec.camera is not None or spec.url is not None:
        return 1
    if all(is_image(path) for path in spec.files):  # no more than there are photos (memory check, log)
        return max(min(AUTO_BATCH_FILES, len(spec.files)), 1)
    return AUTO_BATCH_FILES


def check_args(args: argparse.Namespace) -> None:
    """Option values refused before any work (sizes not a multiple of the stride are rounded up later)."""
    if args.img_size is not None:
        check_img_size(args.img_size, multiple=None)
    for flag in ("batch_size", "max_det"):
        if getattr(args, flag) is not None:
            check_positive(getattr(args, flag), flag)
    for flag in ("conf_thres", "iou_thres"):
        check_fraction(getattr(args, flag), flag)
    if args.line_thickness is not None:
        check_positive(args.line_thickness, "line_thickness")


def prepare_backend(args: argparse.Namespace, device: torch.device,
                    half: bool) -> tuple[Backend, ModelClasses]:
    """The backend for --weights (a .pt/.weights model fused, float16/bfloat16 when `half`, channels_last; an
    exported .onnx/.torchscript as it is), and its class names and COCO category ids (from --names' file,
    .data or YAML, else what the model records), checked against its class count."""
    backend = load_backend(args.weights, args.cfg, device, half=half, fuse=True, channels_last=True)
    names, category_ids, source = backend.names, backend.category_ids, args.weights
    if args.names:
        names, given_ids = read_names(args.names)
        category_ids = given_ids if given_ids is not None else category_ids
        source = args.names
    return backend, model_classes(backend.nc, names, category_ids, names_source=source,
                                  model_source=args.weights)


def log_precision(precision: str, device: torch.device, why: str) -> None:
    logger.info("predict: %s on %s%s", precision, device, f" ({why})" if why else "")


def log_summary(stats: PredictStats, img_size: int, save_dir: Path | None) -> None:
    n = max(stats.images, 1)
    logger.info("Speed: %.1fms decode+letterbox, %.1fms forward, %.1fms NMS, %.1fms draw+write per image "
                "at %d (decode and write overlap in their own threads); %d images in %.1fs (%.1f images/s)",
                1000 * stats.decode_s / n, 1000 * stats.forward_s / n, 1000 * stats.nms_s / n,
                1000 * stats.write_s / n, img_size, stats.images, stats.wall_s,
                stats.images / max(stats.wall_s, 1e-9))
    if stats.skipped:
        skipped = ", ".join(str(p) for p, _ in stats.skipped)
        logger.warning("%d file(s) skipped or incomplete: %s", len(stats.skipped), skipped)
    if save_dir is not None:
        logger.info("Results saved to %s", save_dir)


def main(args: argparse.Namespace) -> PredictStats:
    setup_logging(args.verbose)
    check_args(args)
    device = select_device(args.device)
    fit_threads_to_free_cores(device)
    half = inference_half(args.half, device)
    exported = Path(args.weights).suffix in GRAPH_SUFFIXES
    spec = resolve_source(args.source)  # a source that cannot be read is the one line, before any other
    batch_size = args.batch_size or default_batch_size(spec)
    if not exported:  # the first line of the run says which precision runs
        auto = half and args.half is None
        log_precision(half_dtype_name(device) if half else "float32", device,
                      "this CPU's native bfloat16; --no-half for float32" if auto else "")
    model, classes = prepare_backend(args, device, half)
    check_class_filter(args.classes, model.nc, args.weights)
    if exported:
        log_precision(model.precision, device, "the exported graph's own")
    size = input_size(args.img_size, trained=model.img_size, stride=model.stride, fixed_hw=model.fixed_hw,
                      model_source=Path(args.weights).name,
                      size_changing="--augment" if args.augment else None)
    names, img_size = classes.names, size.img_size
    check_model_memory(model, args.weights, batch=batch_size, img_size=img_size, device=device)
    saves = not args.nosave or args.save_txt or args.save_json
    save_dir = make_run_dir(args.project, args.name, exist_ok=args.exist_ok) if saves else None
    opts = PredictOptions(img_size=img_size, conf_thres=args.conf_thres, iou_thres=args.iou_thres,
                          classes=args.classes, agnostic=args.agnostic_nms, max_det=args.max_det, half=half,
                          batch_size=batch_size, augment=args.augment, nms=args.nms,
                          fixed_hw=size.fixed_hw)
    writer = ResultWriter(save_dir, names, save_img=not args.nosave, save_txt=args.save_txt,
                          save_json=args.save_json, line_thickness=args.line_thickness,
                          category_ids=classes.category_ids)
    stats = run_predict(model, names, spec, save_dir, opts, device, writer)
    log_summary(stats, img_size, save_dir)
    if stats.images == 0:
        reasons = "; ".join(f"{p}: {why}" for p, why in stats.skipped[:3]) or "no frames"
        raise DatasetError(f"--source {args.source}: no image or frame could be read ({reasons}); "
                           "check the path, the files or the camera index")
    return stats


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
