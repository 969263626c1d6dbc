"""The token lists a search has handed out, as a prefix tree that knows which prefixes have no free
completion left: the controller's draws and local moves skip those choices, so that a concentrated
policy proposes neighbours of what it already has instead of repeats."""

from __future__ import annotations

import math
from collections.abc import Sequence


class Taken:
    """Token lists already taken, as a prefix tree that knows which prefixes have no free completion left."""

    def __init__(self, n_choices: Sequence[int], rows: Sequence[Sequence[int]] = ()) -> None:
        n = [int(c) for c in n_choices]
        self.completions = [math.prod(n[d:]) for d in range(len(n) + 1)]  # leaves under a prefix of length d
        self.counts: dict[tuple[int, ...], int] = {}
        for row in rows:
            self.add(row)

    def add(self, tokens: Sequence[int]) -> None:
        row = tuple(int(t) for t in tokens)
        if self.counts.get(row):
            return
        for d in range(len(row) + 1):
            self.counts[row[:d]] = self.counts.get(row[:d], 0) + 1

    def full(self, prefix: Sequence[int]) -> bool:
        return self.counts.get(tuple(prefix), 0) >= self.completions[len(prefix)]
