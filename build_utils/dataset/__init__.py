"""The pieces `build_utils.datasets.LoadImagesAndLabels` is made of, one concept per file.

- `image_io.py`: the one image decoder (judged by content, EXIF orientation, RGB out).
- `img_list.py`: finding images and the label file of each (the images -> labels path rule).
- `labels.py`: verifying YOLO label files once, with a cache keyed by size, mtime and content.
- `augment.py`: letterbox, random affine, HSV and flips.
- `mosaic.py`: the four-image mosaic.

Predict, export and quantization read and letterbox images through `image_io` and `augment` too.
Imports: only the top modules of `build_utils` (errors, geometry, hyp, text_io, atomic), never
`build_utils.datasets`, `modules` or `train_val_utils`.
"""
