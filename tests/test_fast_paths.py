"""The hardware's fast paths: native-bfloat16 detection, AMP on by default where it is native (and how a
resume keeps its precision), bfloat16 inference with a float32 decode, passive OpenMP waiting."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from build_utils import omp_env, torch_utils
from build_utils.torch_utils import cpu_flags, fast_dtype, inference_half
from modules.backends import load_backend
from modules.model import DarkNet
from train_val_utils.training.run_config import RunConfig, resolve_amp

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / "cfg" / "yolov3-tiny.cfg"
CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 avx512f {extra}

processor\t: 1
flags\t\t: fpu
"""


@pytest.fixture
def native_bf16(monkeypatch: pytest.MonkeyPatch):
    """Pretend this CPU has (True) or lacks (False) native bfloat16."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(torch_utils, "cpu_has_native_bf16", lambda: value)
    return set_native


@pytest.mark.parametrize(("extra", "native"), [("avx512_bf16 avx512_vnni", True), ("amx_bf16 amx_tile", True),
                                               ("avx512_vnni", False), ("", False)])
def test_cpu_flags_name_the_native_bfloat16_units(tmp_path: Path, extra: str, native: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(extra=extra))
    flags = cpu_flags(info)
    assert "avx512f" in flags and "fpu" in flags  # the first processor's line
    assert bool(flags & set(torch_utils.NATIVE_BF16_FLAGS)) is native
    assert cpu_flags(tmp_path / "missing") == frozenset()  # not Linux: no flags, so no bfloat16 default


def test_fast_dtype_and_inference_half_follow_the_hardware(native_bf16, caplog) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    native_bf16(True)
    assert fast_dtype(cpu) == torch.bfloat16 and fast_dtype(cuda) == torch.float16
    assert inference_half(None, cpu) is True  # predict's default on such a CPU
    assert inference_half(None, cuda) is False  # float16 on CUDA only when asked
    assert inference_half(False, cpu) is False and inference_half(True, cuda) is True
    native_bf16(False)
    assert fast_dtype(cpu) is None and inference_half(None, cpu) is False
    with caplog.at_level(logging.WARNING):
        assert inference_half(True, cpu) is True  # asked for: runs, emulated, with a warning
    assert "emulated" in caplog.text
    with caplog.at_level(logging.WARNING):
        assert inference_half(True, torch.device("mps")) is False
    assert "float32 on mps" in caplog.text


def _run(amp: bool | None) -> RunConfig:
    import train

    args = vars(train.get_args_parser().parse_args(["--cfg", str(TINY_CFG)]))
    return RunConfig.from_options({**args, "amp": amp})


def test_amp_auto_is_resolved_once_and_kept_on_resume(native_bf16) -> None:
    cpu = torch.device("cpu")
    native_bf16(True)
    assert resolve_amp(_run(None), cpu, resumed=False).amp is True  # a new run: bfloat16 by default
    assert resolve_amp(_run(False), cpu, resumed=False).amp is False  # --no-amp: float32
    # a checkpoint written when auto meant CUDA only stores None: it resumes in float32 on any CPU
    assert resolve_amp(_run(None), cpu, resumed=True).amp is False
    assert resolve_amp(_run(True), cpu, resumed=True).amp is True  # a checkpoint of this version: as saved
    assert resolve_amp(_run(None), torch.device("cuda", 0), resumed=True).amp is True
    native_bf16(False)
    assert resolve_amp(_run(None), cpu, resumed=False).amp is False


def test_bfloat16_model_keeps_float32_anchors_and_decode() -> None:
    model = DarkNet(TINY_CFG).eval()
    anchors = [m.anchors.clone() for m in model.yolo_modules()]
    model.to(torch.bfloat16)
    for m, a in zip(model.yolo_modules(), anchors):
        assert m.anchors.dtype == torch.float32 and torch.equal(m.anchors, a)  # 319 stays 319
    with torch.inference_mode():
        pred, raw = model(torch.rand(1, 3, 64, 64, dtype=torch.bfloat16))
    assert pred.dtype == torch.float32 and pred.shape == (1, 3 * (2 * 2 + 4 * 4), 85)
    assert raw[0].dtype == torch.bfloat16


def test_bfloat16_backend_finds_the_same_objects(tiny_weights: Path, darknet_dir: Path) -> None:
    from modules.export_utils import example_input
    from train_val_utils.evaluation.nms import non_max_suppression

    x = example_input(416, darknet_dir / "dog.jpg")  # (1, 3, 416, 416)
    dets = {}
    for half in (False, True):
        backend = load_backend(tiny_weights, TINY_CFG, "cpu", half=half, channels_last=True)
        assert backend.precision == ("bfloat16" if half else "float32")
        with torch.inference_mode():
            pred = backend(x.to(backend.input_dtype))[0]
        assert pred.dtype == torch.float32
        dets[half] = non_max_suppression(pred, 0.25, 0.45)[0]  # (n, 6)
    fp32, bf16 = dets[False], dets[True]
    assert len(fp32) >= 3 and fp32[:, 5].tolist() == bf16[:, 5].tolist()  # dog, bicycle, truck
    assert (fp32[:, :4] - bf16[:, :4]).abs().max() < 8  # pixels at 416
    assert (fp32[:, 4] - bf16[:, 4]).abs().max() < 0.05


def test_prefer_passive_wait_keeps_a_users_choice() -> None:
    env: dict[str, str] = {}
    assert omp_env.prefer_passive_wait(env) == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert omp_env.prefer_passive_wait(env) == "ACTIVE"


def test_cores_other_processes_use_come_from_two_cpu_samples(tmp_path, monkeypatch) -> None:
    """2 cores for 1 s: the machine was fully busy and this process used 0.7 s of CPU, so others kept
    1.3 cores busy and one thread is what is left; a quiet machine keeps both; OMP_NUM_THREADS wins."""
    start = omp_env.CpuSample(wall=10.0, busy_jiffies=1000, total_jiffies=5000, own_cpu_s=2.0)
    busy = omp_env.CpuSample(wall=11.0, busy_jiffies=1200, total_jiffies=5200, own_cpu_s=2.7)
    assert omp_env.cores_others_use(start, busy, 2) == pytest.approx(1.3)
    quiet = omp_env.CpuSample(wall=11.0, busy_jiffies=1090, total_jiffies=5200, own_cpu_s=2.9)
    assert omp_env.cores_others_use(start, quiet, 2) == pytest.approx(0.0, abs=1e-9)  # 0.9 busy: ours
    assert omp_env.cores_others_use(start, start._replace(wall=10.1), 2) is None  # too short to tell
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 20 1 2 0 0 0\ncpu0 50 2 25 400 10 0 1 0 0 0\n")
    sample = omp_env.cpu_sample(str(stat))
    assert (sample.busy_jiffies, sample.total_jiffies) == (158, 978)
    assert omp_env.cpu_sample(str(tmp_path / "absent")) is None
    monkeypatch.setattr(omp_env, "cpu_sample", lambda: busy)
    monkeypatch.setattr(omp_env.os, "cpu_count", lambda: 2)
    assert omp_env.threads_for_free_cores(2, start, environ={}) == (1, pytest.approx(1.3))
    assert omp_env.threads_for_free_cores(2, start, environ={"OMP_NUM_THREADS": "2"}) == (2, None)
    monkeypatch.setattr(omp_env, "cpu_sample", lambda: quiet)
    assert omp_env.threads_for_free_cores(2, start, environ={})[0] == 2


SCRIPTS = ("train.py", "predict.py", "validation.py", "export.py", "benchmark.py", "data/scripts/demo.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_entry_scripts_import_the_wait_policy_first(script: str) -> None:
    """libgomp reads OMP_WAIT_POLICY when `import torch` loads it: the policy module comes first."""
    tree = ast.parse((REPO / script).read_text())
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
               and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    first = imports[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "build_utils.omp_env"


def test_the_policy_is_in_place_when_torch_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os; import predict; print(os.environ.get('OMP_WAIT_POLICY'))"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "PASSIVE"
    order = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    assert order.index("build_utils.omp_env") < order.index("torch")


def test_fit_threads_to_free_cores_shrinks_only_the_cpu_pool(monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(torch_utils, "threads_for_free_cores", lambda default, start: (1, 1.3))
    try:
        assert torch_utils.fit_threads_to_free_cores(torch.device("meta")) == before  # not the CPU: untouched
        assert torch.get_num_threads() == before
        assert torch_utils.fit_threads_to_free_cores(torch.device("cpu")) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
