"""Static int8 quantization of an exported `.onnx` (ONNX Runtime, QDQ format, per-channel weights).

Only the feature extractor is quantized: every node that feeds a convolution, i.e. the backbone and
neck convolutions with their activations, pools, routes and upsamples. The predictor convolutions
and the box decode after them (sigmoid, exp, anchor and grid arithmetic, the final concat) stay
float32: their outputs are logits and pixel coordinates, which 8-bit steps would move by whole
pixels and ~10% in box size, and they hold a small share of the work. Activation ranges come from
a calibration set of letterboxed images (MinMax), typically a few dozen from the train split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from build_utils.dataset.augment import letterbox_chw
from build_utils.dataset.image_io import read_image
from build_utils.dataset.img_list import list_image_files
from build_utils.errors import UserError

logger = logging.getLogger(__name__)


def calibration_images(train: str | Path, count: int) -> list[Path]:
    """`count` images spread evenly over the train split (the first ones are often one scene)."""
    files = list_image_files(train)
    if not files:
        raise UserError(f"{train}: no images to calibrate int8 with; point the .data's train= at images")
    step = max(len(files) // max(count, 1), 1)
    return [Path(f) for f in files[::step][:count]]


def calibration_batches(images: Sequence[Path], img_size: int) -> Iterator[np.ndarray]:
    """(1, 3, S, S) float32 in [0, 1] per image, letterboxed as evaluation does."""
    for path in images:
        chw = letterbox_chw(read_image(path), img_size, scaleup=False).chw  # (3, S, S) uint8 RGB
        yield (chw[None] / np.float32(255)).astype(np.float32)


def feature_nodes(model: object) -> tuple[set[str], list[str]]:
    """(names of nodes that feed some Conv, names of every other node) of an ONNX graph."""
    graph = model.graph  # type: ignore[attr-defined]
    producer = {out: node for node in graph.node for out in node.output}
    feeding: set[str] = set()
    stack = [inp for node in graph.node if node.op_type == "Conv" for inp in node.input]
    while stack:  # walk back from every conv's inputs
        node = producer.get(stack.pop())
        if node is not None and node.name not in feeding:
            feeding.add(node.name)
            stack.extend(node.input)
    return feeding, [n.name for n in graph.node if n.name not in feeding]


def quantize_int8(src: Path, dst: Path, calibration: Sequence[Path], img_size: int) -> Path:
    """Write `dst`, the int8 (QDQ, per-channel, u8 activations / s8 weights) version of `src`."""
    try:
        import onnx
        from onnxruntime import quantization as q
    except ImportError:
        raise UserError("int8 quantization needs the export extra: pip install -e '.[export]'") from None
    if not calibration:
        raise UserError(f"{src}: int8 quantization needs calibration images; none were given")
    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):  # the quantizer addresses nodes by name
        node.name = node.name or f"{node.op_type}_{i}"
    named = dst.with_suffix(".named.onnx")
    onnx.save(model, str(named))
    _, excluded = feature_nodes(model)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_batches(calibration, img_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {model.graph.input[0].name: batch}

    try:
        q.quantize_static(str(named), str(dst), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          nodes_to_exclude=excluded, calibrate_method=q.CalibrationMethod.MinMax)
    finally:
        named.unlink(missing_ok=True)
    if model.metadata_props:  # keep names, strides, sizes: the int8 file describes itself too
        quantized = onnx.load(str(dst))
        props = {p.key: p.value for p in model.metadata_props}
        onnx.helper.set_model_props(quantized, {**props, "precision": "int8", "calibration_images":
                                                str(len(calibration))})
        onnx.save(quantized, str(dst))
    logger.info("int8 %s: %d calibration images at %d, %d float32 nodes kept (predictor convs and decode)",
                dst.name, len(calibration), img_size, len(excluded))
    return dst
