"""The multi-objective reward of platform-aware NAS.

MnasNet (Tan et al. 2019, eq. 2): ``ACC(m) * (LAT(m) / T) ** w`` with ``w = alpha`` when
``LAT <= T`` and ``w = beta`` otherwise; the paper's soft constraint is alpha = beta = -0.07,
the hard constraint alpha = 0, beta = -1. MobileNetV3 (Howard et al. 2019, Section 4.1) keeps the
form with a single ``w = -0.15`` because small models' accuracy changes faster with latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.errors import UserError

DEFAULT_W = -0.15
PRESETS = {"mobilenet_v3": (-0.15, -0.15), "soft": (-0.07, -0.07), "hard": (0.0, -1.0)}


def _check_target(target_ms: float) -> float:
    t = float(target_ms)
    if not math.isfinite(t) or t <= 0:
        raise UserError(f"latency target {target_ms} ms must be a positive finite number of milliseconds")
    return t


@dataclass(frozen=True)
class Reward:
    """``acc * (lat / target) ** (alpha if lat <= target else beta)``; alpha == beta gives MobileNetV3's form."""

    target_ms: float
    alpha: float = DEFAULT_W
    beta: float = DEFAULT_W

    def __post_init__(self) -> None:
        _check_target(self.target_ms)
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if not math.isfinite(v) or v > 0:
                raise UserError(f"reward exponent {name}={v} must be finite and <= 0 (a positive one rewards slowness)")

    @classmethod
    def from_options(cls, target_ms: float, w: float | None = None, alpha: float | None = None,
                     beta: float | None = None) -> Reward:
        """Build from CLI-style options: either ``w`` or ``alpha``/``beta`` (the missing one copies the other)."""
        if w is not None and (alpha is not None or beta is not None):
            raise UserError("give either --w or --alpha/--beta, not both")
        if alpha is None and beta is None:
            a = b = DEFAULT_W if w is None else w
        else:
            a = beta if alpha is None else alpha
            b = alpha if beta is None else beta
        return cls(float(target_ms), float(a), float(b))

    @property
    def exponents(self) -> tuple[float, float]:
        return self.alpha, self.beta

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        return reward(accuracy, latency_ms, self.target_ms, alpha=self.alpha, beta=self.beta)

    def describe(self) -> str:
        if self.alpha == self.beta:
            return f"ACC * (LAT/{self.target_ms:g}ms)^{self.alpha:g}"
        return f"ACC * (LAT/{self.target_ms:g}ms)^w, w={self.alpha:g} if LAT<=T else {self.beta:g}"


def reward(accuracy: float, latency_ms: float, target_ms: float, w: float = DEFAULT_W,
           alpha: float | None = None, beta: float | None = None) -> float:
    """MnasNet/MobileNetV3 reward. ``alpha``/``beta`` override ``w`` on their side of the target.

    A non-finite accuracy or latency (a failed trial) gives reward 0.
    """
    target = _check_target(target_ms)
    acc, lat = float(accuracy), float(latency_ms)
    if not (math.isfinite(acc) and math.isfinite(lat)) or lat <= 0:
        return 0.0
    a = w if alpha is None else alpha
    b = w if beta is None else beta
    exp = a if lat <= target else b
    return max(acc, 0.0) * (lat / target) ** exp
