"""Scoring detections: NMS (plain and merge), test-time augmentation, COCO and own metrics, reports, plots.

- `thresholds.py`: the named score and NMS IoU defaults (evaluation vs deployment).
- `nms.py`: `non_max_suppression` (plain or merge) on the model's `(bs, N, 5+nc)` output.
- `tta.py`: the flipped and scaled views of test-time augmentation, merged before NMS.
- `metrics.py`: per-class AP, P, R, F1, the confusion matrix, fitness.
- `coco_eval.py`: COCO JSON ground truth and results, pycocotools (or faster-coco-eval).
- `ground_truth.py`: `ground_truth_for`: the COCO JSON a split's data names, else its labels.
- `reporting.py`: the console table, speed line, metrics.json and record_mAP.txt.
- `plots.py`: PR/F1 curves, confusion matrix, labelled batch images.

`train_val_utils.engine.evaluate` strings these together. Imports: `build_utils`, `modules` and this
sub-package only; nothing else of `train_val_utils` (training, predict and the entry points build on it).
"""
