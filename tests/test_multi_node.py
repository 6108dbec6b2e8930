"""Several processes on one host as torchrun and SLURM would start them on several nodes (gloo,
127.0.0.1): two nodes x 1 process, SLURM's variables, an elastic restart after kill -9 of a rank, and
a stopped rank named by --dist-timeout. Every launch of the same seeded --deterministic run must end
with the weights of one node x 2 processes."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import signal_on_line

from bench.equality_run import state_hash
from build_utils.errors import UserError
from train_val_utils.training.distributed_utils import LaunchEnv, cleanup_distributed, init_method, launch_env

REPO = Path(__file__).resolve().parents[1]
# no OMP_NUM_THREADS: torchrun sets it to 1 only where a node runs several processes (the layout bug)
ENV = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONUNBUFFERED": "1"}
RUN = ("--img-size", "64", "--batch-size", "2", "--nbs", "2", "--device", "cpu", "--workers", "0", "--no-amp",
       "--epochs", "2", "--notest", "--deterministic", "--seed", "3", "--multi-scale", "--name", "exp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_args(data: Path, project: Path, *extra: str) -> list[str]:
    return [str(REPO / "train.py"), "--cfg", str(REPO / "cfg/yolov3-demo.cfg"), "--data", str(data), "--hyp",
            str(REPO / "cfg/hyp-demo.yaml"), *RUN, "--project", str(project), *extra]


def _torchrun(*launcher: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher]


def _last(project: Path) -> Path:
    return project / "exp" / "weights" / "last.pt"


def test_rank_facts_come_from_torchrun_then_slurm() -> None:
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}
    assert launch_env(torchrun) == LaunchEnv(3, 4, 1, "torchrun")
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert launch_env(slurm) == LaunchEnv(5, 8, 1, "slurm")
    assert launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == LaunchEnv(0, 1, 0, "single")
    assert init_method(launch_env(torchrun), torchrun) == "env://"
    assert init_method(launch_env(slurm), {**slurm, "MASTER_ADDR": "node7"}) == "tcp://node7:29500"
    with pytest.raises(UserError, match="MASTER_ADDR"):
        init_method(launch_env(slurm), slurm)


def test_cleanup_frees_a_ddp_model_in_a_cycle_before_destroying_its_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DDP model left to the interpreter's exit outlived its gloo group and aborted 1 rank in 10."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    holder: dict[str, object] = {"model": ddp}
    holder["self"] = holder  # a cycle, as the Trainer's objects hold one another
    alive = weakref.ref(ddp)
    del ddp, holder
    freed_first: list[bool] = []
    destroy = dist.destroy_process_group

    def recording_destroy() -> None:
        freed_first.append(alive() is None)
        destroy()

    monkeypatch.setattr(dist, "destroy_process_group", recording_destroy)
    gc.disable()  # only cleanup_distributed's own collection may free the cycle
    try:
        cleanup_distributed()
    finally:
        gc.enable()
    assert freed_first == [True] and not dist.is_initialized()


@pytest.fixture(scope="module")
def one_node_hash(tiny_shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model hash of the reference launch: one node of two processes."""
    project = tmp_path_factory.mktemp("one_node")
    cmd = _torchrun("--nproc_per_node", "2", "--master_port", str(_free_port()),
                    *_train_args(tiny_shapes, project))
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return state_hash(_last(project))


@pytest.mark.slow
def test_two_nodes_of_one_process_equal_one_node_of_two(one_node_hash: str, tiny_shapes: Path,
                                                        tmp_path: Path) -> None:
    endpoint = f"127.0.0.1:{_free_port()}"
    rdzv = ("--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
            "--rdzv_id", "two")
    nodes = [subprocess.Popen(_torchrun(*rdzv, "--node_rank", str(r),
                                        *_train_args(tiny_shapes, tmp_path)),
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    errs = [p.communicate(timeout=120)[1] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    assert "1 intra-op thread(s) per process" in errs[0] + errs[1]
    assert state_hash(_last(tmp_path)) == one_node_hash


@pytest.mark.slow
def test_slurm_variables_start_the_same_run(one_node_hash: str, tiny_shapes: Path, tmp_path: Path) -> None:
    slurm = {"SLURM_NTASKS": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    tasks = [subprocess.Popen([sys.executable, *_train_args(tiny_shapes, tmp_path)],
                              env={**ENV, **slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    errs = [p.communicate(timeout=120)[1] for p in tasks]
    assert [p.returncode for p in tasks] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    assert "rank 1/2 (local 1" in errs[1] and "via slurm" in errs[1]
    assert state_hash(_last(tmp_path)) == one_node_hash


def _rank_pid(line: str, rank: int) -> int | None:
    marker = f"rank {rank}/2 (local {rank}, pid "
    return int(line.split(marker)[1].split(")")[0]) if marker in line else None


@pytest.mark.slow
def test_kill_9_of_a_rank_restarts_and_resumes_by_itself(one_node_hash: str, tiny_shapes: Path,
                                                         tmp_path: Path) -> None:
    cmd = _torchrun("--standalone", "--nproc_per_node", "2", "--max-restarts", "1",
                    *_train_args(tiny_shapes, tmp_path, "--save-period-steps", "1"))
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = signal_on_line(proc, "mid-epoch save: epoch 0, step 1", signal.SIGKILL,
                               lambda line: _rank_pid(line, 1))
        err = "".join(lines) + proc.communicate(timeout=120)[1]
    finally:
        proc.kill()  # torchrun, should the restarted group hang; a no-op once it exited
    assert proc.returncode == 0, err[-3000:]
    assert f"restart 1: resumed from {_last(tmp_path)} at epoch " in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # the restart used the same run folder
    assert state_hash(_last(tmp_path)) == one_node_hash


@pytest.mark.slow
def test_dist_timeout_names_a_stopped_rank(tiny_shapes: Path, tmp_path: Path) -> None:
    cmd = _torchrun("--nproc_per_node", "2", "--master_port", str(_free_port()),
                    *_train_args(tiny_shapes, tmp_path, "--dist-timeout", "10"))
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pid, stopped, named = None, 0.0, 0.0
    try:
        for line in proc.stderr:
            pid = _rank_pid(line, 1) or pid
            if not stopped and "epoch 0/1 saved" in line:
                os.kill(pid, signal.SIGSTOP)
                stopped = time.monotonic()
            if "rank 1 stopped answering" in line:
                named = time.monotonic()
                break
    finally:
        if pid is not None:  # what a cluster does to a stopped node; torchrun would wait 30 s more
            os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode != 0 and named, "no line named rank 1"
    assert named - stopped < 10 + 30
