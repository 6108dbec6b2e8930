"""Box conversions, IoU, clipping, and scale_coords inverting the data helper's letterbox on odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train_val_utils.boxes import box_iou, clip_coords, scale_coords, xywh2xyxy, xyxy2xywh


def test_conversions_round_trip_and_values() -> None:
    xywh = torch.tensor([[50.0, 40.0, 20.0, 10.0], [0.5, 0.5, 1.0, 1.0]])
    xyxy = xywh2xyxy(xywh)
    assert xyxy.tolist() == [[40.0, 35.0, 60.0, 45.0], [0.0, 0.0, 1.0, 1.0]]
    assert torch.allclose(xyxy2xywh(xyxy), xywh)
    assert xywh.tolist()[0] == [50.0, 40.0, 20.0, 10.0]  # input untouched
    arr = np.array([[50.0, 40.0, 20.0, 10.0]])
    assert isinstance(xywh2xyxy(arr), np.ndarray)
    assert xywh2xyxy(arr).tolist() == [[40.0, 35.0, 60.0, 45.0]]
    assert arr.tolist() == [[50.0, 40.0, 20.0, 10.0]]


def test_box_iou_hand_computed() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 2, 2]])
    b = torch.tensor([[5.0, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    expected = torch.tensor([[25 / 175, 1.0, 0.0], [0.0, 4 / 100, 0.0]])
    assert torch.allclose(iou, expected)


def test_clip_coords() -> None:
    boxes = torch.tensor([[-5.0, -1, 700, 300]])
    assert clip_coords(boxes, (200, 640)).tolist() == [[0.0, 0.0, 640.0, 200.0]]
    assert boxes.tolist() == [[-5.0, -1, 700, 300]]


@pytest.mark.parametrize("h0,w0,new_shape,auto", [(333, 517, 416, False), (517, 333, 416, False),
                                                  (333, 517, 416, True), (101, 77, (320, 416), False)])
def test_scale_coords_inverts_letterbox(h0: int, w0: int, new_shape, auto: bool) -> None:
    augment = pytest.importorskip("build_utils.augment", reason="letterbox not there yet")
    img = np.zeros((h0, w0, 3), np.uint8)
    x1, y1, x2, y2 = w0 // 5, h0 // 4, w0 * 3 // 5, h0 * 4 // 5
    img[y1:y2, x1:x2] = 255
    out, (rw, rh), (pw, ph) = augment.letterbox(img, new_shape, auto=auto)
    mask = out[..., 0] > 127
    ys, xs = np.nonzero(mask)
    found = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float64)
    back = scale_coords(out.shape[:2], found, (h0, w0), ratio_pad=((rh, rw), (pw, ph)))
    assert torch.allclose(back, torch.tensor([[x1, y1, x2, y2]], dtype=torch.float64), atol=1.5)
    # exact inverse of the forward mapping, with and without the dataset's ratio_pad
    exact = torch.tensor([[x1 * rw + pw, y1 * rh + ph, x2 * rw + pw, y2 * rh + ph]], dtype=torch.float64)
    target = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float64)
    assert torch.allclose(scale_coords(out.shape[:2], exact, (h0, w0), ((rh, rw), (pw, ph))), target)
    if not auto:
        assert torch.allclose(scale_coords(out.shape[:2], exact, (h0, w0)), target)


def test_scale_coords_clips_and_keeps_input() -> None:
    coords = torch.tensor([[-10.0, -10.0, 500.0, 500.0]])
    out = scale_coords((416, 416), coords, (208, 416))  # pad_h = 104, gain 1
    assert out.tolist() == [[0.0, 0.0, 416.0, 208.0]]
    assert coords.tolist() == [[-10.0, -10.0, 500.0, 500.0]]
