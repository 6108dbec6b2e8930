"""Running a model on images, folders, videos, cameras and URLs (what predict.py strings together).

- `sources.py`: every kind of `--source` as a stream of frames.
- `stream_reader.py`: the newest-frame reader thread for live video and network streams.
- `predictor.py`: letterbox -> backend forward -> NMS -> boxes in the frame's pixels.
- `detections_io.py`: drawing, label txt files, predictions.json and video writing.

Imports: `build_utils`, `modules`, `train_val_utils.evaluation` (NMS, TTA) and this sub-package only.
"""
