"""Which units to measure.

``full`` mode measures every unit a search space can produce at one resolution: each stage's
first layer for every (input channels, op, kernel, SE, skip, output channels, activation) and its
repeated stride-1 layer, plus the stem and the head for every body width and a few class counts
(about 4,500 units for the ``mnasnet`` space at 224).

``quick`` mode measures a documented sample of those: a seeded uniform sample of the body layers
(stratified by stage so that every resolution is covered), all stems and heads; the per-op model
fills in the rest and the calibration on whole networks corrects what a per-unit sum misses.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np

from latency.signature import Sig, head_sig, layer_sig, stem_sig
from space.archspec import ArchSpec
from space.searchspace import (
    ACT_CHOICES,
    KERNEL_CHOICES,
    OP_CHOICES,
    SE_CHOICES,
    SKIP_CHOICES,
    SearchSpace,
    stage_layers,
)

HEAD_CLASSES = (10, 100, 1000)
QUICK_PER_STAGE = 150


def _stage_units(space: SearchSpace, resolution: int) -> list[list[Sig]]:
    """Distinct body units per stage, in a fixed order."""
    res = math.ceil(resolution / space.stem.stride)
    cins = [space.stem.out_ch]
    out: list[list[Sig]] = []
    for st in space.stages:
        seen: dict[Sig, None] = {}
        for cin, cout, op, k, se, skip, act in product(cins, st.filter_choices(), OP_CHOICES, KERNEL_CHOICES,
                                                       SE_CHOICES, SKIP_CHOICES, ACT_CHOICES):
            n = 2 if max(st.layer_choices()) >= 2 else 1
            layers = stage_layers(cin, st.stride, op, k, se, skip, cout, n, act)
            seen[layer_sig(layers[0], res)] = None
            if n == 2:
                seen[layer_sig(layers[1], math.ceil(res / st.stride))] = None
        out.append(list(seen))
        cins = list(st.filter_choices())
        res = math.ceil(res / st.stride)
    return out


def _edge_units(space: SearchSpace, resolution: int) -> list[Sig]:
    """Stem and heads (every last-stage width, a few class counts) of the space."""
    probe = space.decode(space.sample(0), resolution=resolution)
    sigs = [stem_sig(probe)]
    for body_ch, classes in product(space.stages[-1].filter_choices(), HEAD_CLASSES):
        layers = list(probe.layers)
        last = layers[-1]
        layers[-1] = type(last)(last.op, last.kernel, last.stride, last.in_ch, body_ch,
                                last.in_ch if last.op == "dwconv" else (body_ch if last.op == "conv" else last.exp_ch),
                                last.se_ch, last.act, False)
        spec = ArchSpec(probe.stem, tuple(layers), probe.head, resolution, probe.in_channels, classes, probe.dropout)
        sigs.append(head_sig(spec))
    return list(dict.fromkeys(sigs))


def units_to_measure(space: SearchSpace, resolution: int = 224, mode: str = "quick", seed: int = 0,
                     per_stage: int = QUICK_PER_STAGE) -> list[Sig]:
    """The units a table of ``mode`` (``quick`` | ``full``) measures for ``space`` at ``resolution``."""
    stages = _stage_units(space, resolution)
    edges = _edge_units(space, resolution)
    if mode == "full":
        return edges + [s for st in stages for s in st]
    if mode != "quick":
        raise ValueError(f"unknown mode {mode!r}")
    rng = np.random.default_rng(seed)
    picked: list[Sig] = []
    for st in stages:
        idx = rng.permutation(len(st))[:per_stage]
        picked += [st[i] for i in sorted(idx)]
    return edges + picked


def network_units(specs: list[ArchSpec]) -> list[Sig]:
    """Distinct units of some networks (e.g. to extend a table for networks it has not seen)."""
    from latency.signature import spec_sigs

    return list(dict.fromkeys(s for spec in specs for s in spec_sigs(spec)))
