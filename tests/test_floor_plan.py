"""The options and homes the floor plan promises: train.py's flags and RunConfig cannot drift apart,
option dataclasses are keyword-only, every script shares one help formatter and one `--verbose`, the
model-fit checks speak once, and the scripts find the project's own files from any working directory."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train
from build_utils.cli import HelpFormatter
from build_utils.errors import ConfigError
from build_utils.project_files import PROJECT_ROOT, locate
from modules.model_fit import input_size, model_classes
from train_val_utils.benchmarks.format_benchmark import BenchmarkOptions
from train_val_utils.engine import EvalOptions
from train_val_utils.predict.predictor import PredictOptions
from train_val_utils.training.run_config import RunConfig, resolve_run_config

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("train", "predict", "validation", "export", "benchmark")


def test_every_train_flag_has_a_run_config_field_and_back():
    dests = {a.dest for a in train.get_args_parser()._actions if a.dest != "help"}
    assert dests == {f.name for f in dataclasses.fields(RunConfig)}


def test_a_flag_without_a_field_is_refused_not_dropped():
    args = train.get_args_parser().parse_args([])
    args.new_flag = 1
    with pytest.raises(TypeError, match="new_flag"):
        resolve_run_config(args, {})


@pytest.mark.parametrize("options", [PredictOptions, BenchmarkOptions, EvalOptions])
def test_option_dataclasses_are_keyword_only(options):
    required = [f for f in dataclasses.fields(options) if f.default is dataclasses.MISSING]
    with pytest.raises(TypeError):
        options(*([None] * (len(required) + 1)))


def test_predict_options_default_to_the_suite_size():
    assert PredictOptions().img_size == 416


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_share_the_help_formatter_and_verbose(script):
    parser = importlib.import_module(script).get_args_parser()
    assert parser.formatter_class is HelpFormatter
    verbose = [a for a in parser._actions if a.dest == "verbose"]
    assert verbose and verbose[0].help == "debug logging" and isinstance(
        verbose[0], argparse.BooleanOptionalAction)


def test_model_classes_checks_names_and_ids_once():
    with pytest.raises(ConfigError, match=r"my.data: 3 class names, but the model \(w.pt\) predicts 80"):
        model_classes(80, ["a", "b", "c"], None, names_source="my.data", model_source="w.pt")
    with pytest.raises(ConfigError, match="2 category_ids for the model's 3 classes"):
        model_classes(3, ["a", "b", "c"], [1, 2], names_source="my.data", model_source="w.pt")
    coco = model_classes(80, None, None, names_source="w", model_source="w", coco_fallback=True)
    assert coco.names[0] == "person" and len(coco.names) == 80
    assert model_classes(80, None, None, names_source="w", model_source="w").names is None


def test_input_size_rounds_and_fixed_exports_refuse_size_changes(caplog):
    assert input_size(None, trained=320, stride=32, fixed_hw=None, model_source="m").img_size == 320
    with caplog.at_level(logging.WARNING):
        assert input_size(300, trained=None, stride=32, fixed_hw=None, model_source="m").img_size == 320
    fixed = input_size(640, trained=416, stride=32, fixed_hw=(256, 320), model_source="m.onnx")
    assert (fixed.img_size, fixed.fixed_hw, fixed.allows_rect) == (320, (256, 320), False)
    with pytest.raises(ConfigError, match="m.onnx: a fixed-size export cannot run --augment"):
        input_size(None, trained=None, stride=32, fixed_hw=(416, 416), model_source="m.onnx",
                   size_changing="--augment")


def test_locate_prefers_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert locate("cfg/hyp.yaml") == PROJECT_ROOT / "cfg/hyp.yaml"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg/hyp.yaml").write_text("mine")
    assert locate("cfg/hyp.yaml") == Path("cfg/hyp.yaml")
    assert locate("cfg/nowhere.yaml") == Path("cfg/nowhere.yaml")


@pytest.mark.slow
def test_train_predict_validation_from_another_folder(tiny_shapes, tmp_path):
    """Defaults (--hyp cfg/hyp.yaml, the cfg, data/coco.names) are the project's; outputs land here."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*cmd: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, *cmd], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    run(str(REPO / "train.py"), "--cfg", "cfg/yolov3-demo.cfg", "--data", str(tiny_shapes), "--epochs", "1",
        "--img-size", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--notest")
    best = tmp_path / "runs/train/exp/weights/last.pt"
    assert best.is_file()
    run(str(REPO / "validation.py"), "--weights", str(best), "--data", str(tiny_shapes), "--workers", "0",
        "--no-plots")
    assert (tmp_path / "runs/val/exp/metrics.json").is_file()
    image = next((tiny_shapes.parent / "val/images").iterdir())
    run(str(REPO / "predict.py"), "--weights", str(best), "--source", str(image), "--device", "cpu")
    assert (tmp_path / "runs/predict/exp" / image.name).is_file()
