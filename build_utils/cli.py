"""Shared plumbing for the entry scripts: logging set-up, option checks and one-line errors.

The checks here are the ones several scripts share (`--img-size`, thresholds in [0, 1], counts of at
least 1); each raises `UserError` naming the flag, its value and an accepted value.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from build_utils.atomic import disk_full_cause
from build_utils.errors import DiskFullError, UserError

LOG_FORMAT = "%(message)s"
LOG_HANDLER_NAME = "yolov3-suite-console"
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM, what SLURM, Kubernetes and systemd send before SIGKILL
# a file or folder the user named that this process may not read or write
NO_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so it unwinds exactly like Ctrl-C: atomic writes drop
    their temp file, train.py prints the resume command; the exit code is 143 instead of 130."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` for the duration (main thread only: Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    """Route library loggers to stderr with plain messages (tqdm bars share the terminal).

    Replaces only the handler this function installed before, so calling `main()` again in one process
    (tests, notebooks) changes the level without dropping handlers others attached (pytest's caplog).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == LOG_HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()  # the current sys.stderr
    handler.set_name(LOG_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


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


def _no_access_line(err: OSError) -> str:
    where = err.filename or "a file"
    return (f"cannot access {where} ({err.strerror}); pass a path this user may read and write (another "
            "--project or output folder), or fix its permissions")


def run_cli(main: Callable[[Any], Any], args: Any) -> int:
    """Run `main(args)`; a `UserError` becomes `error: <message>` on stderr and exit code 2.

    A full disk, or a file or folder this user may not read or write, met outside the checks that name
    them (a log line, a plot, a label file) counts as the user's: it is reported the same way. SIGTERM
    unwinds like Ctrl-C and exits 143 (Ctrl-C: 130). Anything else is a bug in this software and keeps
    its traceback.
    """
    try:
        with sigterm_as_interrupt():
            main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # re-raised with its traceback unless a full disk is the cause
        cause = disk_full_cause(err)
        if cause is not None:
            print(f"error: {DiskFullError(cause.filename or 'a file', cause)}", file=sys.stderr)
            return 2
        if isinstance(err, OSError) and err.errno in NO_ACCESS_ERRNOS:
            print(f"error: {_no_access_line(err)}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print("terminated (SIGTERM)" if terminated else "interrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    return 0
