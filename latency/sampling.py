"""Which units to measure.

``full`` mode measures every unit a search space can produce at one resolution: each stage's
first layer for every (input channels, op, kernel, SE, skip, output channels, activation) and its
repeated stride-1 layer, plus the stem and the head for every body width and a few class counts
(about 4,500 units for the ``mnasnet`` space at 224).

``quick`` mode measures a documented sample of those: every regular-convolution (``conv``) unit of
a stage that has up to :data:`QUICK_CONV_PER_STAGE` of them (every stage of ``mnasnet``,
``mnasnet_cifar`` and ``mobilenet_v3``) and a seeded sample of that many where a stage has more,
a seeded uniform sample of the depthwise-separable and inverted-residual units (stratified by
stage so that every resolution is covered), all stems and heads; the per-op model fills in the
rest and the calibration on whole networks corrects what a per-unit sum misses. Regular
convolutions are all measured because their speed follows the GEMM shapes onnxruntime picks
(a per-op model trained on a quarter of them erred by ~7% per unit, against ~3% for the
separable blocks), and they are among a network's largest units. The cap is for spaces like
``mnasnet_cifar_wide``, whose late stages hold 420-756 conv units of up to 1,280 channels and 7x7
kernels: measuring all of them (80M weights the largest) took over an hour here.
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
STEM_INPUTS = (1, 3)  # image channels: grey (digits) and colour
QUICK_PER_STAGE = 100  # sampled dwconv + mbconv units per stage in quick mode
QUICK_CONV_PER_STAGE = 180  # conv units per stage in quick mode: all of them up to this many
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
            seen[layer_sig(layers[0], res, space.se_gate)] = None
            if n == 2:
                seen[layer_sig(layers[1], math.ceil(res / st.stride), space.se_gate)] = None
        out.append(list(seen))
        cins = list(st.filter_choices())
        res = math.ceil(res / st.stride)
    return out


def _edge_units(space: SearchSpace, resolution: int) -> list[Sig]:
    """Stems (the space's, and :data:`STEM_INPUTS` x :data:`STEM_WIDTHS` x :data:`STEM_ACTS`) and
    heads (every last-stage width, a few class counts) of the space."""
    probe = space.decode(space.sample(0), resolution=resolution)
    sigs = [stem_sig(probe)]
    for in_ch, width, act in product(STEM_INPUTS, STEM_WIDTHS, STEM_ACTS):
        sigs.append(sigs[0]._replace(in_ch=in_ch, out_ch=width, exp_ch=width, act=act))
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
    """``channels`` cut to ``factor``, on multiples of 8 (of 4 below 32: finer than NetAdapt's steps
    of 8, so that the table also covers narrow widths off that grid)."""
    want = channels * factor
    step = 8 if want >= 32 else 4
    return max(step, min(channels, int(round(want / step)) * step))


def _trim_se(se_ch: int, old: int, new: int) -> int:
    return _trim(se_ch, new / old) if se_ch else 0


def trimmed_units(stages: list[list[Sig]], rng: np.random.Generator, per_stage: int = TRIMMED_PER_STAGE) -> list[Sig]:
    """Narrower variants of ``per_stage`` sampled units per stage, the shapes NetAdapt produces:
    input, output and expansion widths each cut to a random 20-95% (:func:`_trim`'s steps)
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
                     per_stage: int = QUICK_PER_STAGE, conv_per_stage: int | None = QUICK_CONV_PER_STAGE,
                     trimmed_per_stage: int = TRIMMED_PER_STAGE) -> list[Sig]:
    """The units a table of ``mode`` (``quick`` | ``full``) measures for ``space`` at ``resolution``.

    In quick mode, ``per_stage`` dwconv/mbconv units per stage and ``conv_per_stage`` conv units
    per stage (all of a stage that has no more; ``None``: all of them) are sampled. Both modes add
    ``trimmed_per_stage`` narrower variants per stage (:func:`trimmed_units`)."""
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
        # (no draw where every conv unit is kept, so that tables of spaces below the cap stay as they were)
        keep |= set(conv if conv_per_stage is None or len(conv) <= conv_per_stage
                    else rng.permutation(conv)[:conv_per_stage].tolist())
        picked += [st[i] for i in sorted(keep)]
    return edges + picked + trimmed


def network_units(specs: list[ArchSpec]) -> list[Sig]:
    """Distinct units of some networks (e.g. to extend a table for networks it has not seen)."""
    from latency.signature import spec_sigs

    return list(dict.fromkeys(s for spec in specs for s in spec_sigs(spec)))


# ---- units over the whole range users' networks take, and more of them where the model errs ------

RANGE_SEED = 5_000_000  # the networks whose units a table measures beyond the space's grid


def range_units(per_family: int, seed: int = RANGE_SEED) -> list[Sig]:
    """The distinct units of ``per_family`` networks of every family (:mod:`latency.families`):
    reference networks at widths 0.35-1.4 and resolutions 96-224, NetAdapt-trimmed networks down to
    8 channels, both spaces, 1- and 3-channel stems. Sampling units from the networks users bring
    covers the combinations of channels, expansion, kernel, stride, resolution, SE and activation
    that occur, not the empty corners of the grid of all of them."""
    from latency import families

    if per_family <= 0:
        return []
    return network_units([s for f in families.FAMILIES for s in families.draw(f, per_family, seed)])


def _step(c: float) -> int:
    """The nearest multiple of 8 (of 4 below 32; see :func:`_trim`), at least 4."""
    step = 8 if c >= 32 else 4
    return max(4, int(round(c / step)) * step)


def _consistent(s: Sig) -> Sig:
    """A valid unit after a perturbation: a dwconv expands to its input, a conv to its output, a
    residual needs stride 1 and equal widths, SE squeezes a quarter of the channels it acts on."""
    exp = s.in_ch if s.op == "dwconv" else (s.out_ch if s.op in ("conv", "stem") else s.exp_ch)
    se = _step(exp / 4) if s.se_ch else 0
    residual = bool(s.residual and s.stride == 1 and s.in_ch == s.out_ch)
    return s._replace(exp_ch=exp, se_ch=min(se, exp) if se else 0, residual=residual)


def neighbours(s: Sig, rng: np.random.Generator, n: int) -> list[Sig]:
    """``n`` units near ``s``: one of its widths, its expansion, its resolution or its kernel moved."""
    out = []
    for _ in range(n):
        what = rng.choice(["in", "out", "exp", "res", "kernel"] if s.op in ("conv", "dwconv", "mbconv")
                          else ["out", "res"] if s.op == "stem" else ["in", "exp", "res"])
        f = float(np.exp(rng.uniform(-0.5, 0.5)))
        if what == "in":
            t = s._replace(in_ch=_step(s.in_ch * f))
        elif what == "out":
            t = s._replace(out_ch=_step(s.out_ch * f))
        elif what == "exp":
            t = s._replace(exp_ch=_step(s.exp_ch * f) if s.exp_ch else 0)
        elif what == "res":
            t = s._replace(res=max(2, int(round(s.res * f))))
        else:
            t = s._replace(kernel=int(rng.choice([k for k in (3, 5, 7) if k != s.kernel])))
        if s.op != "head":
            t = _consistent(t)
        if t != s:
            out.append(t)
    return out


def adaptive_units(errors: dict[Sig, float], n: int, have: set[Sig], seed: int = RANGE_SEED + 1) -> list[Sig]:
    """``n`` new units near the measured units whose cross-validated error (``errors``: |log(predicted /
    measured)| per unit) is highest, as nn-Meter's adaptive data sampler adds configurations where its
    kernel predictors err (Zhang et al. 2021): the worst tenth first, each unit's share of the new
    samples proportional to its error."""
    if n <= 0 or not errors:
        return []
    rng = np.random.default_rng(seed)
    worst = sorted(errors, key=errors.__getitem__, reverse=True)[:max(1, len(errors) // 10)]
    weight = np.array([errors[s] for s in worst]) + 1e-9
    out: dict[Sig, None] = {}
    for _ in range(20 * n):
        if len(out) >= n:
            break
        s = worst[int(rng.choice(len(worst), p=weight / weight.sum()))]
        for t in neighbours(s, rng, 1):
            if t not in have:
                out.setdefault(t, None)
    return list(out)
