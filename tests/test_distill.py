"""train.py --teacher: output distillation from the unpruned model into a pruned one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import train
from build_utils.errors import UserError
from modules.checkpoint import load_checkpoint
from modules.model import DarkNet
from train_val_utils.training.distill import Distiller, load_teacher

REPO = Path(__file__).resolve().parents[1]


def _demo(seed: int) -> DarkNet:
    torch.manual_seed(seed)
    return DarkNet(REPO / "cfg/yolov3-demo.cfg")


def _saved(model: DarkNet, path: Path) -> Path:
    model.eval()
    torch.save({"model": model.state_dict(), "cfg_text": (REPO / "cfg/yolov3-demo.cfg").read_text(),
                "class_names": [str(i) for i in range(model.nc)]}, path)
    return path


def test_a_student_equal_to_its_teacher_gets_no_gradient(tmp_path: Path) -> None:
    model = _demo(0)
    teacher = load_teacher(_saved(model, tmp_path / "t.pt"), None, model, torch.device("cpu"), False)
    distiller = Distiller.for_student(teacher, model, (3.54, 64.3, 37.4), 1.0)
    imgs = torch.rand(2, 3, 64, 64)
    student = [p.detach().requires_grad_(True) for p in model.eval()(imgs)[1]]
    box, obj, cls = distiller.terms(student, distiller.teacher_maps(imgs))
    assert float(box.detach()) < 1e-4  # 1 - GIoU of equal boxes (GIoU's min/max kinks leave it a subgradient)
    (obj + cls).backward()
    assert max(float(p.grad.abs().max()) for p in student) < 1e-5
    # a different student is pulled towards the teacher: its terms are larger and its gradient is not 0
    other = [p.detach().requires_grad_(True) for p in _demo(1).eval()(imgs)[1]]
    far = distiller.terms(other, distiller.teacher_maps(imgs))
    near = distiller.terms([p.detach() for p in student], distiller.teacher_maps(imgs))
    assert all(f > n for f, n in zip(far, near))
    sum(far).backward()
    assert min(float(p.grad.abs().max()) for p in other) > 1e-4


def test_the_weight_scales_every_term(tmp_path: Path) -> None:
    model = _demo(0)
    teacher = load_teacher(_saved(model, tmp_path / "t.pt"), None, model, torch.device("cpu"), False)
    preds = _demo(1).eval()(torch.rand(1, 3, 64, 64))[1]
    maps = Distiller.for_student(teacher, model, (1.0, 1.0, 1.0), 1.0).teacher_maps(torch.rand(1, 3, 64, 64))
    one = Distiller.for_student(teacher, model, (2.0, 3.0, 4.0), 1.0).terms(preds, maps)
    half = Distiller.for_student(teacher, model, (2.0, 3.0, 4.0), 0.5).terms(preds, maps)
    for a, b in zip(one, half):
        torch.testing.assert_close(b, a / 2)
    zeros = {k: torch.tensor(0.0) for k in ("box_loss", "obj_loss", "class_loss")}
    loss, items = Distiller.for_student(teacher, model, (2.0, 3.0, 4.0), 1.0).add_to(
        torch.tensor(1.0), zeros, preds, maps)
    torch.testing.assert_close(loss, 1.0 + sum(one))
    torch.testing.assert_close(items["obj_loss"], one[1])


def test_a_teacher_with_other_yolo_layers_is_a_user_error(tmp_path: Path) -> None:
    tiny = DarkNet(REPO / "cfg/yolov3-tiny.cfg").eval()
    torch.save({"model": tiny.state_dict(), "cfg_text": (REPO / "cfg/yolov3-tiny.cfg").read_text(),
                "class_names": [str(i) for i in range(80)]}, tmp_path / "tiny.pt")
    with pytest.raises(UserError, match="tiny.pt.*differ from the student"):
        load_teacher(tmp_path / "tiny.pt", None, _demo(0), torch.device("cpu"), False)
    with pytest.raises(UserError, match="--teacher .*gone.pt: file not found"):
        load_teacher(tmp_path / "gone.pt", None, _demo(0), torch.device("cpu"), False)
    with pytest.raises(UserError, match="a .pt carries its own cfg"):
        load_teacher(tmp_path / "tiny.pt", REPO / "cfg/yolov3-tiny.cfg", _demo(0), torch.device("cpu"), False)
    with pytest.raises(UserError, match="--teacher-cfg .* without --teacher"):
        train.main(train.get_args_parser().parse_args(["--teacher-cfg", "cfg/yolov3-tiny.cfg"]))


def test_train_with_a_teacher(tiny_shapes: Path, tmp_path: Path) -> None:
    teacher = _saved(_demo(5), tmp_path / "teacher.pt")

    def run(name: str, *extra: str) -> Path:
        args = train.get_args_parser().parse_args(
            ["--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data", str(tiny_shapes),
             "--hyp", str(REPO / "cfg/hyp-demo.yaml"), "--img-size", "64", "--batch-size", "4", "--nbs", "4",
             "--epochs", "1", "--device", "cpu", "--workers", "0", "--no-amp", "--seed", "2",
             "--project", str(tmp_path), "--name", name, "--notest", "--no-ema", *extra])
        return Path(train.main(args)["save_dir"])

    plain = run("plain")
    taught = run("taught", "--teacher", str(teacher), "--distill", "2")
    ckpt = load_checkpoint(taught / "weights" / "last.pt")
    assert ckpt["options"]["teacher"] == str(teacher) and ckpt["options"]["distill"] == 2.0
    # same seed, same batches: the distillation terms add to the logged losses
    losses = [np.genfromtxt(run / "results.csv", delimiter=",", names=True) for run in (plain, taught)]
    assert float(losses[1]["obj_loss"]) > float(losses[0]["obj_loss"]) + 0.1
    with pytest.raises(UserError, match="--distill -1"):
        run("bad", "--teacher", str(teacher), "--distill", "-1")
    # --distill 0 leaves the teacher unloaded: the same losses as the plain run
    off = run("off", "--teacher", str(tmp_path / "not-even-there.pt"), "--distill", "0")
    losses = [np.genfromtxt(run / "results.csv", delimiter=",", names=True) for run in (plain, off)]
    assert float(losses[1]["obj_loss"]) == float(losses[0]["obj_loss"])
    # a resumed run may name the teacher at its new path
    moved = tmp_path / "moved.pt"
    teacher.rename(moved)
    args = train.get_args_parser().parse_args(
        ["--resume", str(taught / "weights" / "last.pt"), "--epochs", "2", "--teacher", str(moved)])
    resumed = load_checkpoint(Path(train.main(args)["save_dir"]) / "weights" / "last.pt")
    assert resumed["options"]["teacher"] == str(moved) and resumed["epoch"] == 1
