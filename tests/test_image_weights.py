"""--image-weights: class weights, the seeded draw, DDP shards, and a real run that stores the maps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch
from test_train_runs import ENV, _train_cmd, shapes  # noqa: F401 (fixture)

from modules.checkpoint import load_checkpoint
from train_val_utils.training.image_weights import ImageWeightSampler, class_frequency_weights, image_weights


def imbalanced_labels() -> list[np.ndarray]:
    """90 images of class 0, 10 of class 1, 5 empty images."""
    box = [0.5, 0.5, 0.2, 0.2]
    return ([np.array([[0, *box]], np.float32)] * 90 + [np.array([[1, *box]], np.float32)] * 10
            + [np.zeros((0, 5), np.float32)] * 5)


def test_weights_follow_the_classic_formula() -> None:
    labels = imbalanced_labels()
    cw = class_frequency_weights(labels, 2)
    assert np.allclose(cw, np.array([1 / 90, 1 / 10]) / (1 / 90 + 1 / 10))
    w = image_weights(labels, 2, cw * (1 - np.array([0.5, 0.0])) ** 2)
    assert np.isclose(w[0], cw[0] * 0.25) and np.isclose(w[95], cw[1]) and np.isclose(w[-1], w[0])


def test_rare_class_images_are_drawn_more_often() -> None:
    sampler = ImageWeightSampler(imbalanced_labels(), 2, seed=0)
    idx = np.array(list(sampler))
    rare_share = np.isin(idx, range(90, 100)).mean()
    assert len(idx) == 105 and rare_share > 0.4  # 10 of 105 images, drawn like the 90 common ones
    sampler.set_class_maps([0.0, 0.9])  # the rare class is now learnt: its images fall back
    assert np.isin(np.array(list(sampler)), range(90, 100)).mean() < 0.1


def test_draw_is_seeded_by_seed_and_epoch() -> None:
    a, b = (ImageWeightSampler(imbalanced_labels(), 2, seed=3) for _ in range(2))
    a.set_epoch(4)
    b.set_epoch(4)
    torch.manual_seed(123)  # the global RNG does not matter (resume restores it elsewhere)
    first = list(a)
    torch.manual_seed(456)
    assert first == list(b)
    b.set_epoch(5)
    assert first != list(b)


def test_ddp_ranks_draw_the_same_list_and_take_disjoint_shards() -> None:
    labels = imbalanced_labels()
    full = ImageWeightSampler(labels, 2, seed=1)
    full.set_epoch(2)
    drawn = full.draw().tolist()
    shards = []
    for rank in range(4):
        s = ImageWeightSampler(labels, 2, seed=1, rank=rank, world=4)
        s.set_epoch(2)
        shards.append(list(s))
    assert all(len(sh) == 27 for sh in shards)  # ceil(105 / 4)
    padded = drawn + drawn[: 27 * 4 - 105]
    assert [padded[i] for i in range(108)] == [shards[i % 4][i // 4] for i in range(108)]


def test_training_run_stores_class_maps(shapes: Path, tmp_path: Path) -> None:  # noqa: F811
    cmd = _train_cmd(shapes, tmp_path, "--epochs", "1", "--image-weights", "--no-channels-last")
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "exp" / "weights" / "last.pt")
    assert len(ckpt["class_maps"]) == 5 and ckpt["options"]["image_weights"] is True
    bad = subprocess.run(_train_cmd(shapes, tmp_path, "--epochs", "1", "--image-weights", "--rect"),
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--image-weights" in bad.stderr
