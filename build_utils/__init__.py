"""The lowest layer: what turns users' files into inputs, and the small plumbing every layer uses.

Readers of hand-edited files (`parse_config.py` for `.cfg`, `data_cfg.py` for `.data` and names,
`data_yaml.py`, `hyp.py`, `text_io.py`), box `geometry.py`, the dataset (`datasets.py`, built from the
`dataset/` sub-package), and plumbing (`errors.py`, `cli.py`, `atomic.py`, `run_dir.py`, `torch_utils.py`
(devices, the CPU's native bfloat16), `omp_env.py` (passive OpenMP waiting, imported by the scripts before
torch), `drawing.py`, `cfg_edit.py`, `project_files.py`).

Imports: the standard library and third-party packages only; never `modules` or `train_val_utils`.
"""
