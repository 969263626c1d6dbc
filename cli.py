#!/usr/bin/env python3
"""hwnas command line: ``python cli.py COMMAND ...``; ``python cli.py --help`` lists the commands.

Each package registers its commands in its ``commands.py`` (``register(subparsers)``); handlers
import their heavy dependencies (torch, ray) themselves so that light commands start fast.
Bad input raises :class:`common.errors.UserError`, printed here as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

# Packages whose commands.py adds sub-commands, in the order --help lists them.
COMMAND_MODULES = ("space", "latency", "search", "netadapt", "export")


class Parser(argparse.ArgumentParser):
    """argparse with the project's contract for bad input: one line on stderr, exit code 2.

    Sub-command parsers are made with the same class, so every option error reads the same.
    """

    def error(self, message: str) -> NoReturn:
        # argparse's default prints the whole usage first; the pointer to --help replaces it.
        self.exit(2, f"error: {message}; see `python {self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cli.py",
        description="Hardware-aware neural architecture search: measure latency on your device, "
        "search a MnasNet-style space with an RNN controller, trim the result with NetAdapt.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{name}.commands")
        except ModuleNotFoundError as e:
            if e.name in (name, f"{name}.commands"):
                continue  # that part is not installed in this checkout
            raise
        module.register(sub)
    return parser


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings reach a user of the command line as one line, like errors."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    # Keep the repository importable however the script is started.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import warnings

    from common.errors import UserError

    warnings.showwarning = _warning_line

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
