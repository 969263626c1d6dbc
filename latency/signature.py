"""Signatures of the units a network is timed by (stem, each body layer at its input size, head)
and the numeric features the per-op model learns from. No torch here: prediction needs none.

A signature is a plain tuple ``(op, kernel, stride, in_ch, out_ch, exp_ch, se_ch, act, residual,
res, fc_ch, pw_act, gate)``; ``res`` is the unit's input height/width, ``pw_act`` the MobileNetV1
activation after a dwconv's projection, ``gate`` the SE gate (``hsigmoid`` for units without SE). The stem is ``op="stem"`` with
``in_ch`` = image channels and ``exp_ch == out_ch``; the head is ``op="head"`` with ``in_ch`` =
body channels, ``exp_ch`` = its 1x1 conv channels (0 = none), ``fc_ch`` its FC channels and
``out_ch`` the number of classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from space.archspec import ArchSpec, Head, Layer, Stem
from space.cost import classifier_cost, conv_stem_cost, layer_cost

KEY_COLUMNS = ("op", "kernel", "stride", "in_ch", "out_ch", "exp_ch", "se_ch", "act", "residual", "res", "fc_ch",
               "pw_act", "gate")
UNIT_OPS = ("stem", "conv", "dwconv", "mbconv", "head")


class Sig(NamedTuple):
    op: str
    kernel: int
    stride: int
    in_ch: int
    out_ch: int
    exp_ch: int
    se_ch: int
    act: str
    residual: bool
    res: int
    fc_ch: int = 0
    pw_act: bool = False
    gate: str = "hsigmoid"


def layer_sig(layer: Layer, res: int, gate: str = "hsigmoid") -> Sig:
    """The unit of a body layer at input size ``res`` in a network whose SE gate is ``gate``."""
    return Sig(layer.op, layer.kernel, layer.stride, layer.in_ch, layer.out_ch, layer.exp_ch, layer.se_ch,
               layer.act, layer.residual, res, 0, layer.pw_act, gate if layer.se_ch else "hsigmoid")


def stem_sig(spec: ArchSpec) -> Sig:
    st = spec.stem
    return Sig("stem", st.kernel, st.stride, spec.in_channels, st.out_ch, st.out_ch, 0, st.act, False,
               spec.resolution, 0)


def head_sig(spec: ArchSpec) -> Sig:
    hd = spec.head
    return Sig("head", 1, 1, spec.body_ch, spec.num_classes, hd.conv_ch, 0, hd.act, False,
               spec.final_resolution, hd.fc_ch)


_new_sig = tuple.__new__  # skips NamedTuple's Python-level __new__: spec_sigs runs for every network scored


def spec_sigs(spec: ArchSpec) -> list[Sig]:
    """Stem, body layers, head: the units whose latencies the predictor sums."""
    st = spec.stem
    res = -(-spec.resolution // st.stride)
    sigs = [_new_sig(Sig, ("stem", st.kernel, st.stride, spec.in_channels, st.out_ch, st.out_ch, 0, st.act, False,
                           spec.resolution, 0, False, "hsigmoid"))]
    append = sigs.append
    gate = spec.se_gate
    for layer in spec.layers:
        append(_new_sig(Sig, (layer.op, layer.kernel, layer.stride, layer.in_ch, layer.out_ch, layer.exp_ch,
                              layer.se_ch, layer.act, layer.residual, res, 0, layer.pw_act,
                              gate if layer.se_ch else "hsigmoid")))
        if layer.stride != 1:
            res = -(-res // layer.stride)
    hd = spec.head
    append(_new_sig(Sig, ("head", 1, 1, spec.body_ch, spec.num_classes, hd.conv_ch, 0, hd.act, False, res, hd.fc_ch,
                          False, "hsigmoid")))
    return sigs


def sig_layer(sig: Sig) -> Layer:
    return Layer(sig.op, sig.kernel, sig.stride, sig.in_ch, sig.out_ch, sig.exp_ch, sig.se_ch, sig.act, bool(sig.residual),
                 bool(sig.pw_act))


def sig_stem(sig: Sig) -> Stem:
    return Stem(sig.out_ch, sig.kernel, sig.stride, sig.act)


def sig_head(sig: Sig) -> Head:
    return Head(sig.exp_ch, sig.act, "avg", sig.fc_ch)


def sig_params(sig: Sig) -> int:
    """Parameters of the unit, counted as :mod:`space.cost` counts them: the weights a network
    streams in once per inference, while a unit timed alone keeps them in cache."""
    if sig.op == "stem":
        return conv_stem_cost(sig.kernel, sig.stride, sig.in_ch, sig.out_ch, sig.res).params
    if sig.op == "head":
        return classifier_cost(sig.in_ch, sig_head(sig), sig.res, sig.out_ch).params
    return layer_cost(sig_layer(sig), sig.res).params


def input_shape(sig: Sig) -> tuple[int, int, int, int]:
    return (1, sig.in_ch, sig.res, sig.res)


# ---- features ----------------------------------------------------------------------------------

FEATURES = (
    "const",      # per-unit fixed cost (session/kernel launch, small tensors)
    "mac_pw",     # MACs of 1x1 convs (expansion, projection, head conv)
    "mac_dw",     # MACs of the depthwise conv, k <= 3
    "mac_dw5",    # ... k = 5 (onnxruntime's depthwise kernels differ per kernel size)
    "mac_dw7",    # ... k >= 7
    "mac_full",   # MACs of a full kxk conv (conv op, stem), k <= 3
    "mac_full5",  # ... k = 5 (im2col cost grows with k^2 differently than the GEMM)
    "mac_full7",  # ... k >= 7
    "mac_fc",     # MACs of linear layers and SE's 1x1 convs on a 1x1 map
    "mem_in",     # elements of the unit's input
    "mem_mid",    # elements of intermediate activations (expanded, after depthwise)
    "mem_out",    # elements of the unit's output
    "hswish",     # elements passed through h-swish (not fused into the conv by onnxruntime)
    "se_elems",   # elements SE pools and rescales
    "res_elems",  # elements added by the residual
    "n_nodes",    # graph nodes after fusion (rough)
    "im2col",     # elements of a full conv's unfolded input (k*k*in_ch per output pixel)
    "pad8_macs",  # conv MACs with channels rounded up to blocks of 8 (onnxruntime's NCHWc on AVX2)
    "pad16_macs",  # ... blocks of 16 (AVX-512): narrow or odd widths compute the padding too
)


def _out(res: int, stride: int) -> int:
    return -(-res // stride)


def _block(c: int, b: int) -> int:
    return -(-c // b) * b


def _padded_macs(sig: Sig, px: int, opx: int, b: int) -> float:
    """Conv MACs as a blocked kernel computes them: channel counts rounded up to blocks of ``b``
    (the stem's image channels are not blocked)."""
    k2, cin, cout, exp = sig.kernel ** 2, _block(sig.in_ch, b), _block(sig.out_ch, b), _block(sig.exp_ch, b)
    if sig.op == "mbconv":
        return cin * exp * px + exp * cout * opx + k2 * exp * opx
    if sig.op == "dwconv":
        return k2 * cin * opx + cin * cout * opx
    if sig.op == "conv":
        return k2 * cin * cout * opx
    if sig.op == "stem":
        return k2 * sig.in_ch * cout * opx
    return 0.0


def sig_features(sig: Sig) -> list[float]:
    """Counts that latency is roughly linear in, for one unit (see :data:`FEATURES`)."""
    op, k2, r, ro = sig.op, sig.kernel ** 2, sig.res, _out(sig.res, sig.stride)
    px, opx = r * r, ro * ro
    cin, cout, exp = sig.in_ch, sig.out_ch, sig.exp_ch
    hs = sig.act == "hswish"
    pw = dw = full = fc = mid = hsw = se = add = 0.0
    nodes = 1.0
    if op == "mbconv":
        pw = cin * exp * px + exp * cout * opx
        dw = k2 * exp * opx
        mid = exp * px + exp * opx
        hsw = (exp * px + exp * opx) if hs else 0.0
        nodes = 3.0 + (2.0 if hs else 0.0)
    elif op == "dwconv":
        dw = k2 * cin * opx
        pw = cin * cout * opx
        mid = cin * opx
        hsw = (cin + (cout if sig.pw_act else 0)) * opx if hs else 0.0
        nodes = 2.0 + (1.0 if hs else 0.0) + (1.0 if sig.pw_act and hs else 0.0)
    elif op in ("conv", "stem"):
        full = k2 * cin * cout * opx
        hsw = cout * opx if hs else 0.0
        nodes = 1.0 + (1.0 if hs else 0.0)
    elif op == "head":
        ch = cin
        if exp:
            pw = cin * exp * px
            mid = exp * px
            hsw = exp * px if hs else 0.0
            ch = exp
            nodes += 1.0 + (1.0 if hs else 0.0)
        fc = ch * cout
        if sig.fc_ch:
            fc = ch * sig.fc_ch + sig.fc_ch * cout
            nodes += 1.0 + (1.0 if hs else 0.0)
        nodes += 1.0
        return [1.0, pw, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, fc, cin * px, mid, float(cout), hsw, 0.0, 0.0, nodes,
                0.0, 0.0, 0.0]
    if sig.se_ch:
        se_ch_in = exp if op != "conv" else cout
        fc += 2.0 * se_ch_in * sig.se_ch
        se = se_ch_in * opx
        nodes += 6.0
    if sig.residual:
        add = cout * opx
        nodes += 1.0
    kb = 0 if sig.kernel <= 3 else (1 if sig.kernel <= 5 else 2)
    dws, fulls = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    dws[kb], fulls[kb] = dw, full
    im2col = k2 * cin * opx if op in ("conv", "stem") else 0.0
    return [1.0, pw, *dws, *fulls, fc, cin * px, mid, cout * opx, hsw, se, add, nodes, im2col,
            _padded_macs(sig, px, opx, 8), _padded_macs(sig, px, opx, 16)]


def feature_matrix(sigs: Iterable[Sig]) -> np.ndarray:
    rows = [sig_features(s) for s in sigs]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))


_MAC_COLUMNS = [i for i, f in enumerate(FEATURES) if f.startswith("mac_")]


def macs_of(sig: Sig) -> float:
    f = sig_features(sig)
    return sum(f[i] for i in _MAC_COLUMNS)


def unit_count(spec: ArchSpec) -> int:
    return len(spec.layers) + 2


def log_macs(spec: ArchSpec) -> float:
    return math.log(sum(macs_of(s) for s in spec_sigs(spec)))
