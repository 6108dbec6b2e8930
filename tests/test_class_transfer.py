"""Fine-tuning to other classes: predictor rows follow the class names (modules/class_transfer.py)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

import train
from bench.class_transfer_check import build_subset
from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.data_cfg import parse_data_cfg
from build_utils.errors import UserError, WeightsError
from modules.checkpoint import load_checkpoint, save_checkpoint
from modules.class_transfer import (
    class_indices,
    match_class_names,
    model_predictors,
    normalise_class_name,
    predictor_rows,
)
from modules.model import DarkNet
from modules.weights import save_darknet_weights
from train_val_utils.training.train_setup import ClassTransfer, load_start_weights

REPO = Path(__file__).resolve().parents[1]
DEMO_CFG = REPO / "cfg" / "yolov3-demo.cfg"
SOURCE = ["cat", "Dining_Table", "car", "person"]  # the demo source model's 4 classes


def _model(nc: int, seed: int = 0) -> DarkNet:
    torch.manual_seed(seed)
    return DarkNet.from_cfg_text(rewrite_cfg_classes(DEMO_CFG.read_text(), nc), source=f"demo-{nc}.cfg")


def _outputs(model: DarkNet, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)[0]  # (1, N, 5+nc): box, objectness, class probabilities


@pytest.fixture()
def source(tmp_path: Path) -> DarkNet:
    """A 4-class demo model with distinct predictor rows, saved as src.pt (with names) and src.weights."""
    model = _model(4, seed=1)
    with torch.no_grad():
        for p in model_predictors(model):
            conv = dict(model.named_modules())[p.prefix]
            conv.bias.copy_(torch.linspace(-3, 3, conv.bias.numel()))
    save_checkpoint({"model": model.state_dict(), "ema": None, "cfg_text": model.cfg_text,
                     "cfg_name": model.cfg_name, "class_names": SOURCE}, tmp_path / "src.pt")
    save_darknet_weights(model, tmp_path / "src.weights")
    return model


def test_names_match_ignoring_case_spaces_underscores_and_dashes() -> None:
    assert normalise_class_name(" Dining_Table-x ") == "diningtablex"
    assert match_class_names(["dining table", "PERSON", "zebra", "Car"], SOURCE) == [1, 3, None, 2]
    assert match_class_names(["a"], ["A", "a"]) == [0]  # a repeated source name: its first row


def test_predictor_rows_with_shuffled_order() -> None:
    # 2 anchors; target classes (person, cat, car) from source classes 3, 0, 2 of 4
    dst, src = predictor_rows([3, 0, 2], na=2, source_nc=4)
    assert dst == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    assert src == [0, 1, 2, 3, 4, 8, 5, 7, 9, 10, 11, 12, 13, 17, 14, 16]


@pytest.mark.parametrize("weights", ["src.pt", "src.weights"])
def test_shuffled_classes_give_the_source_outputs(tmp_path: Path, source: DarkNet, weights: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    names = ["person", "car", "diningtable"]  # source classes 3, 2, 1
    model = _model(3)
    source_names = None
    if weights.endswith(".weights"):  # Darknet files carry no names: --source-names gives them
        source_names = tmp_path / "src.names"
        source_names.write_text("".join(n + "\n" for n in SOURCE))
    with caplog.at_level(logging.INFO):
        load_start_weights(model, str(tmp_path / weights), ClassTransfer(names, source_names))
    assert "transferred 3 of 3 classes from" in caplog.text and "person, car, diningtable" in caplog.text
    x = torch.rand(1, 3, 96, 96)
    ours, ref = _outputs(model, x), _outputs(source, x)
    torch.testing.assert_close(ours[..., :5], ref[..., :5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[..., 5:], ref[..., [5 + 3, 5 + 2, 5 + 1]], rtol=1e-5, atol=1e-5)


def test_partial_match_keeps_the_bias_prior_for_new_classes(tmp_path: Path, source: DarkNet,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    names = ["car", "zebra", "cat"]  # 2 of 3 in the source
    fresh = _model(3).state_dict()
    model = _model(3)
    with caplog.at_level(logging.INFO):
        load_start_weights(model, str(tmp_path / "src.pt"), ClassTransfer(names))
    assert "transferred 2 of 3 classes from" in caplog.text and ": car, cat;" in caplog.text
    assert "not in the source, starting from the bias prior: zebra" in caplog.text
    state, ref = model.state_dict(), source.state_dict()
    for p in model_predictors(model):
        w, b = state[f"{p.prefix}.weight"], state[f"{p.prefix}.bias"]
        for a in range(p.na):
            new, old = a * 8, a * 9  # 5 + 3 and 5 + 4 rows per anchor
            torch.testing.assert_close(b[new:new + 5], ref[f"{p.prefix}.bias"][old:old + 5])
            torch.testing.assert_close(w[[new + 5, new + 7]], ref[f"{p.prefix}.weight"][[old + 7, old + 5]])
            torch.testing.assert_close(w[new + 6], fresh[f"{p.prefix}.weight"][new + 6])  # zebra: fresh
            assert b[new + 6].item() == pytest.approx(math.log(0.6 / (3 - 0.99)))


def test_no_transfer_and_unknown_names_reinitialise(tmp_path: Path, source: DarkNet,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    fresh = _model(3).state_dict()
    key = f"{model_predictors(source)[0].prefix}.bias"
    for weights, transfer in (("src.pt", None), ("src.weights", ClassTransfer(["person", "car", "cat"])),
                              ("src.pt", ClassTransfer(["zebra", "horse", "cow"]))):
        model = _model(3)
        with caplog.at_level(logging.INFO):
            load_start_weights(model, str(tmp_path / weights), transfer)
        torch.testing.assert_close(model.state_dict()[key], fresh[key])  # predictor as initialised
    assert "pass --source-names to transfer" in caplog.text  # 4-class .weights: names unknown
    assert "transferred 0 of 3 classes" in caplog.text


def test_source_names_must_fit_the_weights(tmp_path: Path, source: DarkNet) -> None:
    names = tmp_path / "five.names"
    names.write_text("a\nb\nc\nd\ne\n")
    with pytest.raises(WeightsError, match="lists 5 names but the weights predict 4"):
        load_start_weights(_model(3), str(tmp_path / "src.weights"), ClassTransfer(["a", "b", "c"], names))
    with pytest.raises(WeightsError, match="not 3 anchors x \\(5 \\+ 5 named classes\\)"):
        load_start_weights(_model(3), str(tmp_path / "src.pt"), ClassTransfer(["a", "b", "c"], names))


def test_same_names_same_order_load_unchanged(tmp_path: Path, source: DarkNet) -> None:
    model = _model(4)
    names = ["cat", "dining table", "car", "person"]
    load_start_weights(model, str(tmp_path / "src.pt"), ClassTransfer(names))
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_official_tiny_weights_transfer_by_coco_names(tiny_weights: Path, repo_root: Path) -> None:
    from modules.weights import load_darknet_weights

    cfg = repo_root / "cfg" / "yolov3-tiny.cfg"
    src = DarkNet(cfg)
    load_darknet_weights(src, tiny_weights)
    model = DarkNet.from_cfg_text(rewrite_cfg_classes(cfg.read_text(), 3), "tiny-3.cfg")
    load_start_weights(model, str(tiny_weights), ClassTransfer(["car", "Dining Table", "person"]))
    x = torch.rand(1, 3, 128, 128)
    ours, ref = _outputs(model, x), _outputs(src, x)
    torch.testing.assert_close(ours[..., 5:], ref[..., [5 + 2, 5 + 60, 5 + 0]], rtol=1e-4, atol=1e-6)


def test_validation_classes_resolve_names_and_indices() -> None:
    names = ["person", "bicycle", "dining table"]
    assert class_indices(["Dining_Table", "0", "person"], names, "x.data") == (0, 2)
    with pytest.raises(UserError, match="--classes zebra: not a class of x.data"):
        class_indices(["zebra"], names, "x.data")
    with pytest.raises(UserError, match="--classes 3"):
        class_indices(["3"], names, "x.data")


@pytest.mark.slow
def test_train_flags_transfer_or_not(tmp_path: Path, tiny_shapes: Path) -> None:
    """train.py end to end: --transfer (default) starts from the source rows, --no-transfer from the prior."""
    names = parse_data_cfg(tiny_shapes)["class_names"]  # 5 shapes
    src = _model(4, seed=1)
    predictor = model_predictors(src)[0]
    with torch.no_grad():  # source class k's logit bias is 10 + k
        bias = dict(src.named_parameters())[f"{predictor.prefix}.bias"].view(predictor.na, 9)
        bias[:, 5:] = 10 + torch.arange(4.0)
    src_names = [names[3], names[0], "zebra", names[4]]
    save_checkpoint({"model": src.state_dict(), "ema": None, "cfg_text": src.cfg_text, "cfg_name": "demo",
                     "class_names": src_names}, tmp_path / "src.pt")
    cfg = tmp_path / "demo-5.cfg"
    cfg.write_text(rewrite_cfg_classes(src.cfg_text, 5))
    assert train.get_args_parser().parse_args([]).transfer
    rows = {}
    for flag in ("--transfer", "--no-transfer"):
        train.main(train.get_args_parser().parse_args([
            "--cfg", str(cfg), "--data", str(tiny_shapes), "--hyp", str(REPO / "cfg" / "hyp-demo.yaml"),
            "--weights", str(tmp_path / "src.pt"), "--epochs", "1", "--batch-size", "4", "--img-size", "64",
            "--device", "cpu", "--workers", "0", "--no-ema", "--project", str(tmp_path / "runs"), "--name",
            flag[2:], flag]))
        state = load_checkpoint(tmp_path / "runs" / flag[2:] / "weights" / "last.pt")["model"]
        rows[flag] = state[f"{predictor.prefix}.bias"].view(predictor.na, 10)[:, 5:]  # (na, 5 classes)
    prior = math.log(0.6 / (5 - 0.99))
    # one optimizer step moves a bias by far less than 0.1
    expected = torch.tensor([11.0, prior, prior, 10.0, 13.0]).expand(predictor.na, 5)
    torch.testing.assert_close(rows["--transfer"], expected, atol=0.1, rtol=0)
    torch.testing.assert_close(rows["--no-transfer"], torch.full((predictor.na, 5), prior), atol=0.1, rtol=0)


@pytest.mark.slow
def test_transferred_model_scores_like_the_source_on_its_classes(tmp_path: Path, tiny_weights: Path,
                                                                  coco128: Path, repo_root: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any step: per-class AP of the 3-class model = the 80-class source's under --classes."""
    import validation

    monkeypatch.setenv("YOLOV3_CACHE", str(tmp_path / "cache"))
    kept = ["car", "person", "dog"]  # coco classes 2, 0, 16, relabelled 0, 1, 2
    all_data, kept_data = build_subset(tmp_path, kept, coco128, first=24)
    cfg = repo_root / "cfg" / "yolov3-tiny.cfg"
    model = DarkNet.from_cfg_text(rewrite_cfg_classes(cfg.read_text(), 3), "tiny-3.cfg")
    load_start_weights(model, str(tiny_weights), ClassTransfer(kept))
    save_checkpoint({"model": model.state_dict(), "cfg_text": model.cfg_text, "cfg_name": model.cfg_name,
                     "class_names": kept}, tmp_path / "start.pt")
    common = ["--img-size", "320", "--device", "cpu", "--workers", "0", "--no-plots",
              "--project", str(tmp_path / "val")]
    source = validation.main(validation.get_args_parser().parse_args(
        ["--weights", str(tiny_weights), "--cfg", str(cfg), "--data", str(all_data),
         "--classes", *kept, *common]))
    ours = validation.main(validation.get_args_parser().parse_args(
        ["--weights", str(tmp_path / "start.pt"), "--data", str(kept_data), *common]))
    src_per = {c["name"]: c for c in source["per_class"]}
    assert source["classes"] == [0, 2, 16] and source["n_instances"] == ours["n_instances"] > 20
    assert sum(c["instances"] for c in source["per_class"]) == source["n_instances"]  # other labels ignored
    for c in ours["per_class"]:
        assert c["instances"] == src_per[c["name"]]["instances"] > 0
        assert c["ap"] == pytest.approx(src_per[c["name"]]["ap"], abs=0.002), c["name"]
        assert c["ap50"] == pytest.approx(src_per[c["name"]]["ap50"], abs=0.002), c["name"]
    assert ours["map"] == pytest.approx(source["map"], abs=0.002) and ours["map"] > 0.05
