"""Channel surgery: remove a group's weakest channels and carry every surviving weight over.

Which channels are weakest (``importance``):

``l2``  NetAdapt (Yang et al. 2018, Section 3.2) keeps the filters with the largest L2 norm.
        For a group whose channels several filters produce (a residual chain), a channel's
        importance is the sum of the squared L2 norms of all its producing filters.
``bn``  Network slimming (Liu et al. 2017) ranks channels by the magnitude of the BatchNorm scale
        (gamma) that follows the producing filter: the sum of the squared scales over the
        producers, falling back to the L2 norm for a group with no BatchNorm (the head's FC layer).

Every tensor that carries the channels (conv weights on either side, BatchNorm weights and
running statistics, depthwise filters, SE layers) is sliced with the same kept indices, so the
smaller network computes what the original computes with those channels removed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from netadapt.config import IMPORTANCE
from netadapt.groups import Axis, Group, group_axes, se_layers_changed, se_squeeze_axes, with_channels
from space.archspec import ArchSpec


def channel_importance(state: Mapping[str, torch.Tensor], axes: list[Axis], importance: str = "l2") -> torch.Tensor:
    """Sum over the producing filters of each channel's squared L2 norm (``l2``), or of the squared
    BatchNorm scales after them (``bn``; ``l2`` where the group has no BatchNorm)."""
    if importance not in IMPORTANCE:
        raise ValueError(f"unknown importance {importance!r}; choose one of {', '.join(IMPORTANCE)}")
    pick = (lambda a: a.scale) if importance == "bn" and any(a.scale for a in axes) else (lambda a: a.producer)
    total = None
    for a in axes:
        if not pick(a):
            continue
        w = state[a.key].float().transpose(0, a.dim)
        sq = w.reshape(w.shape[0], -1).pow(2).sum(1)
        total = sq if total is None else total + sq
    if total is None:
        raise ValueError("a group needs at least one producing filter to rank its channels")
    return total


def keep_indices(state: Mapping[str, torch.Tensor], axes: list[Axis], n: int, importance: str = "l2") -> torch.Tensor:
    """Indices (ascending) of the ``n`` most important channels."""
    imp = channel_importance(state, axes, importance)
    # A filter with NaN/inf weights is garbage: rank it last so it goes first.
    imp = torch.where(torch.isfinite(imp), imp, torch.full_like(imp, -1.0))
    if not 1 <= n <= imp.numel():
        raise ValueError(f"cannot keep {n} of {imp.numel()} channels")
    # Stable tie-break by index so equal norms always pick the same channels.
    order = sorted(range(imp.numel()), key=lambda c: (-float(imp[c]), c))
    return torch.tensor(sorted(order[:n]), dtype=torch.long)


def slice_axes(state: dict[str, torch.Tensor], axes: list[Axis], keep: torch.Tensor) -> None:
    seen = set()
    for a in axes:
        if (a.key, a.dim) in seen:
            raise ValueError(f"axis {a.key}[{a.dim}] listed twice")
        seen.add((a.key, a.dim))
        state[a.key] = state[a.key].index_select(a.dim, keep).contiguous()


def shrink(spec: ArchSpec, state: Mapping[str, torch.Tensor], group: Group, n: int, importance: str = "l2"
           ) -> tuple[ArchSpec, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``group`` cut to ``n`` channels: the new spec, its state_dict from the surviving weights,
    and the kept channel indices (``{group.name: ..., "se<i>": ...}`` for SE squeeze channels
    that shrank along). SE squeeze channels are always ranked by L2 norm (they have no BatchNorm)."""
    axes = group_axes(spec, group)
    keep = keep_indices(state, axes, n, importance)
    new_state = {k: v.clone() for k, v in state.items()}
    slice_axes(new_state, axes, keep)
    new_spec = with_channels(spec, group, n)
    kept = {group.name: keep}
    for i in se_layers_changed(spec, new_spec):
        sq = se_squeeze_axes(new_spec, i)
        kept[f"se{i}"] = keep_indices(new_state, sq, new_spec.layers[i].se_ch)
        slice_axes(new_state, sq, kept[f"se{i}"])
    return new_spec, new_state, kept
