"""Turn what a user typed (a reference name, optionally width-scaled, or a path to an ArchSpec JSON)
into an ArchSpec; and the ``--width`` option every command that takes a reference name offers."""

from __future__ import annotations

import argparse
from pathlib import Path

from space.archspec import ArchSpec
from space.errors import SpecError
from space.references import REFERENCES, WIDTH_RANGE, reference


def load_spec(name_or_path: str, width: float | None = None) -> ArchSpec:
    """A reference network by name (at width multiplier ``width``, default 1.0), or an ArchSpec JSON
    file by path (``width`` does not apply to a file: its channels are already what they are)."""
    if name_or_path in REFERENCES:
        return reference(name_or_path, 1.0 if width is None else width)
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        if width is not None:
            raise SpecError(f"--width {width:g} applies to reference networks ({', '.join(REFERENCES)}), not to "
                            f"{name_or_path}; drop --width or pass a reference name")
        return ArchSpec.load(p)
    raise SpecError(
        f"{name_or_path!r} is neither a reference network ({', '.join(REFERENCES)}) nor an ArchSpec JSON file"
    )


def _width(text: str) -> float:
    lo, hi = WIDTH_RANGE
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not lo <= v <= hi:
        raise argparse.ArgumentTypeError(f"{text} must lie in {lo:g}..{hi:g} (the papers use 0.25-1.4)")
    return v


_width.__name__ = "float"  # argparse names the type in its messages


def add_width_arg(parser: argparse.ArgumentParser, option: str = "--width") -> None:
    """``--width A``: a reference network scaled by width multiplier A (channels rounded to multiples
    of 8 as in its paper; see :mod:`space.references`)."""
    parser.add_argument(option, type=_width, default=None, metavar="A",
                        help="width multiplier of a reference network (e.g. 0.75; channels rounded to multiples of 8 "
                             "as in its paper); not for ArchSpec files")
