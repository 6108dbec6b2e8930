"""Every entry script's --help shows each option's default, once (ArgumentDefaultsHelpFormatter)."""

from __future__ import annotations

import argparse
import importlib

import pytest

from build_utils.cli import HelpFormatter

SCRIPTS = ["train", "predict", "validation", "export", "data.scripts.voc2yolo", "data.scripts.coco2yolo",
           "data.scripts.make_data", "data.scripts.make_cfg", "data.scripts.kmeans_anchors",
           "data.scripts.make_shapes", "data.scripts.demo"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_every_default_once(name: str) -> None:
    parser = importlib.import_module(name).get_args_parser()
    assert parser.formatter_class is HelpFormatter
    fmt = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.required:
            continue
        assert action.help, f"{name} {action.option_strings}: no help text"
        assert "(default" not in action.help.lower(), f"{name} {action.option_strings}: default by hand"
        shown = fmt._get_help_string(action) % {"default": action.default, "prog": "x"}
        assert shown.count("(default:") == 1, f"{name} {action.option_strings}: {shown}"
    text = parser.format_help()
    assert "(default:" in text
