"""Where runs write: ``results/`` under the working folder, or ``$HWNAS_RESULTS`` when set."""

from __future__ import annotations

import os
from pathlib import Path


def results_dir() -> Path:
    """Root folder for everything runs write (latency tables, search runs, NetAdapt runs, seed.json)."""
    return Path(os.environ.get("HWNAS_RESULTS", "results"))
