"""LoadImagesAndLabels: coco128 facts, corrupt cases, strict mode, label cache, rect, determinism."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from build_utils.dataset.img_list import img2label_path, list_image_files
from build_utils.datasets import LoadImagesAndLabels, collate_fn
from build_utils.errors import DatasetError

GOOD_ROW = "0 0.5 0.5 0.2 0.2\n"
# name -> (label text or None, expected reason fragment); images are 64x48 JPEGs unless noted
CORRUPT = {
    "cols": ("0 0.5 0.5 0.2\n", "4 columns"),
    "nonnum": ("0 a 0.5 0.2 0.2\n", "non-numeric"),
    "nan": ("0 nan 0.5 0.2 0.2\n", "NaN or inf"),
    "outside": ("0 0.95 0.5 0.2 0.2\n", "outside the image"),
    "zerowh": ("0 0.5 0.5 0 0.2\n", "width or height"),
    "negcls": ("-1 0.5 0.5 0.2 0.2\n", "not a non-negative integer"),
    "floatcls": ("1.5 0.5 0.5 0.2 0.2\n", "not a non-negative integer"),
    "bigcls": ("3 0.5 0.5 0.2 0.2\n", "nc=3"),
}


def _jpg(path: Path, h: int = 48, w: int = 64) -> None:
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)


def _make_fixture(root: Path) -> Path:
    imgs, labs = root / "images", root / "labels"
    imgs.mkdir(parents=True)
    labs.mkdir()
    for name in ("good", "good2", "dup", "bg", "clip", *CORRUPT):
        _jpg(imgs / f"{name}.jpg")
    (labs / "good.txt").write_text(GOOD_ROW + "2 0.25 0.25 0.1 0.1\n")
    (labs / "good2.txt").write_text(GOOD_ROW)
    (labs / "dup.txt").write_text(GOOD_ROW + GOOD_ROW)
    (labs / "clip.txt").write_text("1 0.9 0.5 0.205 0.2\n")  # right edge 1.0025: clipped, kept
    for name, (text, _) in CORRUPT.items():
        (labs / f"{name}.txt").write_text(text)
    (imgs / "zero.jpg").write_bytes(b"")
    data = (imgs / "good.jpg").read_bytes()
    (imgs / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (imgs / "junk.png").write_bytes(b"\x89PNG garbage")
    cv2.imwrite(str(imgs / "tiny.png"), np.zeros((8, 8, 3), np.uint8))
    return imgs


EXTRA = {"zero": "zero-byte", "trunc": "truncated", "junk": "unreadable", "tiny": "under 10 px"}


def test_corrupt_cases_each_warned_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imgs = _make_fixture(tmp_path)
    with caplog.at_level(logging.INFO):
        ds = LoadImagesAndLabels(imgs, img_size=64, nc=3)
    names = sorted(Path(f).stem for f in ds.img_files)
    assert names == ["bg", "clip", "dup", "good", "good2"]
    text = caplog.text
    for name, (_, reason) in CORRUPT.items():
        assert f"{name}.txt:1: " in text and reason in text, name
    for name, reason in EXTRA.items():
        assert any(name in r.message and reason in r.message for r in caplog.records), name
    assert "duplicate label rows removed" in text
    assert "5 images, 1 backgrounds, 1 missing labels, 12 corrupt (skipped)" in text
    dup = ds.labels[ds.img_files.index(str(imgs / "dup.jpg"))]
    assert dup.shape == (1, 5)
    clip = ds.labels[ds.img_files.index(str(imgs / "clip.jpg"))]
    assert clip[0, 1] + clip[0, 3] / 2 == pytest.approx(1.0, abs=1e-6)


def test_strict_lists_every_corrupt_pair(tmp_path: Path) -> None:
    imgs = _make_fixture(tmp_path)
    with pytest.raises(DatasetError, match="12 corrupt") as err:
        LoadImagesAndLabels(imgs, img_size=64, nc=3, strict=True)
    for name in [*CORRUPT, *EXTRA]:
        assert name in str(err.value)


def test_no_usable_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="no usable images.*zero-byte"):
        LoadImagesAndLabels(tmp_path / "images")


def test_cache_reused_and_invalidated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    imgs = _make_fixture(tmp_path)
    LoadImagesAndLabels(imgs, img_size=64, nc=3)
    caches = list((tmp_path / "labels").glob("*cache*"))
    assert len(caches) == 1
    with caplog.at_level(logging.INFO):
        ds = LoadImagesAndLabels(imgs, img_size=64, nc=3)
    assert "read from the cache" in caplog.text and "4 columns" in caplog.text  # warnings repeat
    assert len(ds) == 5
    label = tmp_path / "labels" / "good2.txt"
    label.write_text(GOOD_ROW + "1 0.3 0.3 0.1 0.1\n")
    os.utime(label, ns=(1, 1))  # a different mtime even on coarse file systems
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ds = LoadImagesAndLabels(imgs, img_size=64, nc=3)
    assert "read from the cache" not in caplog.text
    assert len(ds.labels[ds.img_files.index(str(imgs / "good2.jpg"))]) == 2


def test_unwritable_cache_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    imgs = _make_fixture(tmp_path)

    def refuse(*_args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("build_utils.dataset.labels.os.replace", refuse)  # a read-only folder
    with caplog.at_level(logging.WARNING):
        ds = LoadImagesAndLabels(imgs, img_size=64, nc=3)
    assert "cannot write the label cache" in caplog.text and len(ds) == 5
    assert not list((tmp_path / "labels").glob("*cache*"))


def test_bom_label_png_named_jpg_and_text_named_jpg(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A UTF-8 BOM keeps its image; a PNG saved as .jpg is used; a text file as .jpg is named as text."""
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labs.mkdir()
    _jpg(imgs / "bom.jpg")
    (labs / "bom.txt").write_bytes(b"\xef\xbb\xbf" + GOOD_ROW.encode() + b"2 0.25 0.25 0.1 0.1\r\n")
    ok, png = cv2.imencode(".png", np.full((48, 64, 3), 120, np.uint8))
    (imgs / "png.jpg").write_bytes(png.tobytes())
    (labs / "png.txt").write_text(GOOD_ROW)
    (imgs / "text.jpg").write_text("<html>404 not found</html>\n")
    (labs / "text.txt").write_text(GOOD_ROW)
    with caplog.at_level(logging.INFO):
        ds = LoadImagesAndLabels(imgs, img_size=64, nc=3)
    assert sorted(Path(f).name for f in ds.img_files) == ["bom.jpg", "png.jpg"]
    bom = ds.labels[ds.img_files.index(str(imgs / "bom.jpg"))]
    np.testing.assert_allclose(bom, [[0, 0.5, 0.5, 0.2, 0.2], [2, 0.25, 0.25, 0.1, 0.1]], atol=1e-6)
    why = "not an image: the file starts with text '<html>404 not found</html>'"
    assert f"text.jpg: {why} (skipped)" in caplog.text
    assert "truncated" not in caplog.text


