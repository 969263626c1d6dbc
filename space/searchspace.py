"""MnasNet's factorized hierarchical search space, declared as data.

The network is split into stages around a skeleton (MobileNetV2's 7 stages for the ``mnasnet``
preset, MobileNetV3-Large's 6 for ``mobilenet_v3``). Each stage chooses one op that all of its
layers repeat (Tan et al. 2019, Section 4.1), from these decisions, in this order:

``op``       conv | dwconv | mbconv3 | mbconv6 (MBConv with expansion 3 or 6)
``kernel``   3 | 5 | 7
``se``       0 | 0.25 (squeeze channels as the space's paper sizes them, see below)
``skip``     identity | none (identity residual on every layer that can take one)
``filters``  x0.75 | x1.0 | x1.25 of the skeleton's channels, rounded to multiples of 8 (a space may
             give a stage other multipliers: ``mnasnet_cifar_wide``'s late stages reach x4)
``layers``   -1 | 0 | +1 layers vs the skeleton, at least one
``act``      relu | hswish

Where the two papers differ, each space follows its own: ``mnasnet`` gates SE with a sigmoid and
sizes its squeeze as a quarter of the block's input channels (MnasNet's reference code),
``mobilenet_v3`` with a hard sigmoid and a quarter of the expansion channels rounded to 8
(MobileNetV3); both use TensorFlow's BatchNorm settings (eps 1e-3, decay 0.99).

A space is an ordered list of :class:`Decision` (a name and its choices); samplers and the
controller only see that list and integer tokens (choice indices), so they work for any space.

Choices that would give the same network are merged so that tokens <-> ArchSpec is one-to-one:
channel multipliers that round to the same count keep one entry, a 1-layer skeleton stage offers
{1, 2} layers, and ``skip`` only matters when some layer of the stage can take a residual; when
none can, the canonical token is the first choice (``identity``). :meth:`SearchSpace.canonical`
maps any token list to the canonical one of its network, :meth:`sample` returns canonical tokens,
and :attr:`size` counts distinct networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import product
from typing import Any

import numpy as np

from common.errors import UserError
from space.archspec import TF_BN_EPS, TF_BN_MOMENTUM, ArchSpec, Head, Layer, Stem
from space.errors import SpecError
from space.references import make_divisible, mnasnet_se_channels

OP_CHOICES = ("conv", "dwconv", "mbconv3", "mbconv6")
KERNEL_CHOICES = (3, 5, 7)
SE_CHOICES = (0.0, 0.25)
SKIP_CHOICES = ("identity", "none")
ACT_CHOICES = ("relu", "hswish")
FILTER_MULTS = (0.75, 1.0, 1.25)
# The late stages of ``mnasnet_cifar_wide``: MobileNetV1 at 32x32 (stem at stride 1) runs 256-1024
# channels on its 8x8 to 2x2 maps (Howard et al. 2017, Table 1) where MnasNet's skeleton offers
# 24-400; these go up to 4x the skeleton there (128-1280) and keep x1.25, so that every
# ``mnasnet_cifar`` network is also in the wide space.
WIDE_FILTER_MULTS = (0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)
LAYER_DELTAS = (-1, 0, 1)
STAGE_DECISIONS = ("op", "kernel", "se", "skip", "filters", "layers", "act")
# The per-stage choices a space may narrow (filters and layers follow from its skeleton).
CHOICES = {"op": OP_CHOICES, "kernel": KERNEL_CHOICES, "se": SE_CHOICES, "skip": SKIP_CHOICES, "act": ACT_CHOICES}


@dataclass(frozen=True)
class Decision:
    """One categorical choice of the space: ``name`` (e.g. ``s3.kernel``) and its ``choices``."""

    name: str
    choices: tuple[Any, ...]

    @property
    def n(self) -> int:
        return len(self.choices)


def round_filters(v: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (halves round up), at least ``divisor``."""
    return max(divisor, int(v / divisor + 0.5) * divisor)


@dataclass(frozen=True)
class StageSkeleton:
    """A stage of the base network: output channels, layer count, the first layer's stride, and
    the multipliers of its channels that the ``filters`` decision offers."""

    filters: int
    layers: int
    stride: int
    mults: tuple[float, ...] = FILTER_MULTS

    def filter_choices(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(round_filters(self.filters * m) for m in self.mults))

    def layer_choices(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(max(1, self.layers + d) for d in LAYER_DELTAS))


