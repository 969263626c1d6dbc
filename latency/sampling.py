"""Which units to measure.

``full`` mode measures every unit a search space can produce at one resolution: each stage's
first layer for every (input channels, op, kernel, SE, skip, output channels, activation) and its
repeated stride-1 layer, plus the stem and the head for every body width and a few class counts
(about 4,500 units for the ``mnasnet`` space at 224).

``quick`` mode measures a documented sample of those: every regular-convolution (``conv``) unit,
a seeded uniform sample of the depthwise-separable and inverted-residual units (stratified by
stage so that every resolution is covered), all stems and heads; the per-op model fills in the
rest and the calibration on whole networks corrects what a per-unit sum misses. Regular
convolutions are all measured because their speed follows the GEMM shapes onnxruntime picks
(a per-op model trained on a quarter of them erred by ~7% per unit, against ~3% for the
separable blocks), and they are among a network's largest units.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np

from latency.signature import Sig, head_sig, layer_sig, stem_sig
from space.archspec import ArchSpec
from space.searchspace import SearchSpace, stage_layers

HEAD_CLASSES = (10, 100, 1000)
# Stem widths beyond the space's own: NetAdapt trims the stem (to 4-8 channels at its deepest), and
# the reference networks' stems use other activations. A stem costs about as much as a small layer.
STEM_WIDTHS = (4, 8, 12, 16, 24, 32, 40, 48, 64)
STEM_ACTS = ("relu", "relu6", "hswish")
QUICK_PER_STAGE = 100  # sampled dwconv + mbconv units per stage in quick mode
TRIMMED_PER_STAGE = 40  # narrower variants of sampled units per stage (both modes), for NetAdapt


def _stage_units(space: SearchSpace, resolution: int) -> list[list[Sig]]:
    """Distinct body units per stage, in a fixed order."""
    res = math.ceil(resolution / space.stem.stride)
    cins = [space.stem.out_ch]
    out: list[list[Sig]] = []
    for st in space.stages:
        seen: dict[Sig, None] = {}
        c = space.choices  # the space's own (a space may narrow the choices)
        for cin, cout, op, k, se, skip, act in product(cins, st.filter_choices(), c["op"], c["kernel"], c["se"],
                                                       c["skip"], c["act"]):
            n = 2 if max(st.layer_choices()) >= 2 else 1
            layers = stage_layers(cin, st.stride, op, k, se, skip, cout, n, act, space.se_rule)
            seen[layer_sig(layers[0], res)] = None
            if n == 2:
                seen[layer_sig(layers[1], math.ceil(res / st.stride))] = None
        out.append(list(seen))
        cins = list(st.filter_choices())
        res = math.ceil(res / st.stride)
    return out


def _edge_units(space: SearchSpace, resolution: int) -> list[Sig]:
    """Stems (the space's, and :data:`STEM_WIDTHS` x :data:`STEM_ACTS`) and heads (every
    last-stage width, a few class counts) of the space."""
    probe = space.decode(space.sample(0), resolution=resolution)
    sigs = [stem_sig(probe)]
    for width, act in product(STEM_WIDTHS, STEM_ACTS):
        sigs.append(sigs[0]._replace(out_ch=width, exp_ch=width, act=act))
    for body_ch, classes in product(space.stages[-1].filter_choices(), HEAD_CLASSES):
        layers = list(probe.layers)
        last = layers[-1]
        layers[-1] = type(last)(last.op, last.kernel, last.stride, last.in_ch, body_ch,
                                last.in_ch if last.op == "dwconv" else (body_ch if last.op == "conv" else last.exp_ch),
                                last.se_ch, last.act, False)
        spec = ArchSpec(probe.stem, tuple(layers), probe.head, resolution, probe.in_channels, classes, probe.dropout)
        sigs.append(head_sig(spec))
    return list(dict.fromkeys(sigs))


def _trim(channels: int, factor: float) -> int:
    """``channels`` cut to ``factor``, on NetAdapt's channel steps (multiples of 8, of 4 below 32)."""
    want = channels * factor
    step = 8 if want >= 32 else 4
    return max(step, min(channels, int(round(want / step)) * step))


def _trim_se(se_ch: int, old: int, new: int) -> int:
    return _trim(se_ch, new / old) if se_ch else 0


def trimmed_units(stages: list[list[Sig]], rng: np.random.Generator, per_stage: int = TRIMMED_PER_STAGE) -> list[Sig]:
    """Narrower variants of ``per_stage`` sampled units per stage, the shapes NetAdapt produces:
    input, output and expansion widths each cut to a random 20-95% on NetAdapt's channel steps
    (input = output for residual units; SE squeeze channels follow the channels they squeeze).
    Trimmed widths are off the space's grid and often not multiples of 8, where onnxruntime's
    blocked convolutions run slower per MAC: without them the per-op model extrapolates."""
    out: list[Sig] = []
    for st in stages:
        for i in rng.permutation(len(st))[:per_stage]:
            s = st[int(i)]
            f_in, f_out, f_exp = rng.uniform(0.2, 0.95, 3)
            cin = _trim(s.in_ch, f_in)
            cout = cin if s.residual else _trim(s.out_ch, f_out)
            if s.op == "mbconv":
                exp = _trim(s.exp_ch, f_exp)
                se = _trim_se(s.se_ch, s.exp_ch, exp)
            elif s.op == "dwconv":
                exp, se = cin, _trim_se(s.se_ch, s.in_ch, cin)
            else:  # conv: the SE squeezes the output
                exp, se = cout, _trim_se(s.se_ch, s.out_ch, cout)
            out.append(s._replace(in_ch=cin, out_ch=cout, exp_ch=exp, se_ch=se))
    return list(dict.fromkeys(out))


def units_to_measure(space: SearchSpace, resolution: int = 224, mode: str = "quick", seed: int = 0,
                     per_stage: int = QUICK_PER_STAGE, conv_per_stage: int | None = None,
                     trimmed_per_stage: int = TRIMMED_PER_STAGE) -> list[Sig]:
    """The units a table of ``mode`` (``quick`` | ``full``) measures for ``space`` at ``resolution``.

    In quick mode, ``per_stage`` dwconv/mbconv units per stage and ``conv_per_stage`` conv units
    per stage (``None``: all of them) are sampled. Both modes add ``trimmed_per_stage`` narrower
    variants per stage (:func:`trimmed_units`)."""
    stages = _stage_units(space, resolution)
    edges = _edge_units(space, resolution)
    rng = np.random.default_rng(seed)
    space_units = {s for st in stages for s in st}
    trimmed = [s for s in trimmed_units(stages, np.random.default_rng(seed + 1), trimmed_per_stage)
               if s not in space_units]
    if mode == "full":
        return edges + [s for st in stages for s in st] + trimmed
    if mode != "quick":
        raise ValueError(f"unknown mode {mode!r}")
    picked: list[Sig] = []
    for st in stages:
        conv = [i for i, s in enumerate(st) if s.op == "conv"]
        other = [i for i, s in enumerate(st) if s.op != "conv"]
        keep = set(rng.permutation(other)[:per_stage].tolist())
        keep |= set(conv if conv_per_stage is None else rng.permutation(conv)[:conv_per_stage].tolist())
        picked += [st[i] for i in sorted(keep)]
    return edges + picked + trimmed


def network_units(specs: list[ArchSpec]) -> list[Sig]:
    """Distinct units of some networks (e.g. to extend a table for networks it has not seen)."""
    from latency.signature import spec_sigs

    return list(dict.fromkeys(s for spec in specs for s in spec_sigs(spec)))
