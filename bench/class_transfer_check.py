"""Fine-tuning COCO weights to a few COCO classes: before any step, and after a short fine-tune.

Builds a coco128 subset holding the images with at least one of `--classes` (labels relabelled to
those classes, in the order given), then scores on the same images at the same size:
  source       the official yolov3-tiny weights, `validation.py --classes` (only the kept classes)
  transferred  the 3-class model as `train.py` starts it (predictor rows transferred), no step taken
  fine-tuned   after `--epochs` of `train.py --weights yolov3-tiny.weights` on the subset
  no-transfer  (with --baseline) the same fine-tune with `--no-transfer`

    python bench/class_transfer_check.py                      # person car chair at 416, 5 epochs
    python bench/class_transfer_check.py --classes car chair person --img-size 320 --baseline
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402
import validation  # noqa: E402
from build_utils.cfg_edit import rewrite_cfg_classes  # noqa: E402
from build_utils.cli import ArgumentParser  # noqa: E402
from build_utils.data_cfg import load_class_names  # noqa: E402
from modules.checkpoint import save_checkpoint  # noqa: E402
from modules.class_transfer import match_class_names  # noqa: E402
from modules.model import DarkNet  # noqa: E402
from train_val_utils.training.train_setup import ClassTransfer, load_start_weights  # noqa: E402

REFERENCE = REPO.parent / "shared" / "reference"
logger = logging.getLogger("class_transfer_check")


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--classes", nargs="+", default=["person", "car", "chair"], help="kept COCO classes")
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/class_transfer", help="subset dataset and runs go here")
    p.add_argument("--hyp", default=str(REPO / "cfg" / "hyp.yaml"), help="hyperparameters of the fine-tunes")
    p.add_argument("--close-mosaic", type=int, default=10, help="train.py --close-mosaic of the fine-tunes")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=False,
                   help="also fine-tune with --no-transfer")
    return p


def build_subset(out: Path, kept: list[str], src: Path = REFERENCE / "coco128",
                 first: int | None = None) -> tuple[Path, Path]:
    """(80-class .data, k-class .data) over the coco128 images holding a kept class (of the `first`
    label files when given); the k-class labels are relabelled to `kept`'s order."""
    coco = load_class_names(REPO / "data" / "coco.names")
    source_of = match_class_names(kept, coco)
    new_index = {s: j for j, s in enumerate(source_of)}
    for kind in ("all", "kept"):
        for sub in ("images", "labels"):
            (out / kind / sub).mkdir(parents=True, exist_ok=True)
    for label in sorted((src / "labels" / "train").glob("*.txt"))[:first]:
        rows = [r.split() for r in label.read_text().splitlines() if r.strip()]
        kept_rows = [[str(new_index[int(r[0])]), *r[1:]] for r in rows if int(r[0]) in new_index]
        image = src / "images" / "train" / f"{label.stem}.jpg"
        if not kept_rows or not image.is_file():
            continue
        for kind, lines in (("all", rows), ("kept", kept_rows)):
            link = out / kind / "images" / image.name
            if not link.exists():
                link.symlink_to(image)
            (out / kind / "labels" / label.name).write_text("".join(" ".join(r) + "\n" for r in lines))
    (out / "kept.names").write_text("".join(n + "\n" for n in kept))
    all_data, kept_data = out / "all.data", out / "kept.data"
    all_data.write_text(f"classes=80\ntrain={out / 'all/images'}\nvalid={out / 'all/images'}\n"
                        f"names={REPO / 'data/coco.names'}\n")
    kept_data.write_text(f"classes={len(kept)}\ntrain={out / 'kept/images'}\nvalid={out / 'kept/images'}\n"
                         f"names={out / 'kept.names'}\n")
    return all_data, kept_data


def score(weights: Path, data: Path, args: argparse.Namespace, *extra: str) -> dict:
    argv = ["--weights", str(weights), "--data", str(data), "--img-size", str(args.img_size),
            "--device", args.device, "--workers", str(args.workers), "--no-plots",
            "--project", str(Path(args.out) / "val"), *extra]
    return validation.main(validation.get_args_parser().parse_args(argv))


def fine_tune(cfg: Path, data: Path, weights: Path, args: argparse.Namespace, name: str, *extra: str) -> Path:
    argv = ["--cfg", str(cfg), "--data", str(data), "--weights", str(weights), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--img-size", str(args.img_size), "--device", args.device,
            "--workers", str(args.workers), "--notest", "--project", str(Path(args.out) / "train"),
            "--name", name, "--exist-ok", "--hyp", args.hyp,
            "--close-mosaic", str(args.close_mosaic), *extra]
    return Path(train.main(train.get_args_parser().parse_args(argv))["weights"])


def row(label: str, res: dict, kept: list[str]) -> str:
    per = {c["name"]: c for c in res["per_class"]}
    cells = "".join(f" | {per[n]['ap50']:.4f} / {per[n]['ap']:.4f}" for n in kept)
    return f"| {label} | {res['map50']:.4f} | {res['map']:.4f}{cells} |"


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    weights = REFERENCE / "weights" / "yolov3-tiny.weights"
    out = Path(args.out).resolve()
    all_data, kept_data = build_subset(out, args.classes)
    cfg = out / f"yolov3-tiny-{len(args.classes)}cls.cfg"
    cfg.write_text(rewrite_cfg_classes((REPO / "cfg" / "yolov3-tiny.cfg").read_text(), len(args.classes)))
    model = DarkNet(cfg)
    load_start_weights(model, str(weights), ClassTransfer(args.classes))
    start = out / "transferred.pt"
    save_checkpoint({"model": model.state_dict(), "cfg_text": model.cfg_text, "cfg_name": model.cfg_name,
                     "class_names": list(args.classes)}, start)
    results = {"source (80 cls, --classes)": score(weights, all_data, args, "--cfg", str(REPO / "cfg" /
                                                   "yolov3-tiny.cfg"), "--classes", *args.classes),
               "transferred, no step": score(start, kept_data, args)}
    tuned = fine_tune(cfg, kept_data, weights, args, "transfer")
    results[f"fine-tuned {args.epochs} epochs"] = score(tuned, kept_data, args)
    if args.baseline:
        base = fine_tune(cfg, kept_data, weights, args, "no-transfer", "--no-transfer")
        results[f"--no-transfer, {args.epochs} epochs"] = score(base, kept_data, args)
    n_images = len(list((out / "kept" / "images").glob("*.jpg")))
    print(f"\n{n_images} coco128 images holding {', '.join(args.classes)}; size {args.img_size}; "
          "mAP = COCO mAP@0.5 / @0.5:0.95 over the kept classes; per class AP@0.5 / AP@0.5:0.95")
    print("| model | mAP@0.5 | mAP@0.5:0.95 | " + " | ".join(args.classes) + " |")
    print("|---" * (3 + len(args.classes)) + "|")
    for label, res in results.items():
        print(row(label, res, args.classes))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
