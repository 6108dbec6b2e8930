"""What a validation split is scored against: the COCO JSON its data names, else its YOLO labels.

Training-time evaluation, `validation.py` and `benchmark.py` all ask `ground_truth_for` (through
`engine.scoring_options`), so one model on one split is scored against one ground truth everywhere. The
COCO JSON (`valid_json=` in a `.data`, `valid_json:` in a dataset YAML; `coco2yolo.py` writes it) is the
original annotation: crowd boxes are ignored regions there and boxes are not clipped, which the YOLO labels
converted from it cannot say. It needs `category_ids` (class index -> COCO id) to match detections to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from build_utils.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GroundTruth:
    """The COCO JSON to score against (None: the YOLO labels), the COCO id of each class (None: indices)."""

    coco_json: Path | None
    category_ids: list[int] | None

    def describe(self) -> str:
        return f"the COCO annotations {self.coco_json}" if self.coco_json else "the YOLO labels"


def ground_truth_for(data: Mapping[str, Any], source: str | Path, *, single_cls: bool = False) -> GroundTruth:
    """The ground truth of `data`'s validation split (`data` as `parse_data_cfg` returns it, from `source`).

    With `single_cls` every class is one, which the COCO JSON's categories cannot express: the labels are
    scored, with class indices.
    """
    ids = data.get("category_ids")
    ids = [int(i) for i in ids] if isinstance(ids, list | tuple) else None
    coco_json = data.get("valid_json")
    if single_cls:
        if coco_json:
            logger.info("--single-cls: scoring against the YOLO labels, not %s (its categories are many)",
                        coco_json)
        return GroundTruth(coco_json=None, category_ids=None)
    if not coco_json:
        return GroundTruth(coco_json=None, category_ids=ids)
    path = Path(str(coco_json))
    if not path.is_file():
        raise ConfigError(f"{source}: valid_json={coco_json} not found; point it at the COCO JSON of the "
                          "validation images (coco2yolo.py writes val_instances.json), or remove the line")
    if ids is None:
        raise ConfigError(f"{source}: valid_json= needs category_ids= (class index -> COCO category id; "
                          "coco2yolo.py writes category_ids.json)")
    return GroundTruth(coco_json=path, category_ids=ids)
