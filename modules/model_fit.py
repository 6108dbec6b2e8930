"""Does a model fit what a tool asks of it: class names, COCO category ids, and the input size.

predict.py, validation.py, export.py and benchmark.py each pair a model with names (from the `.pt`, an
export's metadata, `--names` or a `.data`) and an image size. The rules, and their messages, live here
once: names and ids must count the model's classes; a fixed-size export (ONNX without `--dynamic`)
letterboxes every image to its one size and cannot run what changes the size (TTA, a size study).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from build_utils.data_cfg import load_class_names, parse_data_cfg
from build_utils.errors import ConfigError, UserError
from build_utils.project_files import PROJECT_ROOT
from modules.loading import default_img_size

logger = logging.getLogger(__name__)

COCO_NAMES = PROJECT_ROOT / "data" / "coco.names"


@dataclass(frozen=True, kw_only=True)
class ModelClasses:
    """A model's class names (None: unknown, labels show indices) and COCO category ids (None: indices)."""

    names: list[str] | None
    category_ids: list[int] | None


def model_classes(nc: int, names: list[str] | None, category_ids: list[int] | None, *, names_source: str,
                  model_source: str, coco_fallback: bool = False) -> ModelClasses:
    """Check `names` and `category_ids` against the model's `nc` classes.

    `names_source` is where the names came from (a `.data`, `--names` file or the model itself) and is
    what the error names; with `coco_fallback`, an 80-class model without names gets `data/coco.names`.
    """
    if names is None and coco_fallback and nc == 80 and COCO_NAMES.is_file():
        logger.info("class names: data/coco.names (80 classes; pass --names to override)")
        names, names_source = load_class_names(COCO_NAMES), str(COCO_NAMES)
    if names is not None and len(names) != nc:
        raise ConfigError(f"{names_source}: {len(names)} class names, but the model ({model_source}) "
                          f"predicts {nc} classes; pass the names or .data the model was trained with")
    if category_ids is not None and len(category_ids) != nc:
        raise ConfigError(f"{names_source}: {len(category_ids)} category_ids for the model's {nc} classes "
                          f"({model_source}); give one COCO id per class, in class order")
    if names is None:
        logger.info("no class names (Darknet weights without --names): labels show class indices; "
                    "pass --names data/coco.names for COCO weights")
    return ModelClasses(names=names, category_ids=category_ids)


def check_class_filter(classes: list[int] | None, nc: int, model_source: str) -> None:
    """`--classes`: every index must be a class of the model (0..nc-1); an index outside would silently
    filter out every detection."""
    bad = [c for c in classes or [] if not 0 <= c < nc]
    if bad:
        raise UserError(f"--classes {' '.join(map(str, bad))}: the model ({model_source}) has {nc} classes, "
                        f"indices 0 to {nc - 1}; pass indices in that range (see its class names)")


def read_names(path: str | Path) -> tuple[list[str], list[int] | None]:
    """`--names`: a `.names` file, or a `.data` / dataset YAML (its class names and category_ids, if any)."""
    if Path(path).suffix.lower() in (".data", ".yaml", ".yml"):
        data = parse_data_cfg(path)
        ids = data.get("category_ids")
        return list(data["class_names"]), ids if isinstance(ids, list) else None
    return load_class_names(path), None


@dataclass(frozen=True, kw_only=True)
class InputSize:
    """The size images are letterboxed to, and a fixed-size export's (H, W) (None: any size)."""

    img_size: int
    fixed_hw: tuple[int, int] | None

    @property
    def allows_rect(self) -> bool:
        """Rectangular batches need a graph that takes any size."""
        return self.fixed_hw is None


def input_size(requested: int | None, *, trained: int | None, stride: int, fixed_hw: tuple[int, int] | None,
               model_source: str, size_changing: str | None = None) -> InputSize:
    """`--img-size` (else the training size, else 416) rounded up to the stride, or a fixed export's size.

    `size_changing` names a requested feature that runs other sizes (`--augment`, `--task study`); a
    fixed-size export refuses it.
    """
    if fixed_hw is not None:
        if size_changing:
            raise ConfigError(f"{model_source}: a fixed-size export cannot run {size_changing} (it changes "
                              "the input size); export with --dynamic, or use the .pt")
        h, w = fixed_hw
        ignored = f" (--img-size {requested} ignored)" if requested is not None else ""
        logger.warning("%s has a fixed input size: letterboxing every image to %dx%d%s; export with "
                       "--dynamic for any size", model_source, w, h, ignored)
        return InputSize(img_size=max(h, w), fixed_hw=fixed_hw)
    wanted = default_img_size(requested, trained)
    img_size = max(stride, -(-wanted // stride) * stride)
    if img_size != wanted:
        logger.warning("--img-size %d is not a multiple of %d; using %d", wanted, stride, img_size)
    return InputSize(img_size=img_size, fixed_hw=None)
