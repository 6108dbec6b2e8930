"""Scoring runs made of many `train_val_utils.engine.evaluate` calls.

- `study.py`: `validation.py --task study|speed`: mAP and ms/img over image sizes, the timing split.
- `format_benchmark.py`: `benchmark.py`: the same model as .pt, TorchScript, ONNX and int8 ONNX, side by side.

Imports: anything below it (`build_utils`, `modules`, `train_val_utils` and its other sub-packages);
only the scripts import this.
"""