SE_RULES = {
    # MnasNet (reference TF code): a ratio of the block's input channels, at least 1.
    "input": lambda cin, exp, ratio: mnasnet_se_channels(cin, ratio),
    # MobileNetV3: a ratio of the expansion channels, rounded to a multiple of 8.
    "expansion": lambda cin, exp, ratio: make_divisible(exp * ratio),
}


def stage_layers(cin: int, stride: int, op: str, kernel: int, se: float, skip: str,
                 out: int, n: int, act: str, se_rule: str = "expansion") -> list[Layer]:
    layers = []
    for i in range(n):
        s = stride if i == 0 else 1
        if op == "conv":
            kind, exp = "conv", out
        elif op == "dwconv":
            kind, exp = "dwconv", cin
        else:
            kind, exp = "mbconv", cin * int(op[len("mbconv"):])
        se_ch = SE_RULES[se_rule](cin, exp, se) if se else 0
        residual = skip == "identity" and s == 1 and cin == out
        layers.append(Layer(kind, kernel, s, cin, out, exp, se_ch, act, residual))
        cin = out
    return layers


def _skip_matters(cin: int, stride: int, out: int, n: int) -> bool:
    # Layers after the first always have stride 1 and in == out; the first one only sometimes.
    return n >= 2 or (stride == 1 and cin == out)


