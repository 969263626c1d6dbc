"""Reference networks: exact torchvision parameter counts, published MACs, builder agreement."""

from __future__ import annotations

import pytest
import torch

from space.builder import build_model
from space.cost import cost
from space.references import PUBLISHED_MMACS, REFERENCES, make_divisible

TORCHVISION_PARAMS = {"mobilenet_v2": 3_504_872, "mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_params_equal_torchvision(name):
    assert cost(REFERENCES[name]()).params == TORCHVISION_PARAMS[name]


def test_mnasnet_a1_params_near_published():
    assert abs(cost(REFERENCES["mnasnet_a1"]()).params / 3.9e6 - 1) < 0.03


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
