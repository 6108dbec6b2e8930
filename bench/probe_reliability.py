"""Probe: >= 100 things a careless or hostile user does, each judged traceback / silent wrong / lost weights.

    python bench/probe_reliability.py            # ~5 minutes on 2 CPU cores; prints a table per class

Everything is generated here (a 64-px shapes dataset, a random yolov3-demo model and its exports), so it
runs from a fresh clone. A case passes when the tool says what happened: one `error: ...` line and exit 2
for a bad input to the whole command, a warning naming the item and a count for one bad item among many,
and intact best.pt/last.pt (best.pt holding the best epoch) after any kill or signal.
"""

# ruff: noqa: B023 - every case's lambda runs at once inside case(), inside its loop iteration
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "data" / "scripts")]

import kmeans_anchors  # noqa: E402
import torch  # noqa: E402
from bad_inputs import BAD_IMAGES, model_file_variants, write_bad_image  # noqa: E402

import export  # noqa: E402
import predict  # noqa: E402
import train  # noqa: E402
import validation  # noqa: E402
from build_utils.atomic import atomic_write  # noqa: E402
from build_utils.cli import run_cli  # noqa: E402
from modules.checkpoint import load_checkpoint  # noqa: E402
from modules.export_utils import save_as_darknet  # noqa: E402
from modules.model import DarkNet  # noqa: E402

