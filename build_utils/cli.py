"""Shared plumbing for the entry scripts: logging set-up and one-line errors for user mistakes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from build_utils.errors import UserError

LOG_FORMAT = "%(message)s"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """`--help` of every entry script: the docstring as written, and each option's default."""


def setup_logging(verbose: bool = False) -> None:
    """Route library loggers to stderr with plain messages (tqdm bars share the terminal)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, force=True)


def run_cli(main: Callable[[Any], Any], args: Any) -> int:
    """Run `main(args)`; a `UserError` becomes `error: <message>` on stderr and exit code 2.

    Anything else is a bug in this software and keeps its traceback.
    """
    try:
        main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
