"""The scripts of bench/ as modules, for the tests of their analyses (bench/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from .cli_helpers import ROOT


def bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` loaded once and registered as ``name`` (its dataclasses look their module up)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]
