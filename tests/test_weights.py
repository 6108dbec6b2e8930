"""Darknet .weights (sizes, byte-identical round trips, cutoff, mismatch), .pt checkpoints, load_model,
real detections with the official yolov3-tiny weights."""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest
import torch

from build_utils.errors import WeightsError
from modules.checkpoint import load_checkpoint, load_matching_state_dict, save_checkpoint
from modules.loading import load_model
from modules.model import DarkNet
from modules.weights import (
    darknet_file_floats,
    darknet_float_count,
    fitting_class_count,
    load_darknet_weights,
    save_darknet_weights,
)

SIZES = {"yolov3-spp.cfg": (63_052_381, 252_209_544), "yolov3.cfg": (62_001_757, 248_007_048),
         "yolov3-tiny.cfg": (8_858_734, 35_434_956)}


def _randomise(model: DarkNet, seed: int) -> DarkNet:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.copy_(torch.rand(t.shape, generator=gen))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIZES))
def test_sizes_and_byte_identical_round_trip(repo_root, tmp_path, name):
    floats, nbytes = SIZES[name]
    model = _randomise(DarkNet(repo_root / "cfg" / name), 0)
    assert darknet_float_count(model) == floats
    first, second = tmp_path / "a.weights", tmp_path / "b.weights"
    save_darknet_weights(model, first, header={"major": 0, "minor": 2, "revision": 5, "seen": 123456789012})
    assert first.stat().st_size == nbytes
    assert darknet_file_floats(first) == floats  # int64 seen: 20 header bytes
    other = DarkNet(repo_root / "cfg" / name)
    header = load_darknet_weights(other, first)
    assert header == {"major": 0, "minor": 2, "revision": 5, "seen": 123456789012}
    save_darknet_weights(other, second, header=header)
    assert first.read_bytes() == second.read_bytes()


