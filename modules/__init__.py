"""The network and its files: the DarkNet built from a parsed cfg, its layers, Darknet `.weights`,
`.pt` checkpoints, loading, export and the backends that run every exported format; channel pruning
by batch-norm scale (`prune.py`: which channels may go, `prune_apply.py`: the slimmer cfg and weights).

Imports: `build_utils` and this package only; never `train_val_utils` or the scripts.
"""
