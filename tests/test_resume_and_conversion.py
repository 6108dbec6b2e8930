"""Where the round's features meet: resuming older checkpoints, converted .pt files, exported graphs.

- A last.pt written before `--channels-last` existed resumes in contiguous memory (as it was trained),
  so the continuation stays bit for bit.
- `export.py --format pt` keeps the source's training image size and category ids, and files its own
  arguments under `export_options`, never `options` (where readers look for training options).
- An exported graph is refused as training's starting weights with a message naming the fix.
"""

from __future__ import annotations

import pytest
import torch

import export
import train
from build_utils.errors import WeightsError
from modules.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from modules.model import DarkNet
from train_val_utils.training.run_config import resolve_run_config
from train_val_utils.training.train_setup import load_start_weights

DEMO_CFG = "cfg/yolov3-demo.cfg"


def _checkpoint(tmp_path, options: dict) -> tuple:
    model = DarkNet(DEMO_CFG)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    names = [f"c{i}" for i in range(model.nc)]
    ckpt = build_checkpoint(model, None, opt, None, None, 0, 0.1, {}, options, names, [],
                            category_ids=list(range(10, 10 + model.nc)))
    path = tmp_path / "run" / "weights" / "last.pt"
    path.parent.mkdir(parents=True)
    save_checkpoint(ckpt, path)
    return path, ckpt


def test_resuming_an_older_checkpoint_keeps_contiguous_memory(tmp_path):
    defaults = vars(train.get_args_parser().parse_args([]))
    older = {k: v for k, v in defaults.items() if k not in ("channels_last", "compile", "image_weights")}
    older.update(cfg=DEMO_CFG, epochs=3)
    path, _ = _checkpoint(tmp_path, older)
    args = train.get_args_parser().parse_args(["--cfg", DEMO_CFG, "--resume", str(path)])
    run, ckpt, ckpt_path = resolve_run_config(args, defaults)
    assert ckpt_path == path and ckpt is not None
    assert run.channels_last is False and run.compile is False and run.image_weights is False
    assert args.channels_last is True  # the command line itself is left as parsed


def test_converted_pt_keeps_the_training_size_and_category_ids(tmp_path):
    defaults = vars(train.get_args_parser().parse_args([]))
    path, _ = _checkpoint(tmp_path, {**defaults, "img_size": 96})
    out = tmp_path / "converted.pt"
    args = ["--weights", str(path), "--format", "pt", "--out", str(out)]
    export.main(export.get_args_parser().parse_args(args))
    converted = load_checkpoint(out)
    assert converted["img_size"] == 96 and converted["options"] == {}
    assert converted["export_options"]["format"] == "pt"
    assert converted["category_ids"] == list(range(10, 10 + DarkNet(DEMO_CFG).nc))


@pytest.mark.parametrize("suffix", [".onnx", ".torchscript"])
def test_an_exported_graph_is_not_starting_weights(tmp_path, suffix):
    graph = tmp_path / f"best{suffix}"
    graph.write_bytes(b"\x08\x07graph")
    with pytest.raises(WeightsError, match="exported graph cannot be training's starting weights"):
        load_start_weights(DarkNet(DEMO_CFG), str(graph))