DEMO_CFG = REPO / "cfg" / "yolov3-demo.cfg"
ROWS: list[tuple[str, str, str, str]] = []  # (class, case, outcome, detail)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(module, argv: list[str]) -> tuple[int, str]:  # noqa: ANN001
    """Run a script's main in-process like its __main__ does; a raised exception is a traceback."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = run_cli(module.main, module.get_args_parser().parse_args(argv))
        except BaseException:  # noqa: BLE001 - exactly what the probe counts
            return -1, err.getvalue() + traceback.format_exc()
    return rc, err.getvalue()


def one_error_line(rc: int, err: str, *phrases: str) -> tuple[str, str]:
    if rc == -1 or "Traceback" in err:
        return "traceback", err.strip().splitlines()[-1][:100]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if rc != 2 or len(errors) != 1 or lines[-1] != errors[0]:
        return "silent", f"rc {rc}, {len(errors)} error lines"
    missing = [p for p in phrases if p not in errors[0]]
    return ("silent", f"line lacks {missing}") if missing else ("ok", errors[0][7:100])


def warned_and_went_on(rc: int, err: str, item: str, count: str) -> tuple[str, str]:
    if rc == -1 or "Traceback" in err:
        return "traceback", err.strip().splitlines()[-1][:100]
    if rc != 0:
        return "silent", f"stopped with rc {rc}: {err.strip().splitlines()[-1][:80]}"
    if item not in err or count not in err:
        return "silent", f"no warning naming {Path(item).name} or no '{count}'"
    return "ok", f"warned, '{count}'"


def case(cls: str, name: str, fn: Callable[[], tuple[str, str]]) -> None:
    start = time.time()
    try:
        outcome, detail = fn()
    except BaseException as err:  # noqa: BLE001
        outcome, detail = "traceback", f"probe: {type(err).__name__}: {str(err)[:80]}"
    ROWS.append((cls, name, outcome, f"{detail} ({time.time() - start:.1f}s)"))
    print(f"{cls:12s} {name:44s} {outcome:9s} {detail[:90]}", flush=True)


# ---- fixtures ------------------------------------------------------------------------------------
def make_world(tmp: Path) -> dict[str, Path]:
    subprocess.run([sys.executable, str(REPO / "data/scripts/make_shapes.py"), "--out", str(tmp / "shapes"),
                    "--n-train", "4", "--n-val", "2", "--img-size", "64", "--seed", "3", "--workers", "1"],
                   check=True, capture_output=True, env=ENV)
    torch.manual_seed(0)
    weights = save_as_darknet(DarkNet(DEMO_CFG), tmp / "demo.weights")
    names = tmp / "demo.names"
    names.write_text("".join(f"c{i}\n" for i in range(5)))
    out = {"data": tmp / "shapes" / "shapes.data", "tmp": tmp}
    for fmt in ("pt", "onnx", "torchscript"):
        rc, err = cli(export, ["--weights", str(weights), "--cfg", str(DEMO_CFG), "--names", str(names),
                               "--format", fmt, "--out", str(tmp / f"demo.{fmt}"), "--img-size", "64"])
        assert rc == 0, err
        out[fmt] = tmp / f"demo.{fmt}"
    return out


def shapes_copy(world: dict, name: str) -> Path:
    """A private copy of the training split: images/ and labels/ (and a .data for it)."""
    dst = world["tmp"] / name
    shutil.copytree(world["data"].parent / "train" / "images", dst / "images")
    shutil.copytree(world["data"].parent / "train" / "labels", dst / "labels")
    names = world["data"].parent / "shapes.names"
    images = dst / "images"
    (dst / "d.data").write_text(f"classes=5\ntrain={images}\nvalid={images}\nnames={names}\n")
    return dst


# ---- classes of cases ----------------------------------------------------------------------------
def bad_images(world: dict) -> None:
    for n, name in enumerate(sorted(BAD_IMAGES)):
        ds = shapes_copy(world, f"img{n}")
        bad = write_bad_image(ds / "images", name)
        single = world["tmp"] / f"single{n}"
        single.mkdir()
        alone = write_bad_image(single, name)
        out = ["--project", str(world["tmp"] / "runs"), "--name", f"p{n}"]
        case("bad image", f"predict folder + {name}", lambda: warned_and_went_on(
            *cli(predict, ["--weights", str(world["onnx"]), "--source", str(ds / "images"), "--nosave"]),
            str(bad), "1 file(s) skipped"))
        case("bad image", f"validation dataset + {name}", lambda: warned_and_went_on(
            *cli(validation, ["--weights", str(world["onnx"]), "--data", str(ds / "d.data"), "--workers", "0",
                              "--no-plots", *out]), str(bad), "1 corrupt (skipped)"))
        case("bad image", f"kmeans + {name}", lambda: warned_and_went_on(
            *cli(kmeans_anchors, ["--path", str(ds / "images"), "--n", "3", "--refine", "0",
                                  "--img-size", "64"]), str(bad), "1 corrupt (skipped)"))
        case("bad image", f"predict the one file {name}", lambda: one_error_line(
            *cli(predict, ["--weights", str(world["onnx"]), "--source", str(alone), "--nosave"]), str(alone)))
        case("bad image", f"export --verify-image {name}", lambda: one_error_line(
            *cli(export, ["--weights", str(world["pt"]), "--format", "onnx", "--out",
                          str(world["tmp"] / f"v{n}.onnx"), "--verify-image", str(alone)]), str(alone)))


def model_files(world: dict) -> None:
    folder = world["tmp"] / "bad_models"
    folder.mkdir()
    img = world["data"].parent / "val" / "images"
    for name, (path, phrase) in model_file_variants(folder, world["pt"], world["onnx"],
                                                    world["torchscript"]).items():
        case("model file", f"predict {name}", lambda: one_error_line(
            *cli(predict, ["--weights", str(path), "--source", str(img), "--nosave"]), str(path), phrase))
        case("model file", f"validation {name}", lambda: one_error_line(
            *cli(validation, ["--weights", str(path), "--data", str(world["data"]), "--workers", "0"]),
            str(path), phrase))


def label_caches(world: dict) -> None:
    for n, content in enumerate(["[1, 2]", "3", '"text"', "null", '{"version": 3, "pairs": 7}', "{trunc"]):
        ds = shapes_copy(world, f"cache{n}")
        cli(kmeans_anchors, ["--path", str(ds / "images"), "--n", "3", "--refine", "0", "--img-size", "64"])
        cache = next((ds / "labels").glob("*.labels.cache"))
        for tool in ("kmeans", "validation"):
            cache.write_text(content)
            argv = (["--path", str(ds / "images"), "--n", "3", "--refine", "0", "--img-size", "64"]
                    if tool == "kmeans" else ["--weights", str(world["onnx"]), "--data", str(ds / "d.data"),
                                              "--workers", "0", "--no-plots", "--project",
                                              str(world["tmp"] / "runs"), "--name", f"c{n}"])
            case("label cache", f"{tool}: cache holds {content}", lambda: warned_and_went_on(
                *cli(kmeans_anchors if tool == "kmeans" else validation, argv), str(cache), "rebuilding"))
    case("label cache", "label edited in place, same size and mtime", lambda: stale_label(world))


def stale_label(world: dict) -> tuple[str, str]:
    from build_utils.datasets import LoadImagesAndLabels

    ds = shapes_copy(world, "stale")
    first = LoadImagesAndLabels(str(ds / "images"), img_size=64, nc=5)
    label = Path(first.label_files[0])
    st, text = label.stat(), label.read_text()
    label.write_text(("1" if text[0] != "1" else "2") + text[1:])
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = LoadImagesAndLabels(str(ds / "images"), img_size=64, nc=5)
    same = again.labels[0][0, 0] == first.labels[0][0, 0]
    return ("silent", "stale labels read from the cache") if same else ("ok", "edit seen")


def whole_command(world: dict) -> None:
    img = str(world["data"].parent / "val" / "images")
    for classes in (["5"], ["80"], ["999"], ["-1"], ["0", "7"]):
        case("one input", f"predict --classes {' '.join(classes)}", lambda: one_error_line(
            *cli(predict, ["--weights", str(world["pt"]), "--source", img, "--nosave", "--classes",
                           *classes]),
            "--classes", "indices 0 to 4"))
    notdb = world["tmp"] / "notes.db"
    notdb.write_text("not a database\n")
    evolve = ["--cfg", str(DEMO_CFG), "--data", str(world["data"]), "--hyp", str(REPO / "cfg/hyp-demo.yaml"),
              "--img-size", "64", "--batch-size", "2", "--epochs", "1", "--device", "cpu", "--workers", "0",
              "--project", str(world["tmp"] / "evolve"), "--evolve", "1"]
    for url, phrase in [("sqlite://", "in-memory"), ("sqlite:///:memory:", "in-memory"),
                        ("sqlite:////nonexistent/dir/x.db", "/nonexistent/dir does not exist"),
                        (f"sqlite:///{notdb}", "is not a SQLite database"),
                        ("redis://host/0", "expected sqlite")]:
        case("one input", f"--evolve-storage {url[:30]}", lambda: one_error_line(
            *cli(train, [*evolve, "--evolve-storage", url]), phrase))
    spaces = {"yaml error": "lr0: {low: 0.001, high: [0.1\n",
              "python tag": "lr0: !!python/object:os.system {}\n",
              "duplicate key": "lr0: {low: 0.001, high: 0.1}\nlr0: {low: 0.01, high: 0.1}\n",
              "binary": "lr0: \x00\x01\n", "unknown key": "lrr0: {low: 0.001, high: 0.1}\n",
              "a list": "- lr0\n", "low above high": "lr0: {low: 0.1, high: 0.01}\n"}
    for name, text in spaces.items():
        path = world["tmp"] / f"space_{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        case("one input", f"--evolve-space with {name}", lambda: one_error_line(
            *cli(train, [*evolve, "--evolve-space", str(path)]), str(path)))
    big = world["tmp"] / "big.cfg"
    big.write_text(DEMO_CFG.read_text().replace("filters=16", "filters=65536", 1))
    huge = [("predict --img-size 320000", predict, ["--weights", str(world["pt"]), "--source", img,
                                                    "--nosave", "--img-size", "320000"]),
            ("validation --img-size 320000", validation, ["--weights", str(world["pt"]), "--img-size",
                                                          "320000", "--data", str(world["data"])]),
            ("train filters=65536 at 4096", train, [*evolve[:-2], "--cfg", str(big), "--img-size", "4096",
                                                    "--batch-size", "16"])]
    for tool, module, argv in huge:
        case("memory", tool, lambda: timed(lambda: one_error_line(*cli(module, argv), "needs at least")))


def timed(fn: Callable[[], tuple[str, str]]) -> tuple[str, str]:
    start = time.time()
    outcome, detail = fn()
    took = time.time() - start
    return ("silent", f"took {took:.1f}s (> 5 s)") if outcome == "ok" and took > 5 else (outcome, detail)


def umask_cases(world: dict) -> None:
    for mask, mode in [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)]:
        def check(mask: int = mask, mode: int = mode) -> tuple[str, str]:
            old = os.umask(mask)
            try:
                with atomic_write(world["tmp"] / f"m{mask}.pt") as f:
                    f.write(b"x")
            finally:
                os.umask(old)
            got = (world["tmp"] / f"m{mask}.pt").stat().st_mode & 0o777
            return ("ok", f"{got:o}") if got == mode else ("silent", f"mode {got:o}, want {mode:o}")
        case("umask", f"atomic write under umask {mask:03o}", check)
    mask = os.umask(0o022)
    os.umask(mask)
    for fmt in ("pt", "onnx", "torchscript"):
        mode, want = world[fmt].stat().st_mode & 0o777, 0o666 & ~mask
        case("umask", f"export {fmt} under umask {mask:03o}",
             lambda m=mode, w=want: ("ok", f"{m:o}") if m == w else ("silent", f"mode {m:o}, want {w:o}"))


# ---- real training runs (subprocesses) ---------------------------------------------------------------
def train_argv(world: dict, project: Path, *extra: str) -> list[str]:
    return ["--cfg", str(DEMO_CFG), "--data", str(world["data"]), "--hyp", str(REPO / "cfg/hyp-demo.yaml"),
            "--img-size", "64", "--batch-size", "2", "--nbs", "4", "--device", "cpu", "--workers", "0",
            "--no-channels-last", "--project", str(project), "--name", "exp", "--epochs", "2", *extra]


def harness(at: str, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tests/kill_harness.py"), at, "1", "--", *argv],
                          capture_output=True, text=True, env=ENV, cwd=REPO)


def kill_then_resume(world: dict, at: str) -> tuple[str, str]:
    project = world["tmp"] / f"kill_{at}"
    first = harness(at, train_argv(world, project))
    if "Traceback" in first.stderr:
        return "traceback", first.stderr.strip().splitlines()[-1][:100]
    last = project / "exp" / "weights" / "last.pt"
    resume_line = "resume with: python train.py --resume" in first.stderr
    if at == "sigterm" and (first.returncode != 143 or not resume_line):
        return "silent", f"SIGTERM: rc {first.returncode}, no resume command"
    second = harness("none", train_argv(world, project, "--resume", str(last)))
    if second.returncode != 0 or "Traceback" in second.stderr:
        return "traceback" if "Traceback" in second.stderr else "silent", second.stderr.strip()[-100:]
    best_path = last.with_name("best.pt")
    if not best_path.is_file():
        return "lost", "no best.pt after --resume"
    best, ckpt = load_checkpoint(best_path), load_checkpoint(last)
    if best["epoch"] != 1 or ckpt["best_epoch"] != 1 or not ckpt["finished"]:
        return "lost", f"best.pt epoch {best['epoch']}, last.pt best_epoch {ckpt.get('best_epoch')}"
    return "ok", "best.pt = epoch 1 (the best), last.pt finished"


def training_runs(world: dict) -> None:
    for at in ("best_tmp", "after_best", "last_tmp", "after_last", "sigterm"):
        case("kill/signal", f"{at} at epoch 1, then --resume", lambda: kill_then_resume(world, at))
    project = world["tmp"] / "locked"
    (project / "exp").mkdir(parents=True)
    (project / "exp" / ".run.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    case("run folder", "second live run into one folder (--exist-ok)", lambda: one_error_line(
        *subprocess_cli(train_argv(world, project, "--exist-ok")), "in use by a live run"))
    case("run folder", "cfg edited in place, then --resume", lambda: edited_cfg(world))


def subprocess_cli(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *argv], capture_output=True, text=True,
                          env=ENV, cwd=REPO)
    return proc.returncode, proc.stderr


def edited_cfg(world: dict) -> tuple[str, str]:
    project = world["tmp"] / "edited"
    cfg = world["tmp"] / "run.cfg"
    shutil.copyfile(DEMO_CFG, cfg)
    argv = [*train_argv(world, project), "--cfg", str(cfg)]
    harness("after_last", argv)
    cfg.write_text(cfg.read_text().replace("activation=leaky", "activation=mish", 1))
    rc, err = subprocess_cli([*argv, "--resume", str(project / "exp" / "weights" / "last.pt")])
    return one_error_line(rc, err, f"{cfg}:", "activation=mish")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="probe_reliability_"))
    world = make_world(tmp)
    for group in (bad_images, model_files, label_caches, whole_command, umask_cases, training_runs):
        group(world)
    table: dict[str, Counter] = defaultdict(Counter)
    for cls, _, outcome, _ in ROWS:
        table[cls][outcome] += 1
    print("\n| class | cases | ok | traceback | silent wrong | lost best.pt/last.pt |")
    print("|---|---|---|---|---|---|")
    total = Counter(outcome for *_, outcome, _ in ROWS)
    for cls, c in [*table.items(), ("**all**", total)]:
        print(f"| {cls} | {sum(c.values())} | {c['ok']} | {c['traceback']} | {c['silent']} | {c['lost']} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if total["ok"] == len(ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
