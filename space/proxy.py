"""Proxy networks: a candidate with its early strides reduced so that small training images still
leave its last stage a spatial map.

A deployment network for 224x224 input downsamples 32 times (a stem and four stages of stride 2).
Trained on 8x8 or 32x32 images as it stands, its later stages see a 1x1 map, where a kxk depthwise
conv is a per-channel scale: kernel size, and with it most of the space's decisions, could not
change the proxy's accuracy. The CIFAR versions of MobileNetV2 and MnasNet keep the stem and the
first stages at stride 1 instead (Sandler et al. 2018 and Tan et al. 2019 train their CIFAR
transfers on upsampled images; the common CIFAR ports set the stem and first stride-2 stage to
stride 1). :func:`proxy_spec` does the same: it sets the stem's stride and then the earliest
stride-2 layers' (each the first layer of a stage) to 1, one at a time, until the last stage's
map at the training resolution is at least ``min_map`` x ``min_map``.

Strides do not change any weight's shape, so the weights trained on the proxy load into the
deployment network (and NetAdapt's surgery) unchanged; latency is always that of the deployment
network at its own resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from common.errors import UserError
from space.archspec import ArchSpec

DEFAULT_MIN_MAP = 2


@dataclass(frozen=True)
class ProxyPlan:
    """What was trained: the resolution, which strides were set to 1, and the maps that result.

    ``reduced`` names the convs whose stride went from 2 to 1 (``stem``, ``layers[i]``);
    ``total_stride`` is the proxy's downsampling factor (the deployment network's is
    ``deploy_total_stride``); ``final_map`` the side of the last stage's map at ``resolution``.
    """

    resolution: int
    min_map: int
    reduced: tuple[str, ...]
    total_stride: int
    deploy_total_stride: int
    final_map: int

    def to_dict(self) -> dict[str, Any]:
        return {"train_resolution": self.resolution, "min_map": self.min_map, "reduced_strides": list(self.reduced),
                "total_stride": self.total_stride, "deploy_total_stride": self.deploy_total_stride,
                "final_map": self.final_map}

    def describe(self) -> str:
        what = ", ".join(self.reduced) if self.reduced else "none"
        return (f"{self.resolution}px, strides set to 1: {what} (total stride {self.total_stride} instead of "
                f"{self.deploy_total_stride}), last stage map {self.final_map}x{self.final_map}")


def _strided(spec: ArchSpec) -> list[str]:
    """Names of the stride-2 convs, input side first."""
    names = ["stem"] if spec.stem.stride == 2 else []
    return names + [f"layers[{i}]" for i, layer in enumerate(spec.layers) if layer.stride == 2]


def _total_stride(spec: ArchSpec) -> int:
    return 2 ** len(_strided(spec))


def _with_stride_one(spec: ArchSpec, name: str) -> ArchSpec:
    if name == "stem":
        return replace(spec, stem=replace(spec.stem, stride=1))
    i = int(name[len("layers["):-1])
    layers = list(spec.layers)
    layers[i] = replace(layers[i], stride=1)
    return spec.with_layers(layers)


def proxy_spec(spec: ArchSpec, resolution: int, min_map: int = DEFAULT_MIN_MAP) -> tuple[ArchSpec, ProxyPlan]:
    """``spec`` at ``resolution`` with the fewest early strides set to 1 that leave the last stage a
    map of at least ``min_map`` x ``min_map``, and a :class:`ProxyPlan` of what changed.

    A network whose map is already large enough comes back unchanged apart from its resolution.
    Raises :class:`UserError` when even with every stride at 1 the map would be smaller than
    ``min_map`` (a resolution below ``min_map``).
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise UserError(f"training resolution {resolution!r} must be a positive whole number of pixels")
    if isinstance(min_map, bool) or not isinstance(min_map, int) or min_map < 1:
        raise UserError(f"minimum map size {min_map!r} must be a positive whole number of pixels")
    check_proxy_resolution(resolution, min_map)
    deploy_stride = _total_stride(spec)
    out = replace(spec, resolution=resolution)
    reduced: list[str] = []
    for name in _strided(spec):
        if out.final_resolution >= min_map:
            break
        out = _with_stride_one(out, name)
        reduced.append(name)
    plan = ProxyPlan(resolution, min_map, tuple(reduced), _total_stride(out), deploy_stride, out.final_resolution)
    return out, plan


def check_proxy_resolution(resolution: int, min_map: int = DEFAULT_MIN_MAP) -> None:
    """Refuse, with one line, a training resolution no proxy network can serve (see :func:`proxy_spec`)."""
    if resolution < min_map:
        raise UserError(f"training resolution {resolution}px is too small for a {min_map}x{min_map} last-stage map "
                        f"even with every stride at 1; train at {min_map}px or more")
