"""Export a model to ONNX or TorchScript (checked against PyTorch), or convert .weights <-> .pt.

    python export.py --weights weights/best.pt --format onnx --img-size 416
    python export.py --weights weights/yolov3-tiny.weights --cfg cfg/yolov3-tiny.cfg --format pt
    python export.py --weights weights/best.pt --format darknet        # -> weights/best.weights
    python export.py --weights weights/best.pt --format onnx --int8 --data data/my.data  # best.int8.onnx

ONNX/TorchScript graphs take `images` (bs, 3, H, W) float RGB in [0, 1] and return `output`
(bs, N, 5+nc) = cx, cy, w, h in input pixels, objectness, class probabilities (run NMS after).
They carry class names, COCO category ids, strides, image size, nc and the cfg (ONNX metadata_props,
TorchScript extra file meta.json), so predict.py and validation.py run them without --cfg or --names and
write the same predictions.json as the .pt (category ids included).
`--int8` quantizes the verified float32 ONNX (static QDQ, per-channel weights, activation ranges from
--calib-images letterboxed images of the --data train split; predictor convs and box decode stay
float32): about twice ONNX float32's speed on a CPU with VNNI, mAP in BENCHMARKS.md.
"""

from __future__ import annotations

import build_utils.omp_env  # noqa: F401 - first: OpenMP threads then sleep, not spin, when idle

# isort: split
import argparse
import logging
import sys
from pathlib import Path

from build_utils.cli import ArgumentParser, check_img_size, check_positive, run_cli, setup_logging
from build_utils.data_cfg import parse_data_cfg
from build_utils.errors import UserError
from build_utils.run_dir import ensure_dir
from build_utils.torch_utils import select_device
from modules import export_utils
from modules.backends import export_metadata
from modules.loading import default_img_size, load_model
from modules.model import DarkNet
from modules.model_fit import model_classes, read_names
from modules.quantize import calibration_images, quantize_int8

logger = logging.getLogger("export")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript", "darknet": ".weights", "pt": ".pt"}
TOLERANCE = 1e-4  # max |exported - PyTorch| in float32, boxes in units of the input size


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__)
    parser.add_argument("--weights", required=True, help="a .pt checkpoint, or Darknet .weights with --cfg")
    parser.add_argument("--cfg", default=None, help="Darknet .cfg for .weights (a .pt carries its own)")
    parser.add_argument("--format", required=True, choices=sorted(SUFFIXES), help="what to write")
    parser.add_argument("--out", default=None,
                        help="output file; None = --weights with the format's suffix")
    parser.add_argument("--names", default=None,
                        help="class names: a .names file, or a .data / dataset YAML (its names and COCO "
                             "category_ids); None = the .pt's, else data/coco.names when the model has 80 "
                             "classes, else the class indices")
    parser.add_argument("--img-size", type=int, default=None,
                        help="square input size of the exported graph; None = the .pt's training size, "
                             "else 416")
    parser.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=False,
                        help="ONNX: variable batch, height and width (any multiple of 32); without it the "
                             "graph takes (1, 3, img-size, img-size) and predict/validation letterbox to it "
                             "(TorchScript traces always take any size)")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=False,
                        help="float16 ONNX/TorchScript (needs a CUDA --device)")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=False,
                        help="ONNX: write the calibrated int8 graph (needs --data) instead of float32")
    parser.add_argument("--data", default=None,
                        help=".data file or dataset YAML whose train images calibrate --int8")
    parser.add_argument("--calib-images", type=int, default=32,
                        help="--int8: images spread over the train split that set the activation ranges")
    parser.add_argument("--device", default="cpu", help="'cpu' or a GPU index such as '0'")
    parser.add_argument("--verify-image", default=None,
                        help="photo for the numerical check against PyTorch; None = seeded noise")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return parser


def check_int8(args: argparse.Namespace) -> None:
    """--int8 makes sense only for ONNX in float32, and needs images to calibrate with."""
    if not args.int8:
        return
    if args.format != "onnx":
        raise UserError(f"--int8 quantizes ONNX graphs; use --format onnx (not {args.format})")
    if args.half:
        raise UserError("--int8 with --half: pick one; int8 is quantized from the float32 graph")
    if not args.data:
        raise UserError("--int8 needs calibration images: pass --data with the .data file you trained with "
                        "(its train= images are used)")
    check_positive(args.calib_images, "calib_images")


def output_path(args: argparse.Namespace) -> Path:
    suffix = ".int8.onnx" if args.int8 else SUFFIXES[args.format]
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(suffix)
    if out.resolve() == Path(args.weights).resolve():
        raise UserError(f"{out}: the output would overwrite --weights; pass --out with another file name")
    return out


