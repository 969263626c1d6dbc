"""How sure an iteration's choice is: the score difference between its two best proposals and the
standard error of that difference.

Every proposal is scored on the same validation images, so the difference is a paired one: per
image, the difference of the two proposals' contributions to their scores (correct or not; with
the ``ratio`` rule, the change against the current network per ms saved). Its mean is the score
difference, its standard deviation over sqrt(images) the standard error. A difference below its
standard error is a choice the validation split cannot tell from noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scored:
    """One proposal's validation outcome: per-image correctness and the predicted ms it saves."""

    correct: np.ndarray
    saved_ms: float


def contributions(p: Scored, current: np.ndarray | None, rule: str) -> np.ndarray:
    """Per-image terms whose mean is the proposal's score under ``rule``."""
    c = p.correct.astype(np.float64)
    if rule == "accuracy":
        return c
    return (c - current.astype(np.float64)) / max(p.saved_ms, 1e-9)


def score(p: Scored, current: np.ndarray | None, rule: str) -> float:
    return float(contributions(p, current, rule).mean())


def gap(best: Scored, second: Scored, current: np.ndarray | None, rule: str) -> tuple[float, float]:
    """(score of ``best`` - score of ``second``, the paired standard error of that difference)."""
    d = contributions(best, current, rule) - contributions(second, current, rule)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se
