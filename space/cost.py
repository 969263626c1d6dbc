"""Parameters and multiply-accumulates (MACs) from the ArchSpec alone, no torch needed.

Counting rules: every conv and linear weight, conv/linear biases (SE and FC layers have them,
body convs do not), BatchNorm's weight and bias (running statistics are buffers, not
parameters). MACs count convolutions and linear layers (the SE's two 1x1 convs act on a 1x1
map); pooling, activations, BN and the residual adds are left out, as in the MobileNet papers.
"""

from __future__ import annotations

from dataclasses import dataclass

from space.archspec import ArchSpec, Head, Layer


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)


def _se(ch: int, se_ch: int) -> Cost:
    if not se_ch:
        return Cost(0, 0)
    return Cost(2 * ch * se_ch + se_ch + ch, 2 * ch * se_ch)


def layer_cost(layer: Layer, res: int) -> Cost:
    """Cost of one body layer whose input is ``res`` x ``res``."""
    k2, cin, cout, exp = layer.kernel**2, layer.in_ch, layer.out_ch, layer.exp_ch
    out_px = (-(-res // layer.stride)) ** 2
    if layer.op == "conv":
        c = Cost(k2 * cin * cout + 2 * cout, k2 * cin * cout * out_px)
    elif layer.op == "dwconv":
        c = Cost(k2 * cin + 2 * cin + cin * cout + 2 * cout, (k2 * cin + cin * cout) * out_px)
    elif layer.op == "mbconv":
        c = Cost(
            cin * exp + 2 * exp + k2 * exp + 2 * exp + exp * cout + 2 * cout,
            cin * exp * res * res + (k2 * exp + exp * cout) * out_px,
        )
    else:
        raise ValueError(f"unknown op {layer.op!r}")
    return c + _se(exp, layer.se_ch)


def stem_cost(spec: ArchSpec) -> Cost:
    st = spec.stem
    return conv_stem_cost(st.kernel, st.stride, spec.in_channels, st.out_ch, spec.resolution)


def conv_stem_cost(kernel: int, stride: int, in_ch: int, out_ch: int, res: int) -> Cost:
    """The stem conv (with BN) on a ``res`` x ``res`` image of ``in_ch`` channels."""
    out_px = (-(-res // stride)) ** 2
    w = kernel**2 * in_ch * out_ch
    return Cost(w + 2 * out_ch, w * out_px)


def head_cost(spec: ArchSpec) -> Cost:
    return classifier_cost(spec.body_ch, spec.head, spec.final_resolution, spec.num_classes)


def classifier_cost(ch: int, hd: Head, res: int, num_classes: int) -> Cost:
    """The head on a ``res`` x ``res`` map of ``ch`` channels: optional 1x1 conv, pool, optional
    FC, classifier."""
    c = Cost(0, 0)
    if hd.conv_ch:
        c += Cost(ch * hd.conv_ch + 2 * hd.conv_ch, ch * hd.conv_ch * res * res)
        ch = hd.conv_ch
    if hd.fc_ch:
        c += Cost(ch * hd.fc_ch + hd.fc_ch, ch * hd.fc_ch)
        ch = hd.fc_ch
    return c + Cost(ch * num_classes + num_classes, ch * num_classes)


def layer_costs(spec: ArchSpec) -> list[Cost]:
    """Per body layer, in order."""
    return [layer_cost(layer, res) for layer, res in zip(spec.layers, spec.layer_resolutions())]


def cost(spec: ArchSpec) -> Cost:
    """Total parameters and MACs of the whole network."""
    total = stem_cost(spec) + head_cost(spec)
    for c in layer_costs(spec):
        total += c
    return total
