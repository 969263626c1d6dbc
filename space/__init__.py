"""ArchSpec, the search spaces, the model builder, reference networks and the cost model.

Importing ``space`` does not import torch; ``space.builder`` and ``space.blocks`` do.
"""

from common.errors import UserError
from space.archspec import ArchSpec, Head, Layer, Stem
from space.errors import SpecError
from space.resolve import load_spec

__all__ = ["ArchSpec", "Head", "Layer", "Stem", "SpecError", "UserError", "load_spec"]
