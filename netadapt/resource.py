"""Latency models NetAdapt can trim against.

The loop only needs ``predict_many(specs) -> ms``: the latency package's calibrated predictor for
a device, or :class:`MacsLatency`, a linear model of the multiply-accumulate count (NetAdapt
works with any resource that can be estimated per proposal, Yang et al. 2018, Section 3). The
MACs model is deterministic and needs no measurements, which suits examples and tests; it
ignores everything a table captures (memory traffic, per-op overhead), so real runs use a table.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from space.archspec import ArchSpec
from space.cost import cost

# Latencies are compared against constraints and ranked; predictions of the same network must not
# differ in the last bits depending on what else was predicted in the same batch.
DECIMALS = 9


def predict_ms(model, specs: list[ArchSpec]) -> np.ndarray:
    """``model.predict_many`` rounded to 1e-9 ms, so equal networks always compare equal."""
    if not specs:
        return np.zeros(0)
    return np.round(np.asarray(model.predict_many(specs), dtype=np.float64), DECIMALS)


class MacsLatency:
    """``overhead_ms + ms_per_mmac * MACs / 1e6``."""

    def __init__(self, ms_per_mmac: float = 0.5, overhead_ms: float = 0.05) -> None:
        self.ms_per_mmac = ms_per_mmac
        self.overhead_ms = overhead_ms

    def predict_many(self, specs: Iterable[ArchSpec]) -> np.ndarray:
        return np.array([self.overhead_ms + self.ms_per_mmac * cost(s).macs / 1e6 for s in specs], dtype=np.float64)

    def predict(self, spec: ArchSpec) -> float:
        return float(self.predict_many([spec])[0])
