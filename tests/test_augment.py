"""Augmentation keeps boxes on their objects: letterbox, random_affine, mosaic, flips, HSV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from build_utils.dataset.augment import augment_hsv, letterbox, random_affine
from build_utils.datasets import LoadImagesAndLabels
from train_val_utils.training.train_setup import mosaic_plan


def test_letterbox_shapes_and_padding() -> None:
    img = np.full((100, 200, 3), 255, np.uint8)
    out, ratio, pad = letterbox(img, 416)
    assert out.shape == (416, 416, 3) and ratio == (2.08, 2.08) and pad == (0.0, 104.0)
    assert (out[:104] == 114).all() and (out[104:312] == 255).all()
    out, _, pad = letterbox(img, 416, auto=True)
    assert out.shape == (224, 416, 3) and pad == (0.0, 8.0)
    out, ratio, pad = letterbox(img, (320, 320), scaleup=False)
    assert ratio == (1.0, 1.0) and pad == (60.0, 110.0)
    out, _, pad = letterbox(np.zeros((10, 11, 3), np.uint8), (14, 14), scaleup=False)
    assert out.shape == (14, 14, 3) and pad == (1.0, 2.0)  # odd padding: left/top get the rounded half


def _white_box_image(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.zeros((*size, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = 255
    return img


def _white_inside(img: np.ndarray, xyxy: np.ndarray, margin: int = 2) -> float:
    x1, y1, x2, y2 = (int(round(v)) for v in xyxy)
    patch = img[y1 + margin:y2 - margin, x1 + margin:x2 - margin]
    return float((patch > 127).mean())


def test_random_affine_box_hugs_object() -> None:
    img = _white_box_image((200, 300), (100, 60, 180, 140))
    labels = np.array([[1, 100, 60, 180, 140]], np.float32)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        out, lab = random_affine(img, labels, degrees=0, translate=0.1, scale=0.4, shear=0, rng=rng)
        assert lab.shape == (1, 5) and lab[0, 0] == 1
        assert _white_inside(out, lab[0, 1:]) > 0.97
        ys, xs = np.nonzero(out[..., 0] > 127)
        x1, y1, x2, y2 = lab[0, 1:]
        assert xs.min() >= x1 - 2 and xs.max() <= x2 + 2 and ys.min() >= y1 - 2 and ys.max() <= y2 + 2
    out, lab = random_affine(img, labels, degrees=30, rng=np.random.default_rng(0))
    ys, xs = np.nonzero(out[..., 0] > 127)  # rotated: the hull box still contains every object pixel
    assert xs.min() >= lab[0, 1] - 2 and xs.max() <= lab[0, 3] + 2


def test_random_affine_drops_boxes_pushed_out() -> None:
    img = _white_box_image((100, 100), (0, 0, 10, 10))
    labels = np.array([[0, 0, 0, 10, 10], [1, 40, 40, 60, 60]], np.float32)
    _, lab = random_affine(img, labels, out_shape=(50, 50), rng=np.random.default_rng(0))
    # output centre = input centre: the box at the corner falls outside the 50x50 crop
    assert lab[:, 0].tolist() == [1.0]
    assert lab[0, 1:].tolist() == pytest.approx([15, 15, 35, 35])


def test_hsv_changes_colour_not_geometry() -> None:
    img = _white_box_image((50, 50), (10, 10, 30, 30))
    img[..., 1] //= 2
    before = img.copy()
    augment_hsv(img, 0.5, 0.5, 0.5, np.random.default_rng(1))
    assert not np.array_equal(img, before)
    assert np.array_equal(img.sum(2) > 0, before.sum(2) > 0)  # dark stays dark: nothing moved


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_dataset_augmentation_keeps_boxes_on_objects(tmp_path: Path, mosaic: float) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        h, w = (160, 240) if i % 2 else (240, 200)
        bw, bh = int(w * rng.uniform(0.2, 0.4)), int(h * rng.uniform(0.2, 0.4))
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        img = _white_box_image((h, w), (x1, y1, x1 + bw, y1 + bh))
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), img)
        cx, cy = (x1 + bw / 2) / w, (y1 + bh / 2) / h
        (tmp_path / "labels" / f"{i}.txt").write_text(f"0 {cx} {cy} {bw / w} {bh / h}\n")
    hyp = {"mosaic": mosaic, "scale": 0.3, "translate": 0.1, "fliplr": 0.5, "flipud": 0.5,
           "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
    ds = LoadImagesAndLabels(tmp_path / "images", img_size=160, augment=True, hyp=hyp, seed=5)
    n_boxes = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            img, labels, _, shapes = ds[i]
            assert (shapes is None) == (mosaic == 1.0)
            arr = img.permute(1, 2, 0).numpy()
            h, w = arr.shape[:2]
            covered = np.zeros((h, w), bool)
            for _, _, cx, cy, bw, bh in labels.tolist():
                xyxy = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
                assert _white_inside(arr, xyxy) > 0.95
                x1, y1, x2, y2 = xyxy.round().astype(int)
                covered[max(y1 - 2, 0):y2 + 2, max(x1 - 2, 0):x2 + 2] = True
                n_boxes += 1
            stray = ((arr[..., 0] > 200) & ~covered).astype(np.uint8)
            _, _, stats, _ = cv2.connectedComponentsWithStats(stray)
            # object pixels outside every box may only be slivers the crop cut (dropped by design)
            assert all(min(sw, sh) <= 14 for _, _, sw, sh, _ in stats[1:].tolist())
    assert n_boxes >= 12


def test_close_mosaic_turns_mosaic_off_for_the_last_epochs(tmp_path: Path) -> None:
    """--close-mosaic: epochs >= mosaic_epochs draw whole letterboxed images even at mosaic p = 1, and
    persistent workers would see it (the switch reads the shared epoch)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), _white_box_image((120, 160), (20, 30, 80, 90)))
        (tmp_path / "labels" / f"{i}.txt").write_text("0 0.3125 0.5 0.375 0.5\n")
    ds = LoadImagesAndLabels(tmp_path / "images", img_size=128, augment=True, hyp={"mosaic": 1.0}, seed=1,
                             mosaic_epochs=2)
    for epoch, mosaic in ((0, True), (1, True), (2, False), (5, False)):
        ds.set_epoch(epoch)
        assert ds.mosaic_open() == mosaic
        assert all((ds[i][3] is None) == mosaic for i in range(len(ds))), epoch  # shapes: None = mosaic
    never = LoadImagesAndLabels(tmp_path / "images", img_size=128, augment=True, hyp={"mosaic": 1.0},
                                mosaic_epochs=0)
    assert not never.mosaic_open() and never[0][3] is not None


def test_mosaic_plan_says_which_epochs_draw_mosaics() -> None:
    assert mosaic_plan(30, 10, 1.0, False) == ("mosaic (p=1) in epochs 0-19, whole images in the last 10 "
                                               "(--close-mosaic 10)")
    assert mosaic_plan(5, 10, 1.0, False).startswith("no mosaic: all 5 epochs on whole images")
    assert mosaic_plan(5, 0, 0.5, False) == "mosaic (p=0.5) in every epoch (--close-mosaic 0)"
    assert mosaic_plan(5, 2, 0.0, False) is None and mosaic_plan(5, 2, 1.0, True) is None  # none, or --rect
