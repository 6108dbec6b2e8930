"""Run train.py with a kill planted at one exact instant (a helper the kill tests start as a subprocess).

    python tests/kill_harness.py AT EPOCH -- <train.py arguments>

AT: `best_tmp` (SIGKILL while best.pt's temp file is open and written to), `after_best` (SIGKILL right
after best.pt is committed, before last.pt), `last_tmp`, `after_last` (the same for last.pt), or
`sigterm` (SIGTERM from inside the second training step of EPOCH, i.e. mid-epoch). Every evaluated epoch
reports a fitness above the one before (0.1 x (epoch + 1)), so each epoch's save writes best.pt.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402
from build_utils.atomic import atomic_write  # noqa: E402
from build_utils.cli import run_cli  # noqa: E402
from modules import checkpoint  # noqa: E402
from train_val_utils import trainer  # noqa: E402
from train_val_utils.loss import YoloLoss  # noqa: E402


def main() -> int:
    at, epoch, argv = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
    state = {"epoch": -1, "steps": 0}

    evaluate = trainer.Trainer._evaluate

    def improving(self, e, plots):  # noqa: ANN001, ANN202
        state["epoch"] = e
        metrics = evaluate(self, e, plots)
        return {**metrics, "map": 0.1 * (e + 1), "map50": 0.1 * (e + 1)}

    @contextmanager
    def planted(path):  # noqa: ANN001, ANN202
        name = Path(path).name
        with atomic_write(path) as f:
            if at == f"{name[:4]}_tmp" and state["epoch"] == epoch:
                f.write(b"partial")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            yield f
        if at == f"after_{name[:4]}" and state["epoch"] == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    loss_call = YoloLoss.__call__

    def step(self, *args, **kwargs):  # noqa: ANN001, ANN202
        state["steps"] += 1
        if at == "sigterm" and state["steps"] == 2 and state["epoch"] == epoch - 1:  # epoch `epoch`, step 2
            os.kill(os.getpid(), signal.SIGTERM)
        return loss_call(self, *args, **kwargs)

    trainer.Trainer._evaluate = improving
    checkpoint.atomic_write = planted
    YoloLoss.__call__ = step
    original_epoch = trainer.Trainer.train_epoch

    def counting(self, e):  # noqa: ANN001, ANN202
        state["steps"] = 0
        return original_epoch(self, e)

    trainer.Trainer.train_epoch = counting
    return run_cli(train.main, train.get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
