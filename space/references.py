"""Published mobile networks as ArchSpecs, by name.

Parameter counts at 224x224 / 1000 classes match torchvision's definitions exactly
(MobileNetV2 3,504,872; MobileNetV3-Large 5,483,032; MobileNetV3-Small 2,542,856);
MnasNet-A1 follows the paper's Figure 7 (Tan et al. 2019) with SE squeeze channels a quarter of
the block's input channels as in the reference TensorFlow code.
"""

from __future__ import annotations

from collections.abc import Callable

from space.archspec import ArchSpec, Head, Layer, Stem
from space.errors import SpecError


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without going more than 10% below it
    (the rule of the MobileNet reference code, so channel counts here match the published ones)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def block(in_ch: int, k: int, exp: int, out: int, se: int, act: str, stride: int, op: str | None = None) -> Layer:
    """One body layer; ``op`` defaults to ``dwconv`` when there is no expansion (exp == in)."""
    if op is None:
        op = "dwconv" if exp == in_ch else "mbconv"
    return Layer(op, k, stride, in_ch, out, exp, se, act, residual=stride == 1 and in_ch == out)


def _v3(rows: list[tuple], stem_act: str = "hswish") -> list[Layer]:
    # rows: (in, kernel, exp, out, use_se, act, stride) as in the MobileNetV3 paper's Tables 1-2.
    acts = {"RE": "relu", "HS": "hswish"}
    return [
        block(i, k, e, o, make_divisible(e // 4) if se else 0, acts[a], s)
        for i, k, e, o, se, a, s in rows
    ]


def mobilenet_v2() -> ArchSpec:
    """MobileNetV2 1.0 (Sandler et al. 2018), Table 2: (t, c, n, s) per stage."""
    layers, cin = [], 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            layers.append(block(cin, 3, cin * t, c, 0, "relu6", s if i == 0 else 1))
            cin = c
    return ArchSpec(Stem(32, 3, 2, "relu6"), tuple(layers), Head(1280, "relu6", "avg", 0), dropout=0.2, name="mobilenet_v2")


def mobilenet_v3_large() -> ArchSpec:
    """MobileNetV3-Large 1.0 (Howard et al. 2019), Table 1."""
    rows = [
        (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
        (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
        (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
        (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
        (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
    ]
    return ArchSpec(Stem(16, 3, 2, "hswish"), tuple(_v3(rows)), Head(960, "hswish", "avg", 1280), dropout=0.2, name="mobilenet_v3_large")


def mobilenet_v3_small() -> ArchSpec:
    """MobileNetV3-Small 1.0 (Howard et al. 2019), Table 2."""
    rows = [
        (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
        (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
        (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
    ]
    return ArchSpec(Stem(16, 3, 2, "hswish"), tuple(_v3(rows)), Head(576, "hswish", "avg", 1024), dropout=0.2, name="mobilenet_v3_small")


def mnasnet_a1() -> ArchSpec:
    """MnasNet-A1 (Tan et al. 2019), Figure 7: (op, expansion, kernel, stride, out, layers, SE)."""
    stages = [
        ("dwconv", 1, 3, 1, 16, 1, False), ("mbconv", 6, 3, 2, 24, 2, False), ("mbconv", 3, 5, 2, 40, 3, True),
        ("mbconv", 6, 3, 2, 80, 4, False), ("mbconv", 6, 3, 1, 112, 2, True), ("mbconv", 6, 5, 2, 160, 3, True),
        ("mbconv", 6, 3, 1, 320, 1, False),
    ]
    layers, cin = [], 32
    for op, t, k, s, c, n, se in stages:
        for i in range(n):
            layers.append(block(cin, k, cin * t, c, max(1, cin // 4) if se else 0, "relu", s if i == 0 else 1, op))
            cin = c
    return ArchSpec(Stem(32, 3, 2, "relu"), tuple(layers), Head(1280, "relu", "avg", 0), dropout=0.2, name="mnasnet_a1")


REFERENCES: dict[str, Callable[[], ArchSpec]] = {
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "mnasnet_a1": mnasnet_a1,
}

# Published MACs (millions) of the reference networks at 224x224, from their papers.
PUBLISHED_MMACS = {"mobilenet_v2": 300, "mobilenet_v3_large": 217, "mobilenet_v3_small": 56, "mnasnet_a1": 312}


def reference(name: str) -> ArchSpec:
    try:
        return REFERENCES[name]()
    except KeyError:
        raise SpecError(f"{name!r} is not a reference network; choose one of {', '.join(REFERENCES)}") from None
