"""Box geometry against hand-computed cases, on torch and numpy: conversions (pixel and normalised) and
their round trips, pairwise and element-wise IoU of every kind, clipping, and scale_coords inverting
the data helper's letterbox on odd sizes. No function may modify its input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from build_utils.geometry import (
    IOU_KINDS,
    bbox_iou,
    box_iou,
    clip_coords,
    scale_coords,
    wh_iou,
    xywh2xyxy,
    xywhn2xyxy,
    xyxy2xywh,
    xyxy2xywhn,
)
from build_utils.hyp import STRING_KEYS


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


def _close(got, want, atol: float = 1e-5) -> bool:
    return np.allclose(np.asarray(got.tolist()), np.asarray(want), atol=atol)


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_normalised_pixel_conversions_hand_computed(kind: str) -> None:
    # a 0.2 x 0.5 box centred at (0.5, 0.25) of a 200 x 100 image, placed at (10, 4) on a canvas
    rows = [[0.5, 0.25, 0.2, 0.5], [0.0, 1.0, 0.1, 0.2]]
    x = torch.tensor(rows, dtype=torch.float32) if kind == "torch" else np.array(rows, dtype=np.float32)
    before = x.tolist()
    xyxy = xywhn2xyxy(x, 200, 100, padw=10, padh=4)
    assert type(xyxy) is type(x) and xyxy.dtype == x.dtype and xyxy.shape == (2, 4)
    assert _close(xyxy, [[90.0, 4.0, 130.0, 54.0], [0.0, 94.0, 20.0, 114.0]])
    assert _close(xywhn2xyxy(x, 200, 100), [[80.0, 0.0, 120.0, 50.0], [-10.0, 90.0, 10.0, 110.0]])
    assert _close(xyxy2xywhn(xywhn2xyxy(x, 200, 100), 200, 100), before, atol=1e-7)  # round trip
    assert _close(xyxy2xywhn(xyxy, 200, 100)[0], [0.55, 0.29, 0.2, 0.5])  # the padding stays in
    assert x.tolist() == before and _close(xyxy[0], [90.0, 4.0, 130.0, 54.0])  # inputs untouched


def test_conversions_keep_leading_dims_dtype_and_device() -> None:
    x = torch.rand(2, 3, 4, dtype=torch.float64) + 0.1  # (bs, n, 4)
    assert xywh2xyxy(x).shape == (2, 3, 4) and xywh2xyxy(x).dtype == torch.float64
    assert torch.allclose(xyxy2xywh(xywh2xyxy(x)), x)
    pad = torch.tensor([3, 7, 3, 7])
    assert torch.allclose(xyxy2xywhn(xywhn2xyxy(x, 640, 480, 3, 7) - pad, 640, 480), x)
    arr = np.random.default_rng(0).random((5, 4))
    assert np.allclose(xyxy2xywh(xywh2xyxy(arr)), arr)
    assert np.array_equal(xywh2xyxy(arr), xywh2xyxy(torch.from_numpy(arr)).numpy())  # same arithmetic


def test_conversions_match_the_pixel_arithmetic_exactly() -> None:
    """The dataset's labels must not move by one ulp: w * (cx - bw / 2) + padw, in float32."""
    rng = np.random.default_rng(3)
    lab = rng.random((50, 4)).astype(np.float32)
    w, h, padw, padh = 417, 233, 12.0, 5.5
    want = np.stack([w * (lab[:, 0] - lab[:, 2] / 2) + padw, h * (lab[:, 1] - lab[:, 3] / 2) + padh,
                     w * (lab[:, 0] + lab[:, 2] / 2) + padw, h * (lab[:, 1] + lab[:, 3] / 2) + padh], 1)
    assert np.array_equal(xywhn2xyxy(lab, w, h, padw, padh), want)
    back = np.stack([(want[:, 0] + want[:, 2]) / 2 / w, (want[:, 1] + want[:, 3]) / 2 / h,
                     (want[:, 2] - want[:, 0]) / w, (want[:, 3] - want[:, 1]) / h], 1)
    assert np.array_equal(xyxy2xywhn(want, w, h), back)


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
    arr = np.array([[-5.0, 10, 700, 150], [1, -2, 3, 250]], dtype=np.float32)
    out = clip_coords(arr, (200, 640, 3))  # an image's (h, w, c) shape works too
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.tolist() == [[0.0, 10.0, 640.0, 150.0], [1.0, 0.0, 3.0, 200.0]]
    assert arr.tolist()[0] == [-5.0, 10.0, 700.0, 150.0]


