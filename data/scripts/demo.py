"""`make demo`: the whole product on the built-in shapes dataset, in a few minutes on a laptop CPU.

Steps: make data/shapes when absent -> train cfg/yolov3-demo.cfg from scratch (GPU when present)
-> evaluate best.pt on the held-out val split -> predict.py on the val images -> print where
everything is. The target is mAP@0.5 >= 0.80 within 10 minutes on 2 CPU cores.

    python -m data.scripts.demo [--epochs 30] [--n-train 800] [--device cpu]
"""

from __future__ import annotations

import build_utils.omp_env  # noqa: F401 - first: OpenMP threads then sleep, not spin, when idle

# isort: split
import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.data_cfg import parse_data_cfg
from build_utils.errors import UserError

LOGGER = logging.getLogger("demo")
REPO = Path(__file__).resolve().parents[2]
MAP50_TARGET = 0.80


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Make the shapes dataset, train, evaluate and predict.")
    p.add_argument("--data-dir", default="data/shapes", help="shapes dataset folder (made when absent)")
    p.add_argument("--n-train", type=int, default=800, help="training images when the dataset is made")
    p.add_argument("--n-val", type=int, default=200, help="held-out validation images when made")
    p.add_argument("--img-size", type=int, default=160, help="image size for data, training and prediction")
    p.add_argument("--epochs", type=int, default=30, help="training epochs")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (and nominal batch)")
    p.add_argument("--device", default="", help="'' = GPU when present, else CPU")
    p.add_argument("--workers", type=int, default=2, help="data-loader workers")
    p.add_argument("--project", default="runs/demo", help="train/ and predict/ folders go here")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return p


def _run(cmd: list[str]) -> None:
    LOGGER.info("$ %s", " ".join(cmd))
    done = subprocess.run(cmd, cwd=REPO)
    if done.returncode != 0:
        raise UserError(f"demo step failed (exit {done.returncode}): {' '.join(cmd)}")


def ensure_dataset(args: argparse.Namespace) -> Path:
    data = REPO / args.data_dir / "shapes.data"
    if data.is_file():
        LOGGER.info("dataset: using existing %s", data)
        return data
    _run([sys.executable, "data/scripts/make_shapes.py", "--out", args.data_dir,
          "--n-train", str(args.n_train), "--n-val", str(args.n_val), "--img-size", str(args.img_size),
          "--seed", "0"])
    return data


def demo_cfg(data: Path, out_dir: Path) -> Path:
    """cfg/yolov3-demo.cfg, rewritten for the dataset's class count when it differs."""
    cfg = REPO / "cfg" / "yolov3-demo.cfg"
    nc = parse_data_cfg(data)["classes"]
    text = cfg.read_text(encoding="utf-8")
    new = rewrite_cfg_classes(text, nc, source=str(cfg))
    if new == text:
        return cfg
    out = out_dir / f"yolov3-demo-{nc}cls.cfg"
    out.write_text(new, encoding="utf-8")
    return out


def main(args: argparse.Namespace) -> dict:
    setup_logging(args.verbose)
    import train  # repository root is on sys.path under `python -m data.scripts.demo`

    t0 = time.time()
    data = ensure_dataset(args)
    project = REPO / args.project
    project.mkdir(parents=True, exist_ok=True)
    cfg = demo_cfg(data, project)
    train_args = train.get_args_parser().parse_args([
        "--cfg", str(cfg), "--data", str(data), "--hyp", str(REPO / "cfg" / "hyp-demo.yaml"),
        "--weights", "", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--nbs", str(args.batch_size), "--img-size", str(args.img_size), "--notest", "--device", args.device,
        "--workers", str(args.workers), "--project", str(project / "train"), "--name", "exp",
    ])
    result = train.main(train_args)
    t_train = time.time() - t0
    save_dir = Path(result["save_dir"])
    pred_name = save_dir.name
    _run([sys.executable, "predict.py", "--weights", result["weights"], "--source",
          str(data.parent / "val" / "images"), "--img-size", str(args.img_size), "--device", args.device,
          "--project", str(project / "predict"), "--name", pred_name, "--exist-ok"])
    total = time.time() - t0
    ok = result["map50"] >= MAP50_TARGET
    lines = [
        "", f"demo finished in {total / 60:.1f} min (training {t_train / 60:.1f} min)",
        f"  held-out val: mAP@0.5 {result['map50']:.3f} (target {MAP50_TARGET}: "
        f"{'met' if ok else 'MISSED'}), "
        f"mAP@0.5:0.95 {result['map']:.3f}, P {result['precision']:.3f}, R {result['recall']:.3f}",
        f"  dataset:      {data.parent}",
        f"  run folder:   {save_dir}  (results.csv/.png, labels.jpg, train_batch*.jpg, plots)",
        f"  weights:      {result['weights']}",
        f"  predictions:  {project / 'predict' / pred_name}",
    ]
    LOGGER.info("\n".join(lines))
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
