"""The score and NMS IoU thresholds, named by what they are for; every default in the suite uses these.

Scoring mAP keeps nearly every box (a low score threshold lets the precision-recall curve reach high
recall) and suppresses less; deployment (predict, drawing, exported detections, the speed task) keeps
only confident boxes. `tests/test_thresholds.py` fails when one of these numbers is written elsewhere.
"""

from __future__ import annotations

EVAL_CONF_THRES = 0.001  # validation.py, training-time evaluation, benchmark.py: mAP over the whole curve
EVAL_IOU_THRES = 0.6
DEPLOY_CONF_THRES = 0.25  # predict.py, validation.py --task speed, plots and the confusion matrix
DEPLOY_IOU_THRES = 0.45
