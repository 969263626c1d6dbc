"""What the commands share at the command line: argparse types for numbers with bounds (one line
saying what is wrong, e.g. ``0 must be >= 1``), the check of output paths run before any work, and
``--json`` output."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from common.errors import UserError


def bounded(kind: type, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, rule: str | None = None) -> Callable[[str], float | int]:
    """An argparse ``type=`` that parses ``kind`` (int or float) and checks the given bounds;
    ``rule`` replaces the message's ``must be <op> <bound>`` (e.g. for a two-sided range)."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number")
        for bound, ok, sign in ((ge, v >= (ge or 0), ">="), (gt, v > (gt or 0), ">"), (le, v <= (le or 0), "<="),
                                (lt, v < (lt or 0), "<")):
            if bound is not None and not ok:
                raise argparse.ArgumentTypeError(f"{text} {rule or f'must be {sign} {bound:g}'}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = bounded(int, ge=1)
non_negative_int = bounded(int, ge=0)
positive_float = bounded(float, gt=0)
non_negative_float = bounded(float, ge=0)
fraction = bounded(float, gt=0, lt=1, rule="must lie strictly between 0 and 1")
non_positive_float = bounded(float, le=0)


def check_output_path(path: str | os.PathLike, option: str, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work and without creating anything:
    a folder where a file goes (or a file where a folder goes), or a file where a parent folder goes."""
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise UserError(f"{option} {p}: exists and is not a folder; pass a folder path")
    if not folder and p.is_dir():
        raise UserError(f"{option} {p}: is a folder; give a file path, e.g. one inside it")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {p}: {parent} is a file, not a folder; pass a path in a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"{option} {p}: cannot write in {parent} (permission denied); pass a writable path")
            break
    return p


def warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings reach a user of the command line as one line, like errors (``warnings.showwarning``)."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def print_json(obj: object) -> None:
    """A command's ``--json`` result: one indented JSON object on stdout."""
    print(json.dumps(obj, indent=2))
