"""Shared plumbing for the entry scripts: logging set-up, option checks and one-line errors.

The checks here are the ones several scripts share (`--img-size`, thresholds in [0, 1], counts of at
least 1); each raises `UserError` naming the flag, its value and an accepted value.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from build_utils.atomic import disk_full_cause
from build_utils.errors import DiskFullError, UserError

LOG_FORMAT = "%(message)s"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """`--help` of every entry script: the docstring as written, and each option's default."""


class ArgumentParser(argparse.ArgumentParser):
    """Every script's parser: `--help` through `HelpFormatter`, and a mistake on the command line is one
    line, `error: ...` (exit 2), not the usage block; an unknown flag names the closest valid one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def closest_flag(self, given: str) -> str | None:
        """The valid option string nearest to `given` (`--img-sze` -> `--img-size`), or None."""
        flags = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
        found = difflib.get_close_matches(given.split("=", 1)[0], flags, n=1, cutoff=0.6)
        return found[0] if found else None

    def error(self, message: str) -> NoReturn:
        hint = ""
        if message.startswith("unrecognized arguments:"):
            unknown = [t for t in message.split(":", 1)[1].split() if t.startswith("-")]
            close = [(t, self.closest_flag(t)) for t in unknown]
            hint = "".join(f"; {t}: did you mean {c}?" for t, c in close if c)
        self.exit(2, f"error: {message}{hint} (python {self.prog} --help lists every option)\n")


def setup_logging(verbose: bool = False) -> None:
    """Route library loggers to stderr with plain messages (tqdm bars share the terminal)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, force=True)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_img_size(value: int, multiple: int | None = 32, name: str = "img_size") -> None:
    """A positive image size; with `multiple`, a multiple of it (the model's largest stride)."""
    step = multiple or 1
    if value <= 0 or value % step:
        near = max(step, round(value / step) * step) if multiple else 416
        rule = f"a positive multiple of {multiple} (the largest stride)" if multiple else "a positive size"
        raise UserError(f"{_flag(name)} {value}: must be {rule}; use e.g. {_flag(name)} {near}")


def check_fraction(value: float, name: str) -> None:
    """A threshold such as --conf-thres or --iou-thres: a number in [0, 1]."""
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise UserError(f"{_flag(name)} {value}: must lie in [0, 1] (e.g. {_flag(name)} 0.25)")


def check_positive(value: int, name: str, minimum: int = 1) -> None:
    """A count such as --batch-size or --max-det: at least `minimum`."""
    if value < minimum:
        raise UserError(f"{_flag(name)} {value}: must be at least {minimum}")


def run_cli(main: Callable[[Any], Any], args: Any) -> int:
    """Run `main(args)`; a `UserError` becomes `error: <message>` on stderr and exit code 2.

    A full disk met outside the atomic writers (a log line, a plot) counts as the user's: it is
    reported the same way. Anything else is a bug in this software and keeps its traceback.
    """
    try:
        main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # re-raised with its traceback unless a full disk is the cause
        cause = disk_full_cause(err)
        if cause is None:
            raise
        print(f"error: {DiskFullError(cause.filename or 'a file', cause)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