def test_narrow_seen_header_round_trip(repo_root, tmp_path):
    model = _randomise(DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg"), 1)
    path = tmp_path / "old.weights"
    save_darknet_weights(model, path, header={"major": 0, "minor": 1, "revision": 0, "seen": 64})
    assert path.stat().st_size == 16 + 4 * 8_858_734  # int32 seen
    assert darknet_file_floats(path) == 8_858_734
    assert np.fromfile(path, dtype=np.int32, count=4).tolist() == [0, 1, 0, 64]
    assert load_darknet_weights(DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg"), path)["seen"] == 64


def test_cutoff_save_and_load(repo_root, tmp_path):
    model = _randomise(DarkNet(repo_root / "cfg" / "yolov3.cfg"), 2)
    path = tmp_path / "darknet53.conv.74"
    save_darknet_weights(model, path, cutoff=75)
    assert darknet_float_count(model, cutoff=75) == 40_620_640 and path.stat().st_size == 162_482_580
    fresh = DarkNet(repo_root / "cfg" / "yolov3.cfg")
    before = fresh.module_list[75].conv.weight.clone()
    load_darknet_weights(fresh, path, cutoff=75)
    assert torch.equal(fresh.module_list[73].bn.running_var, model.module_list[73].bn.running_var)
    assert torch.equal(fresh.module_list[0].conv.weight, model.module_list[0].conv.weight)
    assert torch.equal(fresh.module_list[75].conv.weight, before)
    with pytest.raises(WeightsError, match="holds 40,620,640 floats but yolov3.cfg needs 62,001,757"):
        load_darknet_weights(fresh, path)


def test_official_tiny_weights_round_trip(repo_root, tiny_weights, tmp_path):
    model = DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg")
    header = load_darknet_weights(model, tiny_weights)
    assert header == {"major": 0, "minor": 2, "revision": 0, "seen": 32_013_312}
    save_darknet_weights(model, tmp_path / "t.weights", header=header)
    assert (tmp_path / "t.weights").read_bytes() == tiny_weights.read_bytes()


def test_size_mismatch_names_counts_and_class_count(repo_root, tiny_weights, tmp_path):
    text = (repo_root / "cfg" / "yolov3-tiny.cfg").read_text().replace("classes=80", "classes=20")
    text = text.replace("filters=255", "filters=75")
    model = DarkNet.from_cfg_text(text, "tiny20.cfg")
    with pytest.raises(WeightsError) as info:
        load_darknet_weights(model, tiny_weights)
    msg = str(info.value)
    assert "holds 8,858,734 floats" in msg and f"needs {darknet_float_count(model):,}" in msg
    assert "wrong class count" in msg and "classes=80" in msg
    assert fitting_class_count(model, darknet_file_floats(tiny_weights)) == 80
    assert fitting_class_count(model, darknet_float_count(model)) == 20
    assert fitting_class_count(model, darknet_float_count(model) + 1) is None
    truncated = tmp_path / "cut.weights"
    truncated.write_bytes(tiny_weights.read_bytes()[:1_000_000])
    with pytest.raises(WeightsError, match="truncated download"):
        load_darknet_weights(DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg"), truncated)


def test_checkpoint_atomic_save_and_safe_load(repo_root, tmp_path):
    model = DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg")
    ckpt = {"format": "yolov3-suite/1", "cfg_text": model.cfg_text, "cfg_name": model.cfg_name,
            "class_names": [f"c{i}" for i in range(80)], "model": model.state_dict(), "ema": None,
            "epoch": -1}
    path = tmp_path / "deep" / "last.pt"
    save_checkpoint(ckpt, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left behind
    back = load_checkpoint(path)
    assert back["epoch"] == -1 and torch.equal(back["model"]["module_list.0.conv.weight"],
                                               model.state_dict()["module_list.0.conv.weight"])


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"options": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(WeightsError, match="refused: it carries pickled Python objects"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_class_count_changing_load(repo_root, caplog):
    coco = DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg")
    text = coco.cfg_text.replace("classes=80", "classes=3").replace("filters=255", "filters=24")
    small = DarkNet.from_cfg_text(text, "tiny3.cfg")
    with caplog.at_level("INFO"):
        n, skipped = load_matching_state_dict(small, coco.state_dict(), "coco.pt")
    assert skipped == ["module_list.15.conv.bias", "module_list.15.conv.weight",
                       "module_list.22.conv.bias", "module_list.22.conv.weight"]
    assert n == len(small.state_dict()) - 4
    assert torch.equal(small.module_list[0].conv.weight, coco.module_list[0].conv.weight)
    assert small.module_list[15].conv.bias.view(3, 8)[0, 4] == -4.5  # predictor keeps its fresh init
    assert sum("loaded" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(WeightsError, match="tiny3.cfg"):
        load_matching_state_dict(small, {"foo": torch.zeros(1)}, "other.pt")


def test_load_model_pt_prefers_ema_and_weights_need_cfg(repo_root, tmp_path, tiny_weights):
    model = DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg")
    ema = _randomise(DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg"), 3).state_dict()
    save_checkpoint({"cfg_text": model.cfg_text, "cfg_name": "yolov3-tiny.cfg", "class_names": ["a"] * 80,
                     "model": model.state_dict(), "ema": ema}, tmp_path / "best.pt")
    loaded, names = load_model(tmp_path / "best.pt", fuse=True)
    assert names == ["a"] * 80 and not loaded.training
    assert torch.equal(loaded.module_list[15].conv.weight, ema["module_list.15.conv.weight"])
    with pytest.raises(WeightsError, match="pass --cfg"):
        load_model(tiny_weights)
    loaded, names = load_model(tiny_weights, repo_root / "cfg" / "yolov3-tiny.cfg")
    assert names is None and not loaded.training


def _letterbox(img: np.ndarray, size: int) -> np.ndarray:
    if importlib.util.find_spec("build_utils.dataset.augment") is not None:
        from build_utils.dataset.augment import letterbox

        return letterbox(img, size, auto=False)[0]
    import cv2

    h, w = img.shape[:2]
    r = size / max(h, w)
    nh, nw = round(h * r), round(w * r)
    out = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out


def _detected_classes(pred: torch.Tensor, conf: float) -> set[int]:
    if importlib.util.find_spec("train_val_utils.evaluation.nms") is not None:
        from train_val_utils.evaluation.nms import non_max_suppression

        det = non_max_suppression(pred, conf_thres=conf, iou_thres=0.45)[0]
        return {int(c) for c in det[:, 5]}
    scores = pred[0, :, 4:5] * pred[0, :, 5:]  # (N, nc) per-class max as a stand-in for NMS
    best, cls = scores.max(1)
    return {int(c) for c in cls[best > conf]}


@pytest.mark.parametrize(("photo", "must"), [("dog.jpg", [{16}, {1}, {2, 7}]), ("horses.jpg", [{17}])])
def test_official_tiny_weights_detect(repo_root, darknet_dir, tiny_weights, photo, must):
    import cv2

    model, _ = load_model(tiny_weights, repo_root / "cfg" / "yolov3-tiny.cfg")
    img = cv2.imread(str(darknet_dir / photo))[:, :, ::-1]
    boxed = _letterbox(np.ascontiguousarray(img), 416)
    x = torch.from_numpy(boxed.copy()).permute(2, 0, 1)[None].float() / 255  # (1, 3, 416, 416)
    with torch.no_grad():
        pred, _ = model(x)
    found = _detected_classes(pred, 0.5)
    for options in must:  # 16 dog, 1 bicycle, 2 car / 7 truck, 17 horse
        assert found & options, (photo, sorted(found))


# yolov3-tiny.weights on darknet/dog.jpg (768x576) letterboxed to 416, NMS conf 0.25 / IoU 0.45, boxes
# mapped back to the photo: x1, y1, x2, y2 (pixels), score, class. Measured with the Darknet arithmetic
# (BN epsilon 1e-6, leaky 0.1, -inf maxpool padding); 1 vs 2 threads differ by ~1e-4 px, BN epsilon
# 1e-5 moves the boxes by up to 2.6e-3 px.
DOG_DETECTIONS = [
    [466.8322, 69.4237, 677.6982, 169.2214, 0.665399, 2],  # car
    [132.7646, 187.8393, 369.2831, 514.9540, 0.593221, 16],  # dog
    [204.4840, 154.2224, 577.8213, 447.3458, 0.542092, 1],  # bicycle
    [482.2644, 82.2524, 673.5629, 170.3998, 0.405528, 7],  # truck
]


def test_official_tiny_weights_dog_detections_pinned(repo_root, darknet_dir, tiny_weights):
    """Boxes within 1e-3 px and scores within 1e-4 of the measured values: any change to the model's
    arithmetic, the weights order, letterbox, decoding, NMS or scale_coords shows here."""
    from build_utils.dataset.augment import letterbox
    from build_utils.dataset.image_io import read_image
    from build_utils.geometry import scale_coords
    from train_val_utils.evaluation.nms import non_max_suppression

    model, _ = load_model(tiny_weights, repo_root / "cfg" / "yolov3-tiny.cfg")
    img = read_image(darknet_dir / "dog.jpg")  # (576, 768, 3) RGB
    boxed = letterbox(img, 416, auto=False)[0]
    # (1, 3, 416, 416) RGB in [0, 1]
    x = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)))[None].float() / 255
    with torch.no_grad():
        pred, _ = model(x)
    det = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45)[0].double()
    det[:, :4] = scale_coords((416, 416), det[:, :4], img.shape[:2])
    expected = np.array(DOG_DETECTIONS)
    assert det.shape == expected.shape and det[:, 5].tolist() == expected[:, 5].tolist()
    np.testing.assert_allclose(det[:, :4].numpy(), expected[:, :4], rtol=0, atol=1e-3)
    np.testing.assert_allclose(det[:, 4].numpy(), expected[:, 4], rtol=0, atol=1e-4)


def test_load_model_errors(repo_root, tmp_path):
    save_checkpoint({"model": {"x": torch.zeros(1)}}, tmp_path / "nocfg.pt")
    with pytest.raises(WeightsError, match="no cfg_text; pass --cfg"):
        load_model(tmp_path / "nocfg.pt")
    save_checkpoint({"epoch": 3}, tmp_path / "nomodel.pt")
    with pytest.raises(WeightsError, match="no 'model' or 'ema'"):
        load_model(tmp_path / "nomodel.pt")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown weights format '.bin'"):
        load_model(tmp_path / "w.bin", repo_root / "cfg" / "yolov3-tiny.cfg")
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "missing.pt")