def class_names_for(args: argparse.Namespace, names: list[str] | None, model: DarkNet) -> list[str]:
    """--names, else the model's names, else data/coco.names for 80 classes, else the class indices.

    A .data / dataset YAML given as --names also sets the model's `category_ids` (the export and a
    converted .pt carry them); otherwise the model keeps those its .pt recorded."""
    given, ids = read_names(args.names) if args.names else (names, None)
    ids = ids if ids is not None else getattr(model, "category_ids", None)
    classes = model_classes(model.nc, given, ids, names_source=args.names or args.weights,
                            model_source=args.weights, coco_fallback=True)
    model.category_ids = classes.category_ids
    if classes.names is None:
        logger.warning("no class names known: storing the class indices; pass --names for real names")
        return [str(i) for i in range(model.nc)]
    return classes.names


def export_graph(args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """Write ONNX/TorchScript with its metadata; returns its max abs difference from PyTorch on the
    check image (raw, and with boxes in units of the input size, which must stay under TOLERANCE).

    A graph that takes any input size (ONNX with --dynamic, every TorchScript trace) is checked at a
    second size too (two images, 64 px larger), so shape-dependent code cannot hide in the trace."""
    device = select_device(args.device)
    if args.half and device.type != "cuda":
        raise UserError("--half: float16 export needs a CUDA device (--device 0); on CPU export float32")
    model, names = load_model(args.weights, args.cfg, device, fuse=True)
    img_size = default_img_size(args.img_size, model.train_img_size)
    if img_size % model.max_stride:
        raise UserError(f"--img-size {img_size}: must be a multiple of {model.max_stride}")
    dynamic = args.dynamic or args.format == "torchscript"
    meta = export_metadata(model, class_names_for(args, names, model), model.train_img_size or img_size,
                           img_size, dynamic)
    x = export_utils.example_input(img_size, args.verify_image).to(device)
    if args.half:
        model, x = model.half(), x.half()
    if args.format == "onnx":
        graph = out.with_suffix(".fp32.onnx") if args.int8 else out  # verified, then quantized into out
        export_utils.export_onnx(model, x, graph, dynamic=args.dynamic, metadata=meta)
        run = export_utils.onnx_outputs
    else:
        graph = export_utils.export_torchscript(model, x, out, metadata=meta)
        run = export_utils.torchscript_outputs
    checks = [x]
    if dynamic:
        checks.append(export_utils.example_input(img_size + 2 * model.max_stride, args.verify_image,
                                                 batch=2).to(device=device, dtype=x.dtype))
    tolerance = TOLERANCE if not args.half else 1e-2
    worst = (0.0, 0.0)
    for xi in checks:
        size = int(xi.shape[-1])
        raw, norm = export_utils.max_abs_diff(run(graph, xi), export_utils.reference_output(model, xi), size)
        logger.info("%s vs PyTorch on %s at %dx%d, batch %d: max abs difference %.2e (boxes in pixels), "
                    "%.2e (boxes / input size; tolerance %.0e)", graph.name,
                    args.verify_image or "seeded noise", size, size, xi.shape[0], raw, norm, tolerance)
        if norm > tolerance:
            raise RuntimeError(f"{graph}: exported outputs at {size}x{size} differ from PyTorch by "
                               f"{norm:.3e} (> {tolerance:.0e})")
        worst = max(worst, (raw, norm), key=lambda r: r[1])
    if args.int8:
        quantize_graph(args, graph, out, img_size)
    return worst


def quantize_graph(args: argparse.Namespace, graph: Path, out: Path, img_size: int) -> Path:
    """The verified float32 `graph` quantized into `out` (then removed), calibrated on --data's train
    images. int8 steps move outputs far beyond TOLERANCE, so the check that matters is mAP: run
    validation.py on `out`."""
    try:
        calib = calibration_images(parse_data_cfg(args.data)["train"], args.calib_images)
        quantize_int8(graph, out, calib, img_size)
    finally:
        graph.unlink(missing_ok=True)
    logger.info("int8: score it with python validation.py --weights %s --data %s", out, args.data)
    return out


def main(args: argparse.Namespace) -> Path:
    setup_logging(args.verbose)
    if args.img_size is not None:
        check_img_size(args.img_size)
    check_int8(args)
    out = output_path(args)
    ensure_dir(out.parent, "pass --out with a file in a folder you can write to")
    if args.format in ("onnx", "torchscript"):
        export_graph(args, out)
    else:
        model, names, header = export_utils.load_for_conversion(args.weights, args.cfg)
        if args.format == "pt":
            names = class_names_for(args, names, model)
            export_utils.save_as_checkpoint(model, names, out, vars(args), header)
        else:
            export_utils.save_as_darknet(model, out, header)
    logger.info("saved %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
