"""The figures a validation reports, and its FLOPs baseline.

Three predictors are scored on the same fresh networks (:mod:`latency.suite` draws and measures
them): (a) a FLOPs-linear fit ``ms = a * MACs + b`` on the calibration networks, (b) the plain
per-unit sum (lookup table + per-op model, no calibration; what ProxylessNAS/FBNet-style tables
give) and (c) the full calibrated predictor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from space.archspec import ArchSpec

VALIDATION_SEED = 9_000_000  # a seed stream of its own, apart from the calibration networks'


def metrics(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    """Share within +/-5% and +/-10%, MAPE (%), RMSE (ms), Spearman and Kendall rank correlation."""
    from scipy.stats import kendalltau, spearmanr

    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    rel = (pred - meas) / meas
    n = len(meas)
    rank_ok = n >= 3 and np.ptp(pred) > 0 and np.ptp(meas) > 0
    return {
        "n": int(n),
        "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "mape": float(np.mean(np.abs(rel)) * 100),
        "rmse": float(math.sqrt(np.mean((pred - meas) ** 2))),
        "spearman": float(spearmanr(pred, meas)[0]) if rank_ok else float("nan"),
        "kendall": float(kendalltau(pred, meas)[0]) if rank_ok else float("nan"),
    }


@dataclass
class FlopsLinear:
    """Baseline (a): latency linear in MACs, fitted on the calibration networks."""

    a: float
    b: float

    @classmethod
    def fit(cls, specs: list[ArchSpec], ms: np.ndarray) -> FlopsLinear:
        from space.cost import cost

        macs = np.array([cost(s).macs for s in specs], float)
        A = np.stack([macs, np.ones_like(macs)], axis=1) / ms[:, None]
        (a, b), *_ = np.linalg.lstsq(A, np.ones_like(ms), rcond=None)
        return cls(float(a), float(b))

    def predict(self, specs: list[ArchSpec]) -> np.ndarray:
        from space.cost import cost

        return np.array([self.a * cost(s).macs + self.b for s in specs], float)
