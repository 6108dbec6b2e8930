"""The network and its files: the DarkNet built from a parsed cfg, its layers, Darknet `.weights`,
`.pt` checkpoints, loading, export and the backends that run every exported format; what a model
file is by its bytes (`model_files.py`), whether a cfg fits in memory at a size (`memory_estimate.py`) and
which predictor rows carry over to other classes by name (`class_transfer.py`); channel pruning
by batch-norm scale (`prune.py`: which channels may go, `prune_apply.py`: the slimmer cfg and weights).

Imports: `build_utils` and this package only; never `train_val_utils` or the scripts.
"""
