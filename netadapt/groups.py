"""The tensors that carry each channel group of a network: what NetAdapt's channel surgery slices.

The groups themselves (which channels are tied by residuals, expansions, the head's layers) and the
spec with a group's channels changed are in :mod:`space.channels`. Here a group lists the *axes* it
cuts: each axis is a (state_dict key, dimension) of a tensor that carries those channels, flagged
when it is the filter that produces them (its L2 norm ranks the channels). The blocks describe their
own axes (``channel_axes`` in :mod:`space.blocks`); a group only names the blocks and roles
involved. The SE squeeze channels of a trimmed expansion shrink along with it (their own axis).
"""

from __future__ import annotations

from space.archspec import ArchSpec
from space.blocks import Axis, ClassifierHead, StemConv, layer_axes
from space.channels import (  # noqa: F401 (the groups, re-exported for NetAdapt's modules)
    CHANNEL_STEP,
    Group,
    chains,
    channel_steps,
    group_by_name,
    proposal_groups,
    se_after_trim,
    se_layers_changed,
    with_channels,
)


def _stem_out(spec: ArchSpec) -> list[Axis]:
    return [a.under("stem") for a in StemConv.channel_axes(spec.stem)["out"]]


def _layer(spec: ArchSpec, i: int, role: str) -> list[Axis]:
    return [a.under(f"blocks.{i}") for a in layer_axes(spec.layers[i]).get(role, [])]


def _head(spec: ArchSpec, role: str) -> list[Axis]:
    return [a.under("head") for a in ClassifierHead.channel_axes(spec.head)[role]]


def se_squeeze_axes(spec: ArchSpec, i: int) -> list[Axis]:
    """The squeeze channels of layer i's SE module."""
    return _layer(spec, i, "se")


def tensor_axes(spec: ArchSpec, t: int) -> list[Axis]:
    """Axes carrying feature map ``t``'s channels: its producer and its consumer (the next layer, or the head)."""
    axes = _stem_out(spec) if t == 0 else _layer(spec, t - 1, "out")
    return axes + (_layer(spec, t, "in") if t < len(spec.layers) else _head(spec, "in"))


def group_axes(spec: ArchSpec, group: Group) -> list[Axis]:
    if group.kind == "chain":
        return [a for t in group.tensors for a in tensor_axes(spec, t)]
    if group.kind == "exp":
        return _layer(spec, group.layers[0], "exp")
    return _head(spec, "conv" if group.kind == "head_conv" else "fc")
