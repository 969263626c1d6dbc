"""Published mobile networks as ArchSpecs, by name, at any width multiplier and resolution.

Each builder follows its paper's layer table and its reference implementation where the paper is
silent: MobileNetV1 (Howard et al. 2017, Table 1), MobileNetV2 (Sandler et al. 2018, Table 2),
MobileNetV3-Large/-Small (Howard et al. 2019, Tables 1-2) and MnasNet-A1 (Tan et al. 2019,
Figure 7). What the papers set differently is part of each spec:

=================  =======================  ============================  =========================
network            SE gate                  SE squeeze channels           BatchNorm (eps, momentum)
=================  =======================  ============================  =========================
MobileNetV1        (no SE)                  -                             TF-slim: 1e-3, 0.003
MobileNetV2        (no SE)                  -                             torchvision: 1e-5, 0.1
MobileNetV3        hard sigmoid             expansion / 4, to 8           TF: 1e-3, 0.01
MnasNet-A1         sigmoid                  block input / 4               TF: 1e-3, 0.01
=================  =======================  ============================  =========================

At width 1.0 and 224x224 the parameter counts equal torchvision's definitions (MobileNetV2
3,504,872; MobileNetV3-Large 5,483,032; MobileNetV3-Small 2,542,856). torchvision has no
MnasNet-A1 (its ``mnasnet1_0`` is MnasNet-B1) and no MobileNetV1: their counts are compared with
the papers' 3.9M and 4.2M.

Width multipliers scale channels as each family's reference code does, rounded to multiples of 8
with :func:`make_divisible`, so that the published figures of the scaled networks come out:

* MobileNetV1: every layer (0.75: 325M MACs, 2.6M parameters; 0.5: 149M, 1.3M, as in Table 6).
* MobileNetV2: every layer, and the 1280-channel last conv only for widths above 1 ("we apply
  width multiplier to all layers except the very last convolutional layer"; 1.4: 582M MACs).
* MobileNetV3: the bottleneck widths, with each expansion the table's ratio times the *scaled*
  input (TensorFlow's definition; torchvision scales the table's absolute expansions instead,
  which gives 140M rather than the paper's 155M MACs at 0.75); the last 1x1 conv scales, the
  1280 (Large) / 1024 (Small) FC does not (Large 0.75: 155M MACs, 4.0M parameters; Small 0.75:
  43M, 2.0M, as in Table 3). At width 1.0 both definitions are the same network.
* MnasNet-A1: every layer but the 1280-channel last conv (the reference code and torchvision keep it).
"""

from __future__ import annotations

from collections.abc import Callable

from space.archspec import TF_BN_EPS, TF_BN_MOMENTUM, ArchSpec, Head, Layer, Stem
from space.errors import SpecError

WIDTH_RANGE = (0.1, 4.0)


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


def _spec(stem: Stem, layers: list[Layer], head: Head, name: str, width: float, resolution: int, **kw) -> ArchSpec:
    label = name if width == 1.0 else f"{name}_x{width:g}"
    return ArchSpec(stem, tuple(layers), head, resolution=resolution, dropout=0.2, name=label, **kw)


def mobilenet_v1(width: float = 1.0, resolution: int = 224) -> ArchSpec:
    """MobileNetV1 (Howard et al. 2017), Table 1: a 3x3 conv, then 13 depthwise-separable layers
    (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU), average pooling and the classifier.
    The table's last separable layer reads "s2" on a 7x7 input that stays 7x7; it has stride 1,
    as in every implementation. BatchNorm as in the TF-slim reference (eps 1e-3, decay 0.997)."""
    c = lambda ch: make_divisible(ch * width)  # noqa: E731 - one rule, used on every row
    rows = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    layers, cin = [], c(32)
    for out, s in rows:
        layers.append(Layer("dwconv", 3, s, cin, c(out), cin, 0, "relu", False, pw_act=True))
        cin = c(out)
    return _spec(Stem(c(32), 3, 2, "relu"), layers, Head(0, "relu", "avg", 0), "mobilenet_v1", width, resolution,
                 se_gate="hsigmoid", bn_eps=1e-3, bn_momentum=0.003)


def mobilenet_v2(width: float = 1.0, resolution: int = 224) -> ArchSpec:
    """MobileNetV2 (Sandler et al. 2018), Table 2: (t, c, n, s) per stage; BatchNorm with PyTorch's
    defaults, as torchvision's definition has it."""
    c = lambda ch: make_divisible(ch * width)  # noqa: E731
    layers, cin = [], c(32)
    for t, ch, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                        (6, 320, 1, 1)]:
        for i in range(n):
            layers.append(block(cin, 3, cin * t, c(ch), 0, "relu6", s if i == 0 else 1))
            cin = c(ch)
    head = Head(make_divisible(1280 * max(1.0, width)), "relu6", "avg", 0)
    return _spec(Stem(c(32), 3, 2, "relu6"), layers, head, "mobilenet_v2", width, resolution,
                 se_gate="hsigmoid", bn_eps=1e-5, bn_momentum=0.1)


