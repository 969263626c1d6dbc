"""Which channels of a network are tied together, and the network with one such group's channels
changed: the spec-level side of NetAdapt's proposals (the weights' side is ``netadapt/surgery.py``).

MobileNetV3 (Howard et al. 2019, Section 4.2) adapts NetAdapt (Yang et al. 2018) to inverted
residual networks with two kinds of proposal: shrink one block's *expansion* layer, or shrink a
*bottleneck* that several blocks share through residual additions (every tensor tied by an
identity residual must keep the same channels, so they are trimmed together). Here the stem's
output is the first bottleneck, and the head's 1x1 conv and FC layer are groups of their own:

``stem``         the stem's output chain (with any residual layers directly on it)
``out<a>-<b>``   the output chain of body layers a..b (one layer, or several tied by residuals)
``exp<i>``       the expansion channels of mbconv layer i (1x1 expand, depthwise, SE, projection input)
``head.conv``    the head's 1x1 conv
``head.fc``      the head's FC layer after pooling

The SE squeeze channels of a trimmed expansion (or of a trimmed conv or dwconv layer) shrink along
with it, so that SE keeps its share of the block's cost.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from space.archspec import ArchSpec, Layer


@dataclass(frozen=True)
class Group:
    """A set of channels trimmed together (the tensors that carry them: ``netadapt.groups``)."""

    name: str
    kind: str                 # "chain" | "exp" | "head_conv" | "head_fc"
    layers: tuple[int, ...]   # body layers involved (chain: whose outputs; exp: the one layer)
    tensors: tuple[int, ...] = ()  # chain only: feature-map indices (0 = stem output, i+1 = layer i's output)

    def channels(self, spec: ArchSpec) -> int:
        if self.kind == "chain":
            t = self.tensors[0]
            return spec.stem.out_ch if t == 0 else spec.layers[t - 1].out_ch
        if self.kind == "exp":
            return spec.layers[self.layers[0]].exp_ch
        if self.kind == "head_conv":
            return spec.head.conv_ch
        return spec.head.fc_ch


def chains(spec: ArchSpec) -> list[tuple[int, ...]]:
    """Feature maps tied together by identity residuals, as tuples of tensor indices."""
    out: list[list[int]] = [[0]]
    for i, layer in enumerate(spec.layers):
        if layer.residual:
            out[-1].append(i + 1)
        else:
            out.append([i + 1])
    return [tuple(c) for c in out]


def proposal_groups(spec: ArchSpec) -> list[Group]:
    """Every prunable group of ``spec``, in network order."""
    groups: list[Group] = []
    for chain in chains(spec):
        layers = tuple(t - 1 for t in chain if t > 0)
        name = "stem" if chain[0] == 0 else (f"out{layers[0]}" if len(layers) == 1 else f"out{layers[0]}-{layers[-1]}")
        groups.append(Group(name, "chain", layers, chain))
        for i in layers:
            if spec.layers[i].op == "mbconv":
                groups.append(Group(f"exp{i}", "exp", (i,)))
    if spec.head.conv_ch:
        groups.append(Group("head.conv", "head_conv", ()))
    if spec.head.fc_ch:
        groups.append(Group("head.fc", "head_fc", ()))
    return groups


def group_by_name(spec: ArchSpec, name: str) -> Group:
    for g in proposal_groups(spec):
        if g.name == name:
            return g
    raise KeyError(name)


def se_after_trim(se_ch: int, old_ch: int, new_ch: int) -> int:
    """Squeeze channels of an SE whose channels go from ``old_ch`` to ``new_ch``: the same ratio,
    rounded to a multiple of 8 (4 below 16), never more than before."""
    if not se_ch:
        return 0
    want = se_ch * new_ch / old_ch
    step = 8 if want >= 16 else 4
    return max(1, min(se_ch, int(round(want / step)) * step or step))


def with_channels(spec: ArchSpec, group: Group, n: int) -> ArchSpec:
    """``spec`` with ``group`` set to ``n`` channels (and SE squeeze channels following expansions)."""
    layers = list(spec.layers)
    stem, head = spec.stem, spec.head
    if group.kind == "chain":
        for t in group.tensors:
            if t == 0:
                stem = replace(stem, out_ch=n)
            else:
                layers[t - 1] = _set_out(layers[t - 1], n)
            if t < len(layers):
                layers[t] = _set_in(layers[t], n)
    elif group.kind == "exp":
        i = group.layers[0]
        layer = layers[i]
        layers[i] = replace(layer, exp_ch=n, se_ch=se_after_trim(layer.se_ch, layer.exp_ch, n))
    elif group.kind == "head_conv":
        head = replace(head, conv_ch=n)
    else:
        head = replace(head, fc_ch=n)
    return replace(spec, stem=stem, layers=tuple(layers), head=head)


def _set_out(layer: Layer, n: int) -> Layer:
    if layer.op == "conv":
        # A conv layer's SE works on its output channels.
        return replace(layer, out_ch=n, exp_ch=n, se_ch=se_after_trim(layer.se_ch, layer.out_ch, n))
    return replace(layer, out_ch=n)


def _set_in(layer: Layer, n: int) -> Layer:
    if layer.op == "dwconv":
        return replace(layer, in_ch=n, exp_ch=n, se_ch=se_after_trim(layer.se_ch, layer.in_ch, n))
    return replace(layer, in_ch=n)


def se_layers_changed(old: ArchSpec, new: ArchSpec) -> list[int]:
    """Body layers whose SE squeeze channels differ between two specs."""
    return [i for i, (a, b) in enumerate(zip(old.layers, new.layers)) if a.se_ch != b.se_ch]


# onnxruntime's CPU convolutions compute output channels in blocks of 8: a 16 -> 12 trim saves
# nothing measurable while 16 -> 8 halves the layer (docs/benchmarks.md, NetAdapt: channel steps).
CHANNEL_STEP = 8


def channel_steps(channels: int, min_channels: int | None = None, step: int = CHANNEL_STEP) -> list[int]:
    """Smaller channel counts a group may take, largest first: multiples of ``step`` down to one step
    (or ``min_channels``)."""
    floor = max(min_channels or step, 1)
    top = (channels - 1) // step * step
    return [c for c in range(top, floor - 1, -step) if c >= 1]
