"""Search space: declared as data, lossless tokens <-> ArchSpec, exact size, seeded sampling."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
import torch

from common.errors import UserError
from space.archspec import Head, Stem
from space.builder import build_model
from space.errors import SpecError
from space.references import make_divisible, mobilenet_v2
from space.searchspace import SPACES, SearchSpace, StageSkeleton, get_space


@pytest.mark.parametrize("name", sorted(SPACES))
def test_thousand_samples_round_trip(name):
    space = get_space(name)
    rng = np.random.default_rng(0)
    for _ in range(1000):
        tokens = space.sample(rng)
        spec = space.decode(tokens)
        assert space.encode(spec) == tokens
        assert space.decode(space.encode(spec)) == spec


def test_samples_build_and_run_at_224_and_32():
    # The model is resolution independent (global pooling), so one build serves both inputs.
    space = get_space("mnasnet")
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(40):
            spec = space.decode(space.sample(rng), num_classes=10)
            model = build_model(spec).eval()
            for res in (224, 32):
                out = model(torch.randn(1, 3, res, res))
                assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_mnasnet_space_shape():
    space = get_space("mnasnet")
    assert len(space.stages) == 7 and len(space.decisions) == 49
    names = [d.name for d in space.decisions[:7]]
    assert names == ["s0.op", "s0.kernel", "s0.se", "s0.skip", "s0.filters", "s0.layers", "s0.act"]
    by_name = {d.name: d.choices for d in space.decisions}
    assert by_name["s0.op"] == ("conv", "dwconv", "mbconv3", "mbconv6")
    assert by_name["s3.filters"] == (48, 64, 80)  # x0.75, x1, x1.25 of MobileNetV2's 64
    assert by_name["s3.layers"] == (3, 4, 5)
    assert by_name["s0.layers"] == (1, 2)  # 1 - 1 layers is clamped to 1 and merged
    assert all(c % 8 == 0 for d in space.decisions if d.name.endswith("filters") for c in d.choices)


def test_decode_values():
    space = get_space("mnasnet")
    tokens = [0] * len(space.decisions)
    tokens[0:7] = [3, 1, 1, 0, 1, 1, 1]  # s0: mbconv6 k5 se id 24ch 2 layers hswish
    spec = space.decode(tokens)
    l0, l1 = spec.layers[:2]
    assert (l0.op, l0.kernel, l0.in_ch, l0.exp_ch, l0.out_ch, l0.act) == ("mbconv", 5, 32, 192, 24, "hswish")
    # MnasNet sizes the squeeze from the block's input (32 / 4), MobileNetV3 from the expansion.
    assert l0.se_ch == 8 and not l0.residual and spec.se_gate == "sigmoid"
    assert l1.residual and l1.exp_ch == 144 and l1.stride == 1 and l1.se_ch == 24 // 4
    v3 = get_space("mobilenet_v3")
    t3 = [0] * len(v3.decisions)
    t3[0:7] = [3, 1, 1, 0, 1, 1, 1]
    m = v3.decode(t3)
    assert m.se_gate == "hsigmoid" and m.layers[0].se_ch == make_divisible(m.layers[0].exp_ch / 4)


@pytest.mark.parametrize("stem_ch", [16, 32])
def test_size_counts_distinct_networks(stem_ch):
    space = SearchSpace("one", Stem(stem_ch), [StageSkeleton(16, 1, 1)], Head(64, "relu", "avg", 0))
    specs = {space.decode(t) for t in product(*(range(d.n) for d in space.decisions))}
    assert space.size == len(specs)
    assert space.nominal_size == int(np.prod([d.n for d in space.decisions]))
    assert space.size < space.nominal_size


def test_canonical_merges_inactive_skip():
    space = get_space("mnasnet")
    tokens = space.sample(3)
    tokens[5], tokens[3] = 0, 1  # stage 0 with one layer: no layer can take a residual
    assert space.decode(tokens) == space.decode(space.canonical(tokens))
    assert space.canonical(tokens)[3] == 0


def test_sampling_is_seeded():
    space = get_space("mobilenet_v3")
    assert space.sample(7) == space.sample(7)
    assert space.sample(7) != space.sample(8)


def test_bad_tokens_and_foreign_specs():
    space = get_space("mnasnet")
    with pytest.raises(UserError, match="takes 49 tokens"):
        space.decode([0, 1])
    with pytest.raises(UserError, match="s0.op"):
        space.decode([9] + [0] * 48)
    with pytest.raises(SpecError, match="not in that space"):
        space.encode(mobilenet_v2())
    with pytest.raises(UserError, match="unknown search space"):
        get_space("nope")


def test_spaces_report_size():
    assert get_space("mnasnet").size > 10**19
    assert get_space("mobilenet_v3").size > 10**16


def test_size_counts_stage_multipliers():
    # A stage's own multipliers set its filter choices, merged where they round alike, and size follows.
    space = SearchSpace("one", Stem(16), [StageSkeleton(16, 1, 1, mults=(0.5, 1.0, 1.1, 2.0))], Head(64, "relu", "avg", 0))
    assert space.decisions[4].choices == (8, 16, 32)  # 16 x 1.1 rounds to 16 and is merged
    specs = {space.decode(t) for t in product(*(range(d.n) for d in space.decisions))}
    assert space.size == len(specs)


def test_wide_cifar_space_reaches_mobilenet_v1_widths_and_holds_mnasnet_cifar():
    cifar, wide = get_space("mnasnet_cifar"), get_space("mnasnet_cifar_wide")
    filters = {d.name: d.choices for d in wide.decisions if d.name.endswith(".filters")}
    assert filters["s0.filters"] == (16, 24) and filters["s1.filters"] == (16, 24, 32)  # 32x32 and 16x16: unchanged
    assert filters["s2.filters"] == (24, 32, 40, 48, 64, 96, 128)  # 8x8: up to 4x MobileNetV2's 32
    assert max(filters["s4.filters"]) == 384 and max(filters["s6.filters"]) == 1280
    assert wide.stem == cifar.stem and wide.head == cifar.head and len(wide.decisions) == len(cifar.decisions)
    assert wide.size > 50 * cifar.size
    rng = np.random.default_rng(2)
    for _ in range(100):  # every mnasnet_cifar network is a wide-space network too
        spec = cifar.decode(cifar.sample(rng), resolution=32, num_classes=10)
        assert wide.decode(wide.encode(spec), resolution=32, num_classes=10).layers == spec.layers


def test_widest_wide_network_builds_and_runs_at_32():
    wide = get_space("mnasnet_cifar_wide")
    tokens = [d.n - 1 if d.name.endswith((".filters", ".layers")) else 1 for d in wide.decisions]  # dwconv k5
    spec = wide.decode(tokens, resolution=32, num_classes=10)
    assert spec.layers[-1].out_ch == 1280 and spec.layers[-1].op == "dwconv"
    torch.manual_seed(0)
    with torch.no_grad():
        out = build_model(spec).eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
