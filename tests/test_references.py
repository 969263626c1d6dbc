"""Reference networks: exact torchvision parameter counts, the papers' layer tables, SE gates and
BatchNorm settings, published MACs and parameters at width multipliers, builder agreement."""

from __future__ import annotations

import pytest
import torch

from space.builder import build_model
from space.cost import cost
from space.references import PUBLISHED_MMACS, REFERENCES, make_divisible, reference

TORCHVISION_PARAMS = {"mobilenet_v2": 3_504_872, "mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_params_equal_torchvision(name):
    assert cost(REFERENCES[name]()).params == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name,published", [("mnasnet_a1", 3.9e6), ("mobilenet_v1", 4.2e6)])
def test_params_near_published_where_torchvision_has_none(name, published):
    assert abs(cost(REFERENCES[name]()).params / published - 1) < 0.03


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_macs_near_published(name):
    assert abs(cost(REFERENCES[name]()).macs / (PUBLISHED_MMACS[name] * 1e6) - 1) < 0.05


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_cost_model_equals_built_module(name):
    spec = REFERENCES[name]()
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == cost(spec).params
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_make_divisible_matches_mobilenet_rule():
    assert [make_divisible(v) for v in (12, 18, 30, 72 / 4, 120 / 4, 960 / 4)] == [16, 24, 32, 24, 32, 240]


# ---- layer tables as the papers print them -------------------------------------------------------
# Each row: input side, op, kernel, expansion ("-" when the op has none), output channels,
# SE (yes/no), activation, stride. Transcribed from the papers, not from space/references.py.
PAPER_TABLES = {
    # MobileNetV1, Table 1 (the 7x7 "s2" separable layer is stride 1 in every implementation).
    "mobilenet_v1": """
        112 dw 3 - 64 no relu 1 | 112 dw 3 - 128 no relu 2 | 56 dw 3 - 128 no relu 1 | 56 dw 3 - 256 no relu 2
        28 dw 3 - 256 no relu 1 | 28 dw 3 - 512 no relu 2 | 14 dw 3 - 512 no relu 1 | 14 dw 3 - 512 no relu 1
        14 dw 3 - 512 no relu 1 | 14 dw 3 - 512 no relu 1 | 14 dw 3 - 512 no relu 1 | 14 dw 3 - 1024 no relu 2
        7 dw 3 - 1024 no relu 1""",
    # MobileNetV2, Table 2 expanded to layers: t=1 first bottleneck, then t=6.
    "mobilenet_v2": """
        112 dw 3 - 16 no relu6 1 | 112 mb 3 96 24 no relu6 2 | 56 mb 3 144 24 no relu6 1
        56 mb 3 144 32 no relu6 2 | 28 mb 3 192 32 no relu6 1 | 28 mb 3 192 32 no relu6 1
        28 mb 3 192 64 no relu6 2 | 14 mb 3 384 64 no relu6 1 | 14 mb 3 384 64 no relu6 1 | 14 mb 3 384 64 no relu6 1
        14 mb 3 384 96 no relu6 1 | 14 mb 3 576 96 no relu6 1 | 14 mb 3 576 96 no relu6 1
        14 mb 3 576 160 no relu6 2 | 7 mb 3 960 160 no relu6 1 | 7 mb 3 960 160 no relu6 1 | 7 mb 3 960 320 no relu6 1""",
    # MobileNetV3-Large, Table 1.
    "mobilenet_v3_large": """
        112 dw 3 - 16 no relu 1 | 112 mb 3 64 24 no relu 2 | 56 mb 3 72 24 no relu 1 | 56 mb 5 72 40 yes relu 2
        28 mb 5 120 40 yes relu 1 | 28 mb 5 120 40 yes relu 1 | 28 mb 3 240 80 no hswish 2 | 14 mb 3 200 80 no hswish 1
        14 mb 3 184 80 no hswish 1 | 14 mb 3 184 80 no hswish 1 | 14 mb 3 480 112 yes hswish 1
        14 mb 3 672 112 yes hswish 1 | 14 mb 5 672 160 yes hswish 2 | 7 mb 5 960 160 yes hswish 1
        7 mb 5 960 160 yes hswish 1""",
    # MobileNetV3-Small, Table 2.
    "mobilenet_v3_small": """
        112 dw 3 - 16 yes relu 2 | 56 mb 3 72 24 no relu 2 | 28 mb 3 88 24 no relu 1 | 28 mb 5 96 40 yes hswish 2
        14 mb 5 240 40 yes hswish 1 | 14 mb 5 240 40 yes hswish 1 | 14 mb 5 120 48 yes hswish 1
        14 mb 5 144 48 yes hswish 1 | 14 mb 5 288 96 yes hswish 2 | 7 mb 5 576 96 yes hswish 1
        7 mb 5 576 96 yes hswish 1""",
    # MnasNet-A1, Figure 7: SepConv k3x3, MBConv6 k3x3 x2, MBConv3 k5x5 SE x3, MBConv6 k3x3 x4,
    # MBConv6 k3x3 SE x2, MBConv6 k5x5 SE x3, MBConv6 k3x3 x1.
    "mnasnet_a1": """
        112 dw 3 - 16 no relu 1 | 112 mb 3 96 24 no relu 2 | 56 mb 3 144 24 no relu 1
        56 mb 5 72 40 yes relu 2 | 28 mb 5 120 40 yes relu 1 | 28 mb 5 120 40 yes relu 1
        28 mb 3 240 80 no relu 2 | 14 mb 3 480 80 no relu 1 | 14 mb 3 480 80 no relu 1 | 14 mb 3 480 80 no relu 1
        14 mb 3 480 112 yes relu 1 | 14 mb 3 672 112 yes relu 1 | 14 mb 5 672 160 yes relu 2
        7 mb 5 960 160 yes relu 1 | 7 mb 5 960 160 yes relu 1 | 7 mb 3 960 320 no relu 1""",
}
# SE gate and how the squeeze is sized, per paper: MobileNetV3 a quarter of the expansion rounded
# to 8 with a hard sigmoid; MnasNet (reference code) a quarter of the block's input with a sigmoid.
SE_RULE = {"mobilenet_v3_large": ("hsigmoid", lambda layer: make_divisible(layer.exp_ch // 4)),
           "mobilenet_v3_small": ("hsigmoid", lambda layer: make_divisible(layer.exp_ch // 4)),
           "mnasnet_a1": ("sigmoid", lambda layer: max(1, layer.in_ch // 4))}
BATCHNORM = {"mobilenet_v1": (1e-3, 0.003), "mobilenet_v2": (1e-5, 0.1), "mobilenet_v3_large": (1e-3, 0.01),
             "mobilenet_v3_small": (1e-3, 0.01), "mnasnet_a1": (1e-3, 0.01)}


def _paper_rows(name: str) -> list[tuple]:
    rows = []
    for cell in PAPER_TABLES[name].replace("\n", "|").split("|"):
        if cell.strip():
            res, op, k, exp, out, se, act, s = cell.split()
            rows.append((int(res), {"dw": "dwconv", "mb": "mbconv"}[op], int(k), None if exp == "-" else int(exp),
                         int(out), se == "yes", act, int(s)))
    return rows


@pytest.mark.parametrize("name", sorted(PAPER_TABLES))
def test_layer_table_matches_the_paper(name):
    spec = reference(name)
    rows = _paper_rows(name)
    assert len(spec.layers) == len(rows)
    for i, (layer, res, row) in enumerate(zip(spec.layers, spec.layer_resolutions(), rows)):
        want_res, op, k, exp, out, se, act, s = row
        got = (res, layer.op, layer.kernel, layer.exp_ch if layer.op == "mbconv" else None, layer.out_ch,
               layer.se_ch > 0, layer.act, layer.stride)
        assert got == row, f"{name} layer {i}: {got} != paper {row}"
        if se:
            gate, size = SE_RULE[name]
            assert spec.se_gate == gate and layer.se_ch == size(layer), f"{name} layer {i} SE"
        assert layer.pw_act == (name == "mobilenet_v1")


@pytest.mark.parametrize("name", sorted(BATCHNORM))
def test_gate_and_batchnorm_reach_the_built_modules(name):
    spec = reference(name)
    model = build_model(spec)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all((m.eps, m.momentum) == BATCHNORM[name] for m in bns)
    gates = {type(m.gate) for m in model.modules() if type(m).__name__ == "SqueezeExcite"}
    want = {"sigmoid": torch.nn.Sigmoid, "hsigmoid": torch.nn.Hardsigmoid}
    assert gates == ({want[SE_RULE[name][0]]} if name in SE_RULE else set())


# Published (MACs in millions, parameters in millions) of width-scaled networks at 224x224:
# MobileNetV1 Table 6, MobileNetV3 Table 3, MobileNetV2 as released with TF-slim (1.4: 582M MACs).
SCALED = {("mobilenet_v1", 0.75): (325, 2.6), ("mobilenet_v1", 0.5): (149, 1.3), ("mobilenet_v1", 0.25): (41, 0.5),
          ("mobilenet_v3_large", 0.75): (155, 4.0), ("mobilenet_v3_small", 0.75): (44, 2.0),
          ("mobilenet_v2", 1.4): (582, 6.06), ("mobilenet_v2", 0.75): (209, 2.61), ("mobilenet_v2", 0.5): (97, 1.95),
          ("mobilenet_v2", 0.35): (59, 1.66)}


@pytest.mark.parametrize("name,width", sorted(SCALED))
def test_width_multiplier_gives_the_published_networks(name, width):
    mmacs, mparams = SCALED[(name, width)]
    c = cost(reference(name, width))
    assert abs(c.macs / 1e6 / mmacs - 1) < 0.03
    # Within 5%, or half the last digit the paper prints (0.1M for MobileNetV1 and V3).
    assert abs(c.params / 1e6 - mparams) <= max(0.05 * mparams, 0.05)
    spec = reference(name, width)
    chans = [spec.stem.out_ch] + [x for layer in spec.layers for x in (layer.exp_ch, layer.out_ch)]
    assert all(ch % 8 == 0 for ch in chans), "channels are rounded to multiples of 8"


def test_width_one_is_the_reference_and_resolution_is_applied():
    for name in REFERENCES:
        assert reference(name, 1.0) == REFERENCES[name]()
    spec = reference("mobilenet_v3_small", 0.5, 96)
    assert spec.resolution == 96 and spec.name == "mobilenet_v3_small_x0.5"
    assert spec.layer_resolutions()[0] == 48
