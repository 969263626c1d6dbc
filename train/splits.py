"""Stratified, reproducible train / val / test splits whose every prefix is class-balanced, so a
``limit`` takes a balanced subset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Selection:
    seed: int
    limit: int | None
    eval_limit: int | None
    val_fraction: float
    test_fraction: float


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``labels`` shuffled within each class, then dealt round-robin over the classes,
    so every prefix holds the classes in (nearly) equal numbers."""
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    rank = np.empty(len(labels), dtype=np.float64)
    for idx in per_class:
        # Position within the class, offset by a random fraction so classes interleave fairly.
        rank[idx] = np.arange(len(idx)) + rng.random()
    return np.argsort(rank, kind="stable")


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices per class by ``fractions`` (the remainder goes to the first part); each part
    comes back in :func:`balanced_order`."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        counts = [int(round(f * len(idx))) for f in fractions]
        start = 0
        for k, n in enumerate(counts, start=1):
            parts[k].append(idx[start:start + n])
            start += n
        parts[0].append(idx[start:])
    out = []
    for p in parts:
        idx = np.concatenate(p) if p else np.zeros(0, dtype=np.int64)
        out.append(idx[balanced_order(labels[idx], rng)])
    return out


def three_way(labels: np.ndarray, sel: Selection, has_test: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) index arrays, capped by the selection's limits.

    ``has_test`` marks items of the source's own test split; without it a test split is carved out.
    """
    if has_test is None:
        train, val, test = stratified_split(labels, (sel.val_fraction, sel.test_fraction), sel.seed)
    else:
        pool = np.flatnonzero(~has_test)
        tr, va = stratified_split(labels[pool], (sel.val_fraction,), sel.seed)
        train, val = pool[tr], pool[va]
        test_idx = np.flatnonzero(has_test)
        test = test_idx[balanced_order(labels[test_idx], np.random.default_rng(sel.seed + 1))]
    return train[:sel.limit], val[:sel.eval_limit], test[:sel.eval_limit]