class SearchSpace:
    """A factorized hierarchical space: fixed stem and head, searched stages."""

    def __init__(self, name: str, stem: Stem, stages: Sequence[StageSkeleton], head: Head,
                 dropout: float = 0.2, description: str = "", se_rule: str = "expansion",
                 se_gate: str = "hsigmoid", bn_eps: float = TF_BN_EPS, bn_momentum: float = TF_BN_MOMENTUM,
                 choices: dict[str, tuple[Any, ...]] | None = None) -> None:
        if se_rule not in SE_RULES:
            raise ValueError(f"unknown SE rule {se_rule!r}")
        self.choices = {**CHOICES, **(choices or {})}
        for key, values in self.choices.items():
            if key not in CHOICES or not values or not set(values) <= set(CHOICES[key]):
                raise ValueError(f"space {name}: choices for {key!r} must be a non-empty subset of {CHOICES.get(key)}")
        self.name = name
        self.se_rule, self.se_gate, self.bn_eps, self.bn_momentum = se_rule, se_gate, bn_eps, bn_momentum
        self.stem = stem
        self.stages = tuple(stages)
        self.head = head
        self.dropout = dropout
        self.description = description
        self.decisions: tuple[Decision, ...] = tuple(
            d for i, st in enumerate(self.stages) for d in (
                Decision(f"s{i}.op", self.choices["op"]),
                Decision(f"s{i}.kernel", self.choices["kernel"]),
                Decision(f"s{i}.se", self.choices["se"]),
                Decision(f"s{i}.skip", self.choices["skip"]),
                Decision(f"s{i}.filters", st.filter_choices()),
                Decision(f"s{i}.layers", st.layer_choices()),
                Decision(f"s{i}.act", self.choices["act"]),
            )
        )

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {len(self.stages)} stages, {len(self.decisions)} decisions)"

    # ---- tokens -> spec ----------------------------------------------------------------
    def _check_tokens(self, tokens: Sequence[int]) -> list[int]:
        toks = [int(t) for t in tokens]
        if len(toks) != len(self.decisions):
            raise UserError(f"space {self.name!r} takes {len(self.decisions)} tokens, got {len(toks)}")
        for t, d in zip(toks, self.decisions):
            if not 0 <= t < d.n:
                raise UserError(f"token for {d.name} is {t}; it must be in 0..{d.n - 1}")
        return toks

    def stage_values(self, tokens: Sequence[int]) -> list[dict[str, Any]]:
        """The chosen values per stage, e.g. ``[{'op': 'mbconv6', 'kernel': 3, ...}, ...]``."""
        toks = self._check_tokens(tokens)
        k = len(STAGE_DECISIONS)
        return [
            {key: self.decisions[i * k + j].choices[toks[i * k + j]] for j, key in enumerate(STAGE_DECISIONS)}
            for i in range(len(self.stages))
        ]

    def decode(self, tokens: Sequence[int], resolution: int = 224, num_classes: int = 1000,
               in_channels: int = 3) -> ArchSpec:
        """The network the tokens describe."""
        layers: list[Layer] = []
        cin = self.stem.out_ch
        for st, v in zip(self.stages, self.stage_values(tokens)):
            layers += stage_layers(cin, st.stride, v["op"], v["kernel"], v["se"], v["skip"],
                                   v["filters"], v["layers"], v["act"], self.se_rule)
            cin = v["filters"]
        return ArchSpec(self.stem, tuple(layers), self.head, resolution, in_channels, num_classes,
                        self.dropout, name=f"{self.name}:{'-'.join(map(str, self.canonical(tokens)))}",
                        se_gate=self.se_gate, bn_eps=self.bn_eps, bn_momentum=self.bn_momentum)

    # ---- spec -> tokens ----------------------------------------------------------------
    def encode(self, spec: ArchSpec) -> list[int]:
        """Canonical tokens of a spec from this space; :class:`SpecError` if it is not in it."""
        if spec.stem != self.stem or spec.head != self.head:
            raise SpecError(f"{spec.name or 'spec'}: its stem/head differ from space {self.name!r}'s, so it is not in that space")
        if (spec.se_gate, spec.bn_eps, spec.bn_momentum) != (self.se_gate, self.bn_eps, self.bn_momentum):
            raise SpecError(f"{spec.name or 'spec'}: its SE gate or BatchNorm settings differ from space {self.name!r}'s, "
                            "so it is not in that space")
        found = self._encode_from(spec.layers, 0, self.stem.out_ch)
        if found is None:
            raise SpecError(f"{spec.name or 'spec'}: its layers are not expressible in space {self.name!r}")
        return found

    def _encode_from(self, layers: tuple[Layer, ...], stage: int, cin: int) -> list[int] | None:
        if stage == len(self.stages):
            return [] if not layers else None
        st = self.stages[stage]
        k = len(STAGE_DECISIONS)
        decs = self.decisions[stage * k:(stage + 1) * k]
        for n in decs[5].choices:
            chunk = layers[:n]
            if len(chunk) < n:
                break
            toks = self._infer_stage(chunk, cin, st, decs, self.se_rule)
            if toks is None:
                continue
            rest = self._encode_from(layers[n:], stage + 1, chunk[-1].out_ch)
            if rest is not None:
                return toks + rest
        return None

    @staticmethod
    def _infer_stage(chunk: tuple[Layer, ...], cin: int, st: StageSkeleton,
                     decs: tuple[Decision, ...], se_rule: str) -> list[int] | None:
        first = chunk[0]
        if first.op == "mbconv":
            if first.exp_ch % cin:
                return None
            op = f"mbconv{first.exp_ch // cin}"
        else:
            op = first.op
        values = {
            "op": op, "kernel": first.kernel, "se": 0.25 if first.se_ch else 0.0,
            "skip": "identity" if any(layer.residual for layer in chunk) else "none",
            "filters": first.out_ch, "layers": len(chunk), "act": first.act,
        }
        if not _skip_matters(cin, st.stride, first.out_ch, len(chunk)):
            values["skip"] = decs[3].choices[0]
        toks = []
        for d, key in zip(decs, STAGE_DECISIONS):
            if values[key] not in d.choices:
                return None
            toks.append(d.choices.index(values[key]))
        expect = stage_layers(cin, st.stride, values["op"], values["kernel"], values["se"],
                              values["skip"], values["filters"], values["layers"], values["act"], se_rule)
        return toks if tuple(expect) == chunk else None

    def canonical(self, tokens: Sequence[int]) -> list[int]:
        """The canonical tokens of the network ``tokens`` describe."""
        toks = self._check_tokens(tokens)
        k = len(STAGE_DECISIONS)
        skip_at = STAGE_DECISIONS.index("skip")
        cin = self.stem.out_ch
        for i, (st, v) in enumerate(zip(self.stages, self.stage_values(toks))):
            if not _skip_matters(cin, st.stride, v["filters"], v["layers"]):
                toks[i * k + skip_at] = 0
            cin = v["filters"]
        return toks

    # ---- sampling and size -------------------------------------------------------------
    def sample(self, rng: np.random.Generator | int | None = None) -> list[int]:
        """Uniform random choice per decision, returned in canonical form."""
        rng = np.random.default_rng(rng)
        return self.canonical([int(rng.integers(d.n)) for d in self.decisions])

    @property
    def nominal_size(self) -> int:
        """Product of all choice counts (counting merged duplicates)."""
        n = 1
        for d in self.decisions:
            n *= d.n
        return n

    @cached_property
    def size(self) -> int:
        """Number of distinct networks in the space."""
        ways = {self.stem.out_ch: 1}
        c = self.choices
        per_stage_other = len(c["op"]) * len(c["kernel"]) * len(c["se"]) * len(c["act"])
        for st in self.stages:
            nxt: dict[int, int] = {}
            for cin, w in ways.items():
                for out, n in product(st.filter_choices(), st.layer_choices()):
                    skips = len(c["skip"]) if _skip_matters(cin, st.stride, out, n) else 1
                    nxt[out] = nxt.get(out, 0) + w * per_stage_other * skips
            ways = nxt
        return sum(ways.values())


