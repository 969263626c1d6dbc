"""The building blocks a network is made of, one small class per ArchSpec op.

Each block names its parts the same way (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``se``,
``conv_pwl``, ``bn3``), and describes its own channel axes (``channel_axes``: which dimension of
which of its tensors carries its input, output, expansion and SE squeeze channels, much as timm's
``feature_info`` describes a model's feature maps), so that channel surgery (NetAdapt) needs no
parameter paths of its own. Activations, the SE gate and BatchNorm come in as layer constructors
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


@dataclass(frozen=True)
class Axis:
    """One dimension of one tensor that carries a set of channels; ``key`` is the state_dict key
    relative to the block that owns the tensor."""

    key: str
    dim: int
    producer: bool = False  # the conv/linear whose filters create these channels
    scale: bool = False     # the BatchNorm scale (gamma) right after that producer

    def under(self, prefix: str) -> Axis:
        """The same axis with its key prefixed by the block's name in the network."""
        return Axis(f"{prefix}.{self.key}", self.dim, self.producer, self.scale)


# The roles a block's channel axes play (keys of ``channel_axes``):
#   "in"   the tensors that read the block's input channels
#   "out"  the filter that produces its output channels, and everything that follows it on them
#   "exp"  an inverted residual's expansion channels (expand, depthwise, SE, projection input)
#   "se"   the squeeze channels of the block's SE module
AxisMap = dict[str, list[Axis]]


def _bn_axes(name: str) -> list[Axis]:
    return [Axis(f"{name}.{k}", 0, scale=k == "weight") for k in ("weight", "bias", "running_mean", "running_var")]


def _excited_axes() -> list[Axis]:
    # The channels an SE module acts on: fc1 reads them (dim 1), fc2 writes them (dim 0, and its bias).
    return [Axis("se.fc1.weight", 1), Axis("se.fc2.weight", 0), Axis("se.fc2.bias", 0)]


def _squeeze_axes(layer: Layer) -> AxisMap:
    if not layer.se_ch:
        return {}
    return {"se": [Axis("se.fc1.weight", 0, producer=True), Axis("se.fc1.bias", 0), Axis("se.fc2.weight", 1)]}


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

    @staticmethod
    def channel_axes(stem: Stem) -> AxisMap:
        return {"out": [Axis("conv.weight", 0, producer=True), *_bn_axes("bn1")]}


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

    @staticmethod
    def channel_axes(layer: Layer) -> AxisMap:
        # The SE module acts on the conv's output channels.
        out = [Axis("conv.weight", 0, producer=True), *_bn_axes("bn1"), *(_excited_axes() if layer.se_ch else [])]
        return {"in": [Axis("conv.weight", 1)], "out": out, **_squeeze_axes(layer)}


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

    @staticmethod
    def channel_axes(layer: Layer) -> AxisMap:
        # The depthwise conv (and its SE) work on the input's channels throughout.
        inp = [Axis("conv_dw.weight", 0), *_bn_axes("bn1"), *(_excited_axes() if layer.se_ch else []),
               Axis("conv_pw.weight", 1)]
        return {"in": inp, "out": [Axis("conv_pw.weight", 0, producer=True), *_bn_axes("bn2")],
                **_squeeze_axes(layer)}


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

    @staticmethod
    def channel_axes(layer: Layer) -> AxisMap:
        exp = [Axis("conv_pw.weight", 0, producer=True), *_bn_axes("bn1"), Axis("conv_dw.weight", 0),
               *_bn_axes("bn2"), *(_excited_axes() if layer.se_ch else []), Axis("conv_pwl.weight", 1)]
        return {"in": [Axis("conv_pw.weight", 1)], "exp": exp,
                "out": [Axis("conv_pwl.weight", 0, producer=True), *_bn_axes("bn3")], **_squeeze_axes(layer)}


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

    @staticmethod
    def channel_axes(head: Head) -> AxisMap:
        """``in``: what reads the body's output; ``conv`` and ``fc``: the channels of the 1x1 conv and
        of the FC layer, each with the layer that reads them."""
        readers = [name for name, present in (("conv", head.conv_ch), ("fc", head.fc_ch), ("classifier", True))
                   if present]
        axes: AxisMap = {"in": [Axis(f"{readers[0]}.weight", 1)]}
        if head.conv_ch:
            axes["conv"] = [Axis("conv.weight", 0, producer=True), *_bn_axes("bn1"), Axis(f"{readers[1]}.weight", 1)]
        if head.fc_ch:
            axes["fc"] = [Axis("fc.weight", 0, producer=True), Axis("fc.bias", 0), Axis("classifier.weight", 1)]
        return axes


BLOCKS: dict[str, type[ConvLayer | DepthwiseSeparable | InvertedResidual]] = {
    "conv": ConvLayer,
    "dwconv": DepthwiseSeparable,
    "mbconv": InvertedResidual,
}


def layer_axes(layer: Layer) -> AxisMap:
    """The channel axes of the block that builds ``layer`` (see :class:`Axis` for the roles)."""
    return BLOCKS[layer.op].channel_axes(layer)
