"""predict.py end to end with the official yolov3-tiny weights: coco128, photos, bad files, videos, flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import predict
from build_utils.dataset.augment import letterbox
from build_utils.dataset.image_io import read_image
from build_utils.geometry import box_iou, scale_coords
from build_utils.torch_utils import cpu_has_native_bf16
from modules.loading import load_model
from train_val_utils.evaluation.nms import non_max_suppression
from train_val_utils.predict.detections_io import summary_text, yolo_lines_from_xyxy

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / "cfg" / "yolov3-tiny.cfg"
COCO_NAMES = REPO / "data" / "coco.names"


def run(tmp: Path, weights: Path, source: Path | str, *extra: str) -> predict.PredictStats:
    args = predict.get_args_parser().parse_args([
        "--weights", str(weights), "--cfg", str(TINY_CFG), "--names", str(COCO_NAMES),
        "--source", str(source), "--img-size", "416", "--device", "cpu", "--project", str(tmp),
        "--name", "exp", *extra,
    ])
    return predict.main(args)


def reference_detections(weights: Path, path: Path) -> np.ndarray:
    """The same library calls predict.py makes, done by hand: letterbox, forward, NMS, scale back."""
    model, _ = load_model(weights, TINY_CFG, "cpu", fuse=True)
    img = read_image(path)
    lb, (r_w, r_h), pad = letterbox(img, 416, auto=True, stride=32)
    x = torch.from_numpy(lb.transpose(2, 0, 1).copy()).float()[None] / 255  # (1, 3, h, w)
    with torch.inference_mode():
        det = non_max_suppression(model(x)[0], 0.25, 0.45)[0]  # (n, 6)
        boxes = scale_coords(x.shape[2:], det[:, :4], img.shape[:2], ((r_h, r_w), pad))
    return torch.cat((boxes, det[:, 4:]), 1).numpy()


@pytest.fixture(scope="module")
def coco128_run(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path, coco128: Path):
    tmp = tmp_path_factory.mktemp("pred")
    # float32, as the direct library calls it is compared with
    stats = run(tmp, tiny_weights, coco128 / "images", "--save-txt", "--save-json", "--no-half")
    return stats, tmp / "exp"


@pytest.mark.slow
def test_coco128_writes_every_image_and_label(coco128_run, coco128: Path) -> None:
    stats, out = coco128_run
    images = sorted((coco128 / "images").rglob("*.jpg"))
    assert stats.images == len(images) == 128 and not stats.skipped
    for img in images:
        rel = img.relative_to(coco128 / "images")
        assert (out / rel).is_file(), f"missing annotated {rel}"
        assert (out / "labels" / rel).with_suffix(".txt").is_file(), f"missing labels for {rel}"
    saved = cv2.imread(str(out / "train" / images[0].name))
    assert saved.shape[:2] == read_image(images[0]).shape[:2]
    records = json.loads((out / "predictions.json").read_text())
    assert 300 < len(records) < 929  # yolov3-tiny finds a few hundred of coco128's 929 objects at conf 0.25
    assert {"image_id", "file_name", "category_id", "category_name", "bbox", "score"} <= set(records[0])


@pytest.mark.slow
def test_coco128_boxes_agree_with_direct_library_calls(coco128_run, tiny_weights: Path,
                                                       coco128: Path) -> None:
    _, out = coco128_run
    records = json.loads((out / "predictions.json").read_text())
    for name in ("000000000009.jpg", "000000000086.jpg", "000000000250.jpg", "000000000643.jpg"):
        path = coco128 / "images" / "train" / name
        ref = reference_detections(tiny_weights, path)  # (n, 6)
        h, w = read_image(path).shape[:2]
        lines = (out / "labels" / "train" / name).with_suffix(".txt").read_text().splitlines()
        want_lines = yolo_lines_from_xyxy(ref, (h, w))
        got_txt = np.array([line.split() for line in lines], float).reshape(-1, 6)
        want_txt = np.array([line.split() for line in want_lines], float).reshape(-1, 6)
        np.testing.assert_allclose(got_txt, want_txt, atol=3e-6, err_msg=name)  # 6 decimals in the file
        mine = [r for r in records if r["file_name"] == f"train/{name}"]
        assert len(mine) == len(ref)
        got = np.array([[*r["bbox"], r["score"], r["category_id"]] for r in mine]).reshape(-1, 6)
        want = np.concatenate([ref[:, :2], ref[:, 2:4] - ref[:, :2], ref[:, 4:]], 1)
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_dog_photo(tmp_path: Path, tiny_weights: Path, darknet_dir: Path) -> None:
    run(tmp_path, tiny_weights, darknet_dir / "dog.jpg", "--save-txt")
    lines = (tmp_path / "exp" / "labels" / "dog.txt").read_text().splitlines()
    classes = {int(line.split()[0]) for line in lines}
    assert {16, 1} <= classes and classes & {2, 7}  # dog, bicycle, car or truck
    assert all(float(line.split()[5]) >= 0.25 for line in lines)
    assert (tmp_path / "exp" / "dog.jpg").is_file()


def test_flags_take_effect(tmp_path: Path, tiny_weights: Path, darknet_dir: Path,
                           capsys: pytest.CaptureFixture) -> None:
    dog = darknet_dir / "dog.jpg"
    run(tmp_path / "c", tiny_weights, dog, "--save-txt", "--classes", "16", "--nosave")
    lines = (tmp_path / "c" / "exp" / "labels" / "dog.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["16"]
    assert not (tmp_path / "c" / "exp" / "dog.jpg").exists()  # --nosave
    run(tmp_path / "m", tiny_weights, dog, "--save-txt", "--max-det", "1", "--conf-thres", "0.05")
    assert len((tmp_path / "m" / "exp" / "labels" / "dog.txt").read_text().splitlines()) == 1
    run(tmp_path / "a", tiny_weights, dog, "--save-json", "--agnostic-nms", "--conf-thres", "0.05")
    recs = json.loads((tmp_path / "a" / "exp" / "predictions.json").read_text())
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in recs)])
    iou = box_iou(xyxy, xyxy).fill_diagonal_(0)
    assert iou.max() <= 0.45 + 1e-6  # across classes: the car/truck pair is gone
    capsys.readouterr()
    run(tmp_path / "h", tiny_weights, dog, "--half", "--nosave")  # main() sets up logging to stderr itself
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "predict: bfloat16 on cpu"  # the first line names the precision
    if not cpu_has_native_bf16():
        assert "--half" in err and "emulated" in err
    run(tmp_path / "f", tiny_weights, dog, "--no-half", "--nosave")
    assert capsys.readouterr().err.splitlines()[0] == "predict: float32 on cpu"
    run(tmp_path / "d", tiny_weights, dog, "--nosave")  # the default: bfloat16 only where it is native
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("predict: bfloat16 on cpu (this CPU's native" if cpu_has_native_bf16()
                            else "predict: float32 on cpu")


def test_bad_files_are_reported_and_skipped(tmp_path: Path, tiny_weights: Path, darknet_dir: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    shutil.copy(darknet_dir / "dog.jpg", src / "sub" / "dog.jpg")
    shutil.copy(darknet_dir / "horses.jpg", src / "horses.jpg")
    (src / "readme.txt").write_text("hello")
    (src / "zero.jpg").write_bytes(b"")
    (src / "cut.jpg").write_bytes((darknet_dir / "eagle.jpg").read_bytes()[:5000])
    stats = run(tmp_path, tiny_weights, src)
    text = capsys.readouterr().err
    assert stats.images == 2
    assert sorted(p.name for p, _ in stats.skipped) == ["cut.jpg", "zero.jpg"]
    for name in ("readme.txt", "zero.jpg", "cut.jpg"):
        assert name in text
    assert (tmp_path / "exp" / "sub" / "dog.jpg").is_file() and (tmp_path / "exp" / "horses.jpg").is_file()
    assert "image 2/4" in text and "horses.jpg: 416x288 " in text


def test_video_round_trip_and_batching(tmp_path: Path, tiny_weights: Path, darknet_dir: Path) -> None:
    dog = cv2.resize(cv2.imread(str(darknet_dir / "dog.jpg")), (320, 240))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (320, 240))
    for k in range(5):
        writer.write(np.roll(dog, 8 * k, axis=1))
    writer.release()
    run(tmp_path / "b1", tiny_weights, video, "--save-txt", "--batch-size", "1")
    run(tmp_path / "b4", tiny_weights, video, "--save-txt", "--nosave")  # files default to batches of 4
    out = tmp_path / "b1" / "exp" / "clip.mp4"
    cap = cv2.VideoCapture(str(out))
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    cap.release()
    assert len(frames) == 5 and frames[0].shape == (240, 320, 3)
    for k in range(1, 6):
        one = (tmp_path / "b1" / "exp" / "labels" / f"clip_{k}.txt").read_text().split()
        four = (tmp_path / "b4" / "exp" / "labels" / f"clip_{k}.txt").read_text().split()
        assert "16" in one[::6]  # a dog in every frame
        np.testing.assert_allclose(np.array(one, float), np.array(four, float), atol=1e-4)


def test_summary_and_yolo_lines() -> None:
    det = np.array([[10, 20, 30, 60, 0.9, 0], [0, 0, 50, 50, 0.5, 5], [1, 1, 2, 2, 0.3, 0]], np.float32)
    names = ["person", "bicycle", "car", "motorcycle", "airplane", "bus"]
    assert summary_text(det, names) == "2 persons, 1 bus"
    assert summary_text(det[:0], None) == "(no detections)"
    assert yolo_lines_from_xyxy(det[:1], (100, 200))[0] == "0 0.100000 0.400000 0.100000 0.400000 0.900000"


def test_cli_reports_user_errors(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture) -> None:
    from build_utils.cli import run_cli

    args = predict.get_args_parser().parse_args(
        ["--weights", str(tiny_weights), "--source", str(tmp_path / "nothing"), "--project", str(tmp_path)])
    assert run_cli(predict.main, args) == 2
    assert "--source" in capsys.readouterr().err


def _frames(shapes: list[tuple[int, int]]) -> list:
    from build_utils.dataset.augment import Letterboxed
    from train_val_utils.predict.sources import Frame

    return [Frame(path=Path(f"{i}.jpg"), rel=Path(f"{i}.jpg"), index=i + 1, total=len(shapes),
                  img=np.zeros((2, 2, 3), np.uint8), kind="image",
                  net_input=Letterboxed(chw=np.zeros((3, *hw), np.uint8), gain_wh=(1.0, 1.0),
                                        pad_wh=(0.0, 0.0)))
            for i, hw in enumerate(shapes)]


def test_shape_batches_fill_batches_from_the_look_ahead_and_in_order_restores_the_order() -> None:
    from train_val_utils.predict.predictor import InOrder, shape_batches

    a, b, c = (320, 416), (288, 416), (416, 416)
    frames = _frames([a, b, a, b, c, a, b, a])
    held = []  # frames read but not yet in a yielded batch, after each batch

    def counted():
        for n, frame in enumerate(frames, 1):
            counted.read = n
            yield frame

    counted.read = 0
    batches = []
    for batch in shape_batches(counted(), 2, window=4):
        batches.append([p for p, _ in batch])
        held.append(counted.read - sum(map(len, batches)))
    assert batches == [[0, 2], [1, 3], [5, 7], [4], [6]]  # [4] waited alone until the stream ended
    assert all(len({frames[p].net_input.chw.shape for p in batch}) == 1 for batch in batches)
    assert max(held) <= 4
    # a window of one batch groups only neighbours (no two neighbours share a shape here)
    assert [[p for p, _ in bt] for bt in shape_batches(frames, 2, window=2)] == [[0], [1], [2], [3], [4], [5],
                                                                                  [6], [7]]
    # one portrait photo before a long run of landscape frames is not held to the end (nor are the
    # results after it): it runs alone once `window` frames have been read after it
    rare_first = _frames([a] + [b] * 40)
    order, most_waiting = InOrder(), 0
    for batch in shape_batches(rare_first, 4, window=16):
        for p, _ in batch:
            order.add(p, p)
        most_waiting = max(most_waiting, len(order.waiting))
        list(order.ready())
    assert order.next == 41 and most_waiting <= 16
    order, out = InOrder(), []
    for batch in batches:
        for p in batch:
            order.add(p, p)
        out += list(order.ready())
    assert out == list(range(8))


def test_default_batch_is_four_for_files_and_one_for_live_sources(tmp_path: Path) -> None:
    from train_val_utils.predict.sources import SourceSpec

    photos = [tmp_path / f"{i}.jpg" for i in range(6)]
    assert predict.default_batch_size(SourceSpec(files=photos)) == 4
    assert predict.default_batch_size(SourceSpec(files=photos[:2])) == 2  # no more than the photos
    assert predict.default_batch_size(SourceSpec(files=[tmp_path / "a.mp4"])) == 4  # a video's frames
    assert predict.default_batch_size(SourceSpec(files=[Path("camera0.mp4")], camera=0)) == 1
    assert predict.default_batch_size(SourceSpec(files=[Path("s.mp4")], url="rtsp://h/s")) == 1
