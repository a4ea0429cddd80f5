"""The ``lever`` command. Each stage owns a ``cli`` module with ``register(subparsers)``; this file
only lists them. Stage modules import heavy libraries inside their handlers so ``lever --help``
stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from lever._version import __version__

COMMAND_MODULES = [
    "lever.data.cli",  # lever data build|stats
    "lever.metrics.cli",  # lever eval
    "lever.teacher.cli",  # lever teacher train|eval
    "lever.soft_labels.cli",  # lever soft-labels build|stats|zero-shot-teacher
    "lever.train.cli",  # lever train|predict
    "lever.reproduce.cli",  # lever reproduce
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lever", description="LEVER for extreme classifiers")
    parser.add_argument("--version", action="version", version=f"lever {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Input problems are reported as one clear line, not a traceback.
        print(f"lever {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
