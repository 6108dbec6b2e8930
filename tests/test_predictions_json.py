"""predictions.json from predict: photos keep their COCO image ids, video frames get integer ids and their
frame number (never one string id for a whole clip)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from train_val_utils.predict.detections_io import ResultWriter
from train_val_utils.predict.sources import Frame


def _frame(path: str, kind: str, frame: int = 0) -> Frame:
    img = np.zeros((8, 8, 3), np.uint8)
    return Frame(path=Path(path), rel=Path(Path(path).name), index=1, total=2, img=img, kind=kind,
                 frame=frame)


def test_video_frames_get_integer_ids_and_their_frame_number(tmp_path: Path) -> None:
    det = np.array([[1.0, 1.0, 5.0, 5.0, 0.9, 2.0]], np.float32)  # (1, 6) one detection of class 2
    writer = ResultWriter(tmp_path, None, save_img=False, save_json=True, category_ids=[1, 2, 3])
    writer.put(_frame("photos/000000000042.jpg", "image"), det)
    for k in (1, 2, 3):
        writer.put(_frame("clip.mp4", "video", k), det)
    writer.put(_frame("other.mp4", "video", 1), det)
    records = json.loads(writer.close().read_text())
    assert [r["image_id"] for r in records] == [42, 1, 2, 3, 4]
    assert all(isinstance(r["image_id"], int) for r in records)
    assert [r.get("frame") for r in records] == [None, 1, 2, 3, 1]
    assert [r["file_name"] for r in records[1:]] == ["clip.mp4"] * 3 + ["other.mp4"]
    assert {r["category_id"] for r in records} == {3}
