"""Exceptions for mistakes in the user's input.

Every user-facing mistake (a bad cfg line, a corrupt dataset, weights that do not fit the cfg,
a malformed hyp.yaml) raises a subclass of `UserError`. Its message is complete on its own: it
names the file (and line where there is one), says what is wrong and what to do. Entry scripts
catch `UserError` through `build_utils.cli.run_cli` and print it as one line, exit code 2, so a
user never reads a traceback for their own mistake.
"""

import errno


class UserError(Exception):
    """A mistake in the user's files or options; the message says which file and how to fix it."""


class ConfigError(UserError):
    """A malformed Darknet `.cfg` or `.data` file; the message starts with `path:line:`."""


class DatasetError(UserError):
    """Images or labels that cannot be used (missing, corrupt, wrong class ids)."""


class WeightsError(UserError):
    """Weights or checkpoints that cannot be loaded into the requested model."""


class HypError(UserError):
    """A `hyp.yaml` with unknown, missing, mistyped or out-of-range keys."""


class DiskFullError(UserError):
    """A write failed for lack of space (ENOSPC, EDQUOT) or over the file-size limit (EFBIG, `ulimit -f`).

    `path` is the file being written; the previous version of it is intact (writes are atomic).
    """

    def __init__(self, path: object, cause: OSError, detail: str = "") -> None:
        self.path, self.cause = path, cause
        why = cause.strerror + (", the ulimit -f file-size limit" if cause.errno == errno.EFBIG else "")
        super().__init__(f"no space left writing {path} ({why}){detail or '; free space and run again'}")