def _v3(rows: list[tuple], width: float) -> list[Layer]:
    # rows: (in, kernel, exp, out, use_se, act, stride) as in the MobileNetV3 paper's Tables 1-2;
    # the expansion keeps the table's ratio exp / in on the scaled input (see the module docstring).
    acts = {"RE": "relu", "HS": "hswish"}
    c = lambda ch: make_divisible(ch * width)  # noqa: E731
    layers, cin = [], c(rows[0][0])
    for i, k, e, o, se, a, s in rows:
        exp = cin if e == i else make_divisible(cin * e / i)
        layers.append(block(cin, k, exp, c(o), make_divisible(exp // 4) if se else 0, acts[a], s))
        cin = c(o)
    return layers


def mobilenet_v3_large(width: float = 1.0, resolution: int = 224) -> ArchSpec:
    """MobileNetV3-Large (Howard et al. 2019), Table 1."""
    rows = [
        (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
        (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
        (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
        (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
        (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
    ]
    layers = _v3(rows, width)
    head = Head(6 * layers[-1].out_ch, "hswish", "avg", 1280)
    return _spec(Stem(make_divisible(16 * width), 3, 2, "hswish"), layers, head, "mobilenet_v3_large", width,
                 resolution, se_gate="hsigmoid", bn_eps=TF_BN_EPS, bn_momentum=TF_BN_MOMENTUM)


def mobilenet_v3_small(width: float = 1.0, resolution: int = 224) -> ArchSpec:
    """MobileNetV3-Small (Howard et al. 2019), Table 2."""
    rows = [
        (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
        (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
        (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
        (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
    ]
    layers = _v3(rows, width)
    head = Head(6 * layers[-1].out_ch, "hswish", "avg", 1024)
    return _spec(Stem(make_divisible(16 * width), 3, 2, "hswish"), layers, head, "mobilenet_v3_small", width,
                 resolution, se_gate="hsigmoid", bn_eps=TF_BN_EPS, bn_momentum=TF_BN_MOMENTUM)


def mnasnet_se_channels(in_ch: int, ratio: float = 0.25) -> int:
    """MnasNet's SE squeeze channels: a ratio of the block's *input* channels, at least 1 (the
    reference TensorFlow code's ``max(1, int(input_filters * se_ratio))``)."""
    return max(1, int(in_ch * ratio))


def mnasnet_a1(width: float = 1.0, resolution: int = 224) -> ArchSpec:
    """MnasNet-A1 (Tan et al. 2019), Figure 7: (op, expansion, kernel, stride, out, layers, SE)."""
    stages = [
        ("dwconv", 1, 3, 1, 16, 1, False), ("mbconv", 6, 3, 2, 24, 2, False), ("mbconv", 3, 5, 2, 40, 3, True),
        ("mbconv", 6, 3, 2, 80, 4, False), ("mbconv", 6, 3, 1, 112, 2, True), ("mbconv", 6, 5, 2, 160, 3, True),
        ("mbconv", 6, 3, 1, 320, 1, False),
    ]
    c = lambda ch: make_divisible(ch * width)  # noqa: E731
    layers, cin = [], c(32)
    for op, t, k, s, ch, n, se in stages:
        for i in range(n):
            layers.append(block(cin, k, cin * t, c(ch), mnasnet_se_channels(cin) if se else 0, "relu",
                                s if i == 0 else 1, op))
            cin = c(ch)
    return _spec(Stem(c(32), 3, 2, "relu"), layers, Head(1280, "relu", "avg", 0), "mnasnet_a1", width, resolution,
                 se_gate="sigmoid", bn_eps=TF_BN_EPS, bn_momentum=TF_BN_MOMENTUM)


REFERENCES: dict[str, Callable[..., ArchSpec]] = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3_large,
    "mobilenet_v3_small": mobilenet_v3_small,
    "mnasnet_a1": mnasnet_a1,
}

# Published MACs (millions) of the reference networks at width 1.0 and 224x224, from their papers.
PUBLISHED_MMACS = {"mobilenet_v1": 569, "mobilenet_v2": 300, "mobilenet_v3_large": 217, "mobilenet_v3_small": 56,
                   "mnasnet_a1": 312}


def reference(name: str, width: float = 1.0, resolution: int = 224) -> ArchSpec:
    """The reference network ``name`` at width multiplier ``width`` and input ``resolution``."""
    if name not in REFERENCES:
        raise SpecError(f"{name!r} is not a reference network; choose one of {', '.join(REFERENCES)}")
    lo, hi = WIDTH_RANGE
    if not lo <= width <= hi:
        raise SpecError(f"width multiplier {width:g} is outside {lo:g}..{hi:g}; the papers use 0.25-1.4")
    if resolution < 8:
        raise SpecError(f"resolution {resolution} is too small for a reference network; give at least 8")
    return REFERENCES[name](width, resolution)
