"""Training plumbing that `train_val_utils.trainer.Trainer` strings into a run.

- `run_config.py`: the frozen `RunConfig` of every train.py option and its resume merge.
- `resume.py`: the resume policy: what may change on resume, finding the last run, the resume command.
- `train_setup.py`: the starting weights of a run (predictor rows transferred by class name) and `--freeze`.
- `optim.py`: parameter groups, optimizer, LR schedule, warm-up and gradient accumulation.
- `ema.py`: the exponential moving average of the weights.
- `epoch_meter.py`: an epoch's running losses on the device, and the non-finite-loss error naming its images.
- `sparsity.py`: L1 on the batch-norm scales (`--sr`) and their histogram, before channel pruning.
- `image_weights.py`: class-frequency image sampling (`--image-weights`).
- `distributed_utils.py`: torchrun/SLURM DDP set-up, `--dist-timeout`, rank-0-only helpers.
- `mid_epoch.py`: mid-epoch last.pt (`--save-period-steps/-min`) and resuming inside an epoch.
- `elastic.py`: a `torchrun --max-restarts` restart finds and resumes its run by itself.
- `run_logger.py`: results.csv, TensorBoard and the console lines of a run.
- `plot_queue.py`, `train_plots.py`: plots drawn on one background thread, the training curves.

Imports: `build_utils`, `modules`, `train_val_utils.evaluation` and this sub-package; never the entry
points (`engine`, `trainer`, `loss`) or `predict`, `tune`, `benchmarks`.
"""
