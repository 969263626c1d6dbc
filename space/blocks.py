"""The building blocks a network is made of, one small class per ArchSpec op.

Each block names its parts the same way (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``se``,
``conv_pwl``, ``bn3``) so that channel surgery (NetAdapt) and weight transfer can address them
by name whatever the op. Activations, the SE gate and BatchNorm come in as layer constructors
(``act_layer``, ``gate_layer``, ``norm_layer``), resolved once from the spec by :class:`Parts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from space.archspec import TF_BN_EPS, TF_BN_MOMENTUM, ArchSpec, Head, Layer, Stem

# ``hswish`` is MobileNetV3's x * ReLU6(x + 3) / 6, a cheap stand-in for swish on mobile CPUs.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": partial(nn.ReLU, inplace=True),
    "relu6": partial(nn.ReLU6, inplace=True),
    "hswish": partial(nn.Hardswish, inplace=True),
}
# The SE gate: MobileNetV3's hard sigmoid ReLU6(x + 3) / 6, or MnasNet's sigmoid.
GATES: dict[str, Callable[[], nn.Module]] = {"hsigmoid": nn.Hardsigmoid, "sigmoid": nn.Sigmoid}


@dataclass(frozen=True)
class Parts:
    """The layer constructors a network's blocks share: its SE gate and its BatchNorm settings."""

    gate_layer: Callable[[], nn.Module]
    norm_layer: Callable[[int], nn.Module]

    @classmethod
    def of(cls, spec: ArchSpec) -> Parts:
        return cls.make(spec.se_gate, spec.bn_eps, spec.bn_momentum)

    @classmethod
    def make(cls, se_gate: str = "hsigmoid", bn_eps: float = TF_BN_EPS, bn_momentum: float = TF_BN_MOMENTUM) -> Parts:
        return cls(GATES[se_gate], partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum))


def act_layer(name: str) -> nn.Module:
    """An activation module by its ArchSpec name (``relu``, ``relu6``, ``hswish``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}") from None


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as MnasNet and MobileNetV3 use it: global average
    pool, 1x1 conv to ``se_ch`` + ReLU, 1x1 conv back, then the gate (sigmoid in MnasNet,
    hard sigmoid in MobileNetV3) scales the channels."""

    def __init__(self, ch: int, se_ch: int, gate_layer: Callable[[], nn.Module] = nn.Hardsigmoid) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(ch, se_ch, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(se_ch, ch, 1)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class StemConv(nn.Module):
    """kxk strided conv + BN + act on the input image."""

    def __init__(self, in_ch: int, stem: Stem, parts: Parts | None = None) -> None:
        super().__init__()
        parts = parts or Parts.make()
        self.conv = _conv(in_ch, stem.out_ch, stem.kernel, stem.stride)
        self.bn1 = parts.norm_layer(stem.out_ch)
        self.act1 = act_layer(stem.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


def _se(ch: int, spec: Layer, parts: Parts) -> nn.Module:
    return SqueezeExcite(ch, spec.se_ch, parts.gate_layer) if spec.se_ch else nn.Identity()


class ConvLayer(nn.Module):
    """``conv`` op: a regular kxk conv + BN + act, optional SE, optional identity residual."""

    def __init__(self, spec: Layer, parts: Parts | None = None) -> None:
        super().__init__()
        parts = parts or Parts.make()
        self.has_residual = spec.residual
        self.conv = _conv(spec.in_ch, spec.out_ch, spec.kernel, spec.stride)
        self.bn1 = parts.norm_layer(spec.out_ch)
        self.act1 = act_layer(spec.act)
        self.se = _se(spec.out_ch, spec, parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv(x))))
        return x + y if self.has_residual else y


class DepthwiseSeparable(nn.Module):
    """``dwconv`` op: depthwise-separable conv (MobileNetV1, Howard et al. 2017), the SepConv of
    MnasNet and the expansion-free first block of MobileNetV2/V3: kxk depthwise + BN + act,
    optional SE, 1x1 projection + BN, linear (MnasNet, MobileNetV2/V3) or followed by the act
    (``pw_act``: MobileNetV1)."""

    def __init__(self, spec: Layer, parts: Parts | None = None) -> None:
        super().__init__()
        parts = parts or Parts.make()
        self.has_residual = spec.residual
        self.conv_dw = _conv(spec.in_ch, spec.in_ch, spec.kernel, spec.stride, groups=spec.in_ch)
        self.bn1 = parts.norm_layer(spec.in_ch)
        self.act1 = act_layer(spec.act)
        self.se = _se(spec.in_ch, spec, parts)
        self.conv_pw = _conv(spec.in_ch, spec.out_ch, 1)
        self.bn2 = parts.norm_layer(spec.out_ch)
        self.act2 = act_layer(spec.act) if spec.pw_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv_dw(x))))
        y = self.act2(self.bn2(self.conv_pw(y)))
        return x + y if self.has_residual else y


class InvertedResidual(nn.Module):
    """``mbconv`` op: inverted residual with linear bottleneck (MobileNetV2, Sandler et al. 2018):
    1x1 expansion + BN + act, kxk depthwise + BN + act, optional SE (MnasNet, MobileNetV3),
    1x1 linear projection + BN with no activation, identity residual when allowed."""

    def __init__(self, spec: Layer, parts: Parts | None = None) -> None:
        super().__init__()
        parts = parts or Parts.make()
        self.has_residual = spec.residual
        self.conv_pw = _conv(spec.in_ch, spec.exp_ch, 1)
        self.bn1 = parts.norm_layer(spec.exp_ch)
        self.act1 = act_layer(spec.act)
        self.conv_dw = _conv(spec.exp_ch, spec.exp_ch, spec.kernel, spec.stride, groups=spec.exp_ch)
        self.bn2 = parts.norm_layer(spec.exp_ch)
        self.act2 = act_layer(spec.act)
        self.se = _se(spec.exp_ch, spec, parts)
        self.conv_pwl = _conv(spec.exp_ch, spec.out_ch, 1)
        self.bn3 = parts.norm_layer(spec.out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_residual else y


class ClassifierHead(nn.Module):
    """Optional 1x1 conv + BN + act, global average pool, optional FC + act (MobileNetV3's
    efficient last stage moves this FC after the pooling), dropout, linear classifier."""

    def __init__(self, in_ch: int, head: Head, num_classes: int, dropout: float, parts: Parts | None = None) -> None:
        super().__init__()
        parts = parts or Parts.make()
        ch = in_ch
        if head.conv_ch:
            self.conv = _conv(ch, head.conv_ch, 1)
            self.bn1 = parts.norm_layer(head.conv_ch)
            self.act1 = act_layer(head.act)
            ch = head.conv_ch
        else:
            self.conv = self.bn1 = self.act1 = None
        if head.fc_ch:
            self.fc = nn.Linear(ch, head.fc_ch)
            self.act2 = act_layer(head.act)
            ch = head.fc_ch
        else:
            self.fc = self.act2 = None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.act1(self.bn1(self.conv(x)))
        x = x.mean((2, 3))
        if self.fc is not None:
            x = self.act2(self.fc(x))
        return self.classifier(self.dropout(x))


BLOCKS: dict[str, type[nn.Module]] = {
    "conv": ConvLayer,
    "dwconv": DepthwiseSeparable,
    "mbconv": InvertedResidual,
}
