"""One NetAdapt iteration's proposals: per group, the fewest filters to remove so that the
predicted latency falls to the iteration's constraint (Yang et al. 2018, Algorithm 1, line 6:
"choose the number of filters" from the empirical latency model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from netadapt.groups import CHANNEL_STEP, channel_steps, proposal_groups, with_channels
from netadapt.resource import predict_ms
from space.archspec import ArchSpec


class LatencyModel(Protocol):
    def predict_many(self, specs: list[ArchSpec]) -> np.ndarray: ...


@dataclass(frozen=True)
class Proposal:
    """Trim ``group`` from ``channels_before`` to ``channels_after``; ``spec`` is the result."""

    group: str
    channels_before: int
    channels_after: int
    spec: ArchSpec
    predicted_ms: float

    @property
    def removed(self) -> int:
        return self.channels_before - self.channels_after


def make_proposals(spec: ArchSpec, predictor: LatencyModel, constraint_ms: float,
                   min_channels: int | None = None, step: int = CHANNEL_STEP) -> tuple[list[Proposal], list[str]]:
    """For every group, the smallest cut (in channel steps) whose predicted latency is at most
    ``constraint_ms``. Returns the proposals and the names of groups that cannot reach it."""
    groups = proposal_groups(spec)
    candidates: list[tuple[int, int, ArchSpec]] = []
    for gi, g in enumerate(groups):
        for n in channel_steps(g.channels(spec), min_channels, step):
            candidates.append((gi, n, with_channels(spec, g, n)))
    lat = predict_ms(predictor, [c[2] for c in candidates])
    chosen: dict[int, Proposal] = {}
    for (gi, n, cand), ms in zip(candidates, lat):
        if gi in chosen or not ms <= constraint_ms:
            continue
        g = groups[gi]
        # Candidates come largest first, so the first that fits removes the fewest filters.
        chosen[gi] = Proposal(g.name, g.channels(spec), n, cand, float(ms))
    proposals = [chosen[i] for i in sorted(chosen)]
    unreachable = [g.name for i, g in enumerate(groups) if i not in chosen]
    return proposals, unreachable


def smallest_network(spec: ArchSpec, min_channels: int | None = None, step: int = CHANNEL_STEP) -> ArchSpec:
    """Every group at its smallest channel step: a bound on what trimming can reach."""
    out = spec
    for g in proposal_groups(spec):
        steps = channel_steps(g.channels(out), min_channels, step)
        if steps:
            out = with_channels(out, g, steps[-1])
    return out