def _mnasnet_space() -> SearchSpace:
    v2 = [(16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]
    return SearchSpace(
        "mnasnet", Stem(32, 3, 2, "relu"), [StageSkeleton(*s) for s in v2], Head(1280, "relu", "avg", 0),
        description="MnasNet's space on the MobileNetV2 skeleton (7 stages, 1280-channel head)",
        se_rule="input", se_gate="sigmoid",
    )


def _mnasnet_cifar_space() -> SearchSpace:
    # The network a search trains at 32x32 (space.proxy with a 2x2 last map: the stem at stride 1),
    # as a space of its own so that a latency table, the search's reward and NetAdapt all see the
    # network that is deployed as trained, at the resolution it is trained at.
    base = _mnasnet_space()
    return SearchSpace(
        "mnasnet_cifar", Stem(32, 3, 1, "relu"), base.stages, base.head,
        description="mnasnet for 32x32 input: the stem at stride 1 (total stride 16, a 2x2 last map at 32px), "
                    "the proxy network of mnasnet at 32px deployed as trained",
        se_rule="input", se_gate="sigmoid",
    )


def _mnasnet_cifar_wide_space() -> SearchSpace:
    # mnasnet_cifar whose stages from the 8x8 map on (at 32x32) may be 1.5-4x the skeleton's width:
    # at this resolution those maps are cheap, and MobileNetV1 spends its capacity there.
    base = _mnasnet_cifar_space()
    stages = [st if i < 2 else replace(st, mults=WIDE_FILTER_MULTS) for i, st in enumerate(base.stages)]
    return SearchSpace(
        "mnasnet_cifar_wide", base.stem, stages, base.head,
        description="mnasnet_cifar whose stages 2-6 (8x8 to 2x2 maps at 32px) offer x0.75-x4 of the skeleton's "
                    "channels (128-1280; MobileNetV1 runs 256-1024 there)",
        se_rule="input", se_gate="sigmoid",
    )


def _mobilenet_v3_space() -> SearchSpace:
    v3 = [(16, 1, 1), (24, 2, 2), (40, 3, 2), (80, 4, 2), (112, 2, 1), (160, 3, 2)]
    return SearchSpace(
        "mobilenet_v3", Stem(16, 3, 2, "hswish"), [StageSkeleton(*s) for s in v3], Head(960, "hswish", "avg", 1280),
        description="MobileNetV3-Large skeleton: 16-filter h-swish stem, 6 stages, efficient last stage (960 conv + 1280 FC)",
        se_rule="expansion", se_gate="hsigmoid",
    )


def _tiny_space() -> SearchSpace:
    return SearchSpace(
        "tiny", Stem(16, 3, 2, "relu"), [StageSkeleton(16, 1, 2)], Head(64, "relu", "avg", 0),
        description="one stage, 12 networks (depthwise or MBConv3, 16 or 24 filters, 1 or 2 layers, with or "
                    "without skip): for trying the whole pipeline in seconds",
        choices={"op": ("dwconv", "mbconv3"), "kernel": (3,), "se": (0.0,), "act": ("relu",)},
    )


SPACES = {"mnasnet": _mnasnet_space, "mnasnet_cifar": _mnasnet_cifar_space,
          "mnasnet_cifar_wide": _mnasnet_cifar_wide_space, "mobilenet_v3": _mobilenet_v3_space, "tiny": _tiny_space}


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]()
    except KeyError:
        raise UserError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}") from None
