"""The command line: `anomaly` and its subcommands (`commands`), the plugin commands `fleet`, `threshold` and
`evaluate`, and the classic `train.py` / `detect.py` entry points (`train_main`, `detect_main`)."""

from __future__ import annotations

from .commands import PLUGIN_COMMANDS, add_device_arguments, build_parser, detect_main, main, train_main

__all__ = ["PLUGIN_COMMANDS", "add_device_arguments", "build_parser", "detect_main", "main", "train_main"]
