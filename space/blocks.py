"""The building blocks a network is made of, one small class per ArchSpec op.

Each block names its parts the same way (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``se``,
``conv_pwl``, ``bn3``) so that channel surgery (NetAdapt) and weight transfer can address them
by name whatever the op.
"""

from __future__ import annotations

import torch
from torch import nn

from space.archspec import Head, Layer, Stem

# BatchNorm settings of the TF-trained mobile networks (MobileNetV3, MnasNet): eps 1e-3, momentum 0.01.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def make_act(name: str) -> nn.Module:
    """``hswish`` is MobileNetV3's x * ReLU6(x + 3) / 6, a cheap stand-in for swish on mobile CPUs."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as used by MnasNet and MobileNetV3: global average
    pool, 1x1 conv to ``se_ch`` + ReLU, 1x1 conv back + hard-sigmoid gate (MobileNetV3)."""

    def __init__(self, ch: int, se_ch: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(ch, se_ch, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(se_ch, ch, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class StemConv(nn.Module):
    """kxk strided conv + BN + act on the input image."""

    def __init__(self, in_ch: int, stem: Stem) -> None:
        super().__init__()
        self.conv = _conv(in_ch, stem.out_ch, stem.kernel, stem.stride)
        self.bn1 = _bn(stem.out_ch)
        self.act1 = make_act(stem.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class ConvLayer(nn.Module):
    """``conv`` op: a regular kxk conv + BN + act, optional SE, optional identity residual."""

    def __init__(self, spec: Layer) -> None:
        super().__init__()
        self.has_residual = spec.residual
        self.conv = _conv(spec.in_ch, spec.out_ch, spec.kernel, spec.stride)
        self.bn1 = _bn(spec.out_ch)
        self.act1 = make_act(spec.act)
        self.se = SqueezeExcite(spec.out_ch, spec.se_ch) if spec.se_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv(x))))
        return x + y if self.has_residual else y


class DepthwiseSeparable(nn.Module):
    """``dwconv`` op: depthwise-separable conv (MobileNetV1, Howard et al. 2017), the SepConv of
    MnasNet and the expansion-free first block of MobileNetV2/V3: kxk depthwise + BN + act,
    optional SE, 1x1 linear projection + BN."""

    def __init__(self, spec: Layer) -> None:
        super().__init__()
        self.has_residual = spec.residual
        self.conv_dw = _conv(spec.in_ch, spec.in_ch, spec.kernel, spec.stride, groups=spec.in_ch)
        self.bn1 = _bn(spec.in_ch)
        self.act1 = make_act(spec.act)
        self.se = SqueezeExcite(spec.in_ch, spec.se_ch) if spec.se_ch else nn.Identity()
        self.conv_pw = _conv(spec.in_ch, spec.out_ch, 1)
        self.bn2 = _bn(spec.out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv_dw(x))))
        y = self.bn2(self.conv_pw(y))
        return x + y if self.has_residual else y


class InvertedResidual(nn.Module):
    """``mbconv`` op: inverted residual with linear bottleneck (MobileNetV2, Sandler et al. 2018):
    1x1 expansion + BN + act, kxk depthwise + BN + act, optional SE (MnasNet, MobileNetV3),
    1x1 linear projection + BN with no activation, identity residual when allowed."""

    def __init__(self, spec: Layer) -> None:
        super().__init__()
        self.has_residual = spec.residual
        self.conv_pw = _conv(spec.in_ch, spec.exp_ch, 1)
        self.bn1 = _bn(spec.exp_ch)
        self.act1 = make_act(spec.act)
        self.conv_dw = _conv(spec.exp_ch, spec.exp_ch, spec.kernel, spec.stride, groups=spec.exp_ch)
        self.bn2 = _bn(spec.exp_ch)
        self.act2 = make_act(spec.act)
        self.se = SqueezeExcite(spec.exp_ch, spec.se_ch) if spec.se_ch else nn.Identity()
        self.conv_pwl = _conv(spec.exp_ch, spec.out_ch, 1)
        self.bn3 = _bn(spec.out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_residual else y


class ClassifierHead(nn.Module):
    """Optional 1x1 conv + BN + act, global average pool, optional FC + act (MobileNetV3's
    efficient last stage moves this FC after the pooling), dropout, linear classifier."""

    def __init__(self, in_ch: int, head: Head, num_classes: int, dropout: float) -> None:
        super().__init__()
        ch = in_ch
        if head.conv_ch:
            self.conv = _conv(ch, head.conv_ch, 1)
            self.bn1 = _bn(head.conv_ch)
            self.act1 = make_act(head.act)
            ch = head.conv_ch
        else:
            self.conv = self.bn1 = self.act1 = None
        if head.fc_ch:
            self.fc = nn.Linear(ch, head.fc_ch)
            self.act2 = make_act(head.act)
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
