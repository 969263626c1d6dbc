"""Turn what a user typed (a reference name or a path to an ArchSpec JSON) into an ArchSpec."""

from __future__ import annotations

from pathlib import Path

from space.archspec import ArchSpec
from space.errors import SpecError
from space.references import REFERENCES, reference


def load_spec(name_or_path: str) -> ArchSpec:
    """A reference network by name, or an ArchSpec JSON file by path."""
    if name_or_path in REFERENCES:
        return reference(name_or_path)
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        return ArchSpec.load(p)
    raise SpecError(
        f"{name_or_path!r} is neither a reference network ({', '.join(REFERENCES)}) nor an ArchSpec JSON file"
    )
