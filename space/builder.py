"""ArchSpec -> torch.nn.Module: the one builder every network goes through."""

from __future__ import annotations

import torch
from torch import nn

from space.archspec import ArchSpec, Layer
from space.blocks import BLOCKS, ClassifierHead, Parts, StemConv


class Network(nn.Module):
    """``stem -> blocks -> head``; ``spec`` is kept so a module always knows what it is."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        parts = Parts.of(spec)
        self.stem = StemConv(spec.in_channels, spec.stem, parts)
        self.blocks = nn.Sequential(*(build_layer(layer, parts) for layer in spec.layers))
        self.head = ClassifierHead(spec.body_ch, spec.head, spec.num_classes, spec.dropout, parts)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def build_layer(layer: Layer, parts: Parts | None = None) -> nn.Module:
    """One body layer; ``parts`` (SE gate, BatchNorm) default to MobileNetV3's."""
    return BLOCKS[layer.op](layer, parts)


def build_model(spec: ArchSpec) -> Network:
    """Build the network an ArchSpec describes, with MobileNet-style initialisation."""
    return Network(spec)


def _init_weights(model: nn.Module) -> None:
    # Kaiming-normal (fan out) convs, unit BN, small-normal linears: torchvision's MobileNet scheme.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