def test_path_forms_and_label_rule(tmp_path: Path) -> None:
    imgs = _make_fixture(tmp_path)
    (tmp_path / "list.txt").write_text("images/good.jpg\nimages/good2.jpg\n")
    assert [Path(p).name for p in list_image_files(tmp_path / "list.txt")] == ["good.jpg", "good2.jpg"]
    assert len(list_image_files(str(imgs / "good*.jpg"))) == 2
    assert img2label_path("/a/images/b/images/c.JPG") == "/a/images/b/labels/c.txt"


def test_coco128_facts(coco128: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "coco128"
    shutil.copytree(coco128, root)  # the cache is written beside the labels: keep ../shared clean
    with caplog.at_level(logging.INFO):
        ds = LoadImagesAndLabels(root / "images" / "train", img_size=416, nc=80)
    assert len(ds) == 128
    assert sum(len(lab) > 0 for lab in ds.labels) == 126
    assert sum(len(lab) for lab in ds.labels) == 929
    backgrounds = sorted(Path(f).name for f, lab in zip(ds.img_files, ds.labels) if len(lab) == 0)
    assert backgrounds == ["000000000250.jpg", "000000000508.jpg"]
    assert "128 images, 2 backgrounds, 2 missing labels, 0 corrupt" in caplog.text
    assert "2 label files without an image" in caplog.text
    assert "000000000656.txt" in caplog.text and "000000000659.txt" in caplog.text
    gray = ds.img_files.index(str(root / "images" / "train" / "000000000086.jpg"))
    img, _, _, shapes = ds[gray]
    assert img.shape[0] == 3 and shapes[0] == tuple(ds.image_shapes[gray])
    gt = ds.ground_truth(gray)
    h0, w0 = ds.image_shapes[gray]
    assert gt[:, 1:].min() >= 0 and gt[:, 3].max() <= w0 and gt[:, 4].max() <= h0


def _shapes_root(tmp_path: Path, n: int = 8) -> Path:
    imgs = tmp_path / "images"
    imgs.mkdir(parents=True)
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        h, w = (60, 120) if i % 2 else (120, 90)
        cv2.imwrite(str(imgs / f"{i}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        (tmp_path / "labels" / f"{i}.txt").write_text(f"{i % 3} 0.5 0.5 0.4 0.3\n")
    return imgs


def test_rect_batches(tmp_path: Path) -> None:
    ds = LoadImagesAndLabels(_shapes_root(tmp_path), img_size=128, batch_size=4, rect=True)
    assert ds.batch_shapes.tolist() == [[64, 128], [128, 96]]  # wide batch first (sorted by h/w)
    loader = DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate_fn)
    shapes = [tuple(imgs.shape[2:]) for imgs, *_ in loader]
    assert shapes == [(64, 128), (128, 96)]
    imgs, targets, paths, item_shapes = next(iter(loader))
    assert imgs.dtype == torch.uint8 and targets.shape == (4, 6)
    assert targets[:, 0].tolist() == [0, 1, 2, 3] and len(paths) == 4 and item_shapes[0][0] == (60, 120)


def test_determinism_across_workers(tmp_path: Path) -> None:
    hyp = {"degrees": 10.0, "translate": 0.1, "scale": 0.3, "shear": 2.0, "flipud": 0.5}
    ds = LoadImagesAndLabels(_shapes_root(tmp_path), img_size=96, augment=True, hyp=hyp, seed=3)
    ds.set_epoch(2)
    runs = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_fn,
                            persistent_workers=workers > 0)
        for epoch in (2, 3):  # persistent workers must follow set_epoch made here
            ds.set_epoch(epoch)
            runs.append([(imgs.clone(), targets.clone()) for imgs, targets, *_ in loader])
    for (i0, t0), (i1, t1) in zip(runs[0] + runs[1], runs[2] + runs[3]):
        assert torch.equal(i0, i1) and torch.equal(t0, t1)
    assert not torch.equal(runs[0][0][0], runs[1][0][0])  # another epoch, another sample


def test_cache_images_refuses_when_too_big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imgs = _shapes_root(tmp_path)
    monkeypatch.setattr("build_utils.datasets.available_memory_bytes", lambda: 1000)
    with pytest.raises(DatasetError, match="cache_images needs"):
        LoadImagesAndLabels(imgs, img_size=128, cache_images=True)
    monkeypatch.setattr("build_utils.datasets.available_memory_bytes", lambda: 10**10)
    ds = LoadImagesAndLabels(imgs, img_size=128, cache_images=True)
    assert all(im is not None and max(im.shape[:2]) == 128 for im in ds.imgs)
