"""Hyperparameter search (`train.py --evolve N`) on Optuna.

- `evolve.py`: the search space (`cfg/evolve.yaml`), samplers, pruning, storage and the trial loop.
- `evolve_report.py`: evolve.csv, hyp_evolved.yaml and the history/importance plots.
- `trial_weights.py`: after each trial, only the best trial keeps its weights (`--evolve-keep-weights`).

Each trial is an ordinary run of `train_val_utils.trainer.Trainer`. Imports: anything below it
(`build_utils`, `modules`, every other part of `train_val_utils`); nothing imports `tune` but train.py.
"""