def test_iou_kinds_are_one_list_shared_with_hyp_validation() -> None:
    assert IOU_KINDS == ("iou", "giou", "diou", "ciou")
    assert STRING_KEYS["iou_type"] is IOU_KINDS


@pytest.mark.parametrize("h0,w0,new_shape,auto", [(333, 517, 416, False), (517, 333, 416, False),
                                                  (333, 517, 416, True), (101, 77, (320, 416), False)])
def test_scale_coords_inverts_letterbox(h0: int, w0: int, new_shape, auto: bool) -> None:
    augment = pytest.importorskip("build_utils.dataset.augment", reason="letterbox not there yet")
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


def test_scale_coords_numpy() -> None:
    coords = np.array([[0.0, 104.0, 416.0, 312.0]], dtype=np.float32)
    out = scale_coords((416, 416), coords, (208, 416))
    assert isinstance(out, np.ndarray) and out.tolist() == [[0.0, 0.0, 416.0, 208.0]]
    assert coords.tolist() == [[0.0, 104.0, 416.0, 312.0]]


# ---------------------------------------------------------------- element-wise IoU kinds, by hand


def _xyxy(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_iou_kinds_overlapping_squares():
    a, b = _xyxy([0, 0, 2, 2]), _xyxy([1, 1, 3, 3])  # inter 1, union 7, hull 3x3, centres 1 apart in x and y
    assert bbox_iou(a, b, "iou", xywh=False).item() == pytest.approx(1 / 7)
    assert bbox_iou(a, b, "giou", xywh=False).item() == pytest.approx(1 / 7 - 2 / 9)
    assert bbox_iou(a, b, "diou", xywh=False).item() == pytest.approx(1 / 7 - 2 / 18)
    assert bbox_iou(a, b, "ciou", xywh=False).item() == pytest.approx(1 / 7 - 2 / 18)  # same aspect: v = 0


def test_ciou_aspect_penalty():
    a, b = _xyxy([0, 0, 2, 2]), _xyxy([0, 0, 4, 2])  # iou 0.5, hull diag^2 20, centre dist^2 1
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
    alpha = v / (1 - 0.5 + v)
    assert bbox_iou(a, b, "ciou", xywh=False).item() == pytest.approx(0.5 - (1 / 20 + alpha * v))
    assert bbox_iou(a, b, "diou", xywh=False).item() == pytest.approx(0.5 - 1 / 20)


def test_disjoint_boxes_and_xywh_form():
    a, b = _xyxy([0, 0, 1, 1]), _xyxy([2, 0, 3, 1])
    assert bbox_iou(a, b, "iou", xywh=False).item() == 0
    assert bbox_iou(a, b, "giou", xywh=False).item() == pytest.approx(-1 / 3)
    assert bbox_iou(a, b, "diou", xywh=False).item() == pytest.approx(-4 / 10)  # centres 2 apart, diag^2 10
    a_xywh, b_xywh = _xyxy([0.5, 0.5, 1, 1]), _xyxy([2.5, 0.5, 1, 1])
    for kind in ("iou", "giou", "diou", "ciou"):
        assert bbox_iou(a_xywh, b_xywh, kind).item() == pytest.approx(bbox_iou(a, b, kind, xywh=False).item())
    with pytest.raises(ValueError, match="IoU kind"):
        bbox_iou(a_xywh, b_xywh, "dice")


def test_iou_row_aligned_and_inputs_untouched():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    b = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2]])
    a0 = a.clone()
    out = bbox_iou(a, b, "giou", xywh=False)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([1.0, 0.25])
    assert torch.equal(a, a0)


def test_wh_iou():
    out = wh_iou(torch.tensor([[2.0, 2.0], [4.0, 1.0]]), torch.tensor([[2.0, 2.0], [1.0, 1.0], [4.0, 2.0]]))
    assert out.shape == (2, 3)
    expected = [[1.0, 0.25, 0.5], [2 / 6, 0.25, 0.5]]
    assert out.tolist() == [pytest.approx(r) for r in expected]


