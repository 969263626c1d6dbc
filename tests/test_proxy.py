"""Proxy networks (space.proxy): the fewest early strides at 1 that keep the last stage's map."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import UserError
from space.proxy import proxy_spec
from space.searchspace import SPACES, get_space


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_every_sampled_network_keeps_a_2x2_map_with_the_fewest_reductions(space_name, resolution):
    sp = get_space(space_name)
    rng = np.random.default_rng(0)
    for _ in range(200):
        spec = sp.decode(sp.sample(rng), num_classes=10, in_channels=1)
        proxy, plan = proxy_spec(spec, resolution)
        assert proxy.resolution == resolution and proxy.final_resolution == plan.final_map >= 2
        if plan.reduced:  # one reduction fewer would leave the map below 2x2
            assert math.ceil(resolution / (plan.total_stride * 2)) < 2
        assert plan.total_stride == plan.deploy_total_stride // 2 ** len(plan.reduced)
        # only strides change: every other field of every layer, the stem and the head are the deployment's
        assert [(la.op, la.kernel, la.in_ch, la.out_ch, la.exp_ch, la.se_ch, la.residual) for la in proxy.layers] == \
               [(la.op, la.kernel, la.in_ch, la.out_ch, la.exp_ch, la.se_ch, la.residual) for la in spec.layers]
        assert proxy.head == spec.head and proxy.stem.out_ch == spec.stem.out_ch


def test_the_stem_goes_first_then_the_earliest_stages():
    sp = get_space("mnasnet")
    spec = sp.decode(sp.sample(3))
    strided = [i for i, la in enumerate(spec.layers) if la.stride == 2]
    expect = {224: [], 64: [], 32: ["stem"], 16: ["stem", f"layers[{strided[0]}]"],
              8: ["stem", f"layers[{strided[0]}]", f"layers[{strided[1]}]"]}
    for res, reduced in expect.items():
        proxy, plan = proxy_spec(spec, res)
        assert list(plan.reduced) == reduced, res
        assert proxy.stem.stride == (1 if reduced else 2)
        assert [i for i, la in enumerate(proxy.layers) if la.stride == 2] == strided[len(reduced) - (1 if reduced else 0):]
    _, plan = proxy_spec(spec, 8)
    assert plan.to_dict() == {"train_resolution": 8, "min_map": 2,
                              "reduced_strides": ["stem", f"layers[{strided[0]}]", f"layers[{strided[1]}]"],
                              "total_stride": 4, "deploy_total_stride": 32, "final_map": 2}
    assert "last stage map 2x2" in plan.describe()


def test_min_map_one_trains_the_deployment_strides():
    sp = get_space("mnasnet")
    spec = sp.decode(sp.sample(1))
    proxy, plan = proxy_spec(spec, 8, min_map=1)
    assert plan.reduced == () and proxy.layers == spec.layers and plan.final_map == 1
    proxy, plan = proxy_spec(spec, 32, min_map=4)
    assert plan.final_map == 4 and plan.reduced == ("stem", "layers[1]")


def test_proxy_weights_load_into_the_deployment_network():
    import torch

    from space.builder import build_model

    sp = get_space("mnasnet")
    spec = sp.decode(sp.sample(5), num_classes=10, in_channels=1)
    proxy, _ = proxy_spec(spec, 8)
    trained = build_model(proxy)
    deployed = build_model(spec)
    deployed.load_state_dict(trained.state_dict())  # strict: every name and shape matches
    deployed.eval(), trained.eval()
    with torch.no_grad():
        assert trained(torch.randn(2, 1, 8, 8)).shape == deployed(torch.randn(2, 1, 224, 224)).shape == (2, 10)


@pytest.mark.parametrize("resolution,min_map", [(1, 2), (3, 4), (0, 2)])
def test_too_small_a_resolution_is_one_clear_error(resolution, min_map):
    sp = get_space("mnasnet")
    with pytest.raises(UserError, match="too small|positive") as e:
        proxy_spec(sp.decode(sp.sample(0)), resolution, min_map)
    assert "\n" not in str(e.value)


def test_mnasnet_cifar_is_mnasnet_trained_at_32_px():
    """The ``mnasnet_cifar`` space decodes every token list to the network a search trains from ``mnasnet``
    at 32x32 (the stem at stride 1), so a latency table and NetAdapt see the network as trained; its
    body units at 32 px are ``mnasnet``'s at 64 px."""
    from dataclasses import replace

    from latency.sampling import _stage_units

    base, cifar = get_space("mnasnet"), get_space("mnasnet_cifar")
    assert [d.choices for d in base.decisions] == [d.choices for d in cifar.decisions]
    rng = np.random.default_rng(1)
    for _ in range(50):
        tokens = base.sample(rng)
        proxy, plan = proxy_spec(base.decode(tokens, 32, 10, 3), 32)
        net = cifar.decode(tokens, 32, 10, 3)
        assert plan.reduced == ("stem",) and replace(proxy, name="") == replace(net, name="")
        assert proxy_spec(net, 32)[1].reduced == ()  # already the proxy: nothing more to reduce
        assert cifar.encode(proxy) == cifar.canonical(tokens)
    assert _stage_units(cifar, 32) == _stage_units(base, 64)
