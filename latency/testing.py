"""A real but small latency predictor for tests: measured on this machine in seconds."""

from __future__ import annotations

import os
from pathlib import Path

from latency.predictor import Predictor

TINY_DEVICE = "tiny-cpu"
TINY_RESOLUTION = 32


def build_tiny_predictor(folder: str | Path, resolution: int = TINY_RESOLUTION, space: str = "mnasnet") -> Predictor:
    """Build a small table (4 separable, 2 conv and 2 trimmed layers per stage, stems, heads; 6 calibration
    networks of the space at ``resolution``, no self-check) of ``space`` under ``folder`` and
    return its predictor. Good for specs of that space decoded at ``resolution`` and for pruned
    variants of them."""
    from latency.build import Plan, build

    old = os.environ.get("HWNAS_RESULTS")
    os.environ["HWNAS_RESULTS"] = str(folder)
    try:
        return build(TINY_DEVICE, space, resolution, "quick", progress=False,
                     sample={"per_stage": 4, "conv_per_stage": 2, "trimmed_per_stage": 2},
                     plan=Plan(0, 0, 6, 0, families=(space,), family_resolution=resolution))
    finally:
        if old is None:
            os.environ.pop("HWNAS_RESULTS", None)
        else:
            os.environ["HWNAS_RESULTS"] = old
