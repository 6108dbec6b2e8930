"""Training, evaluation, prediction and tuning, built on `build_utils` and `modules`.

At the top, the entry points: `engine.py` (`train_one_epoch` and `evaluate`), `trainer.py` (a run
strung together from a frozen `RunConfig`) and `loss.py` (`YoloLoss`). Below them one sub-package per
job, in import order (a sub-package imports only those before it):

1. `evaluation/`: NMS, TTA, metrics, COCO evaluation, reports and plots.
2. `training/`: run config, resume policy, set-up, optimizer, EMA, distributed, run logging.
   `predict/`: sources, stream reader, predictor, detection writers.
3. the entry points above.
4. `tune/` (hyperparameter search) and `benchmarks/` (size study, formats table), which call them.

Imports: `build_utils`, `modules` and the parts before it in the order above.

`tests/test_layers.py` enforces this order on every import, those inside functions included.
"""
