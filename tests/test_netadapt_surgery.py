"""Proposal groups and channel surgery: the trimmed network computes what the original computes
with the removed channels masked to zero."""

from __future__ import annotations

import pytest
import torch

from netadapt.groups import chains, channel_steps, group_axes, proposal_groups, se_after_trim, with_channels
from netadapt.surgery import channel_importance, shrink
from space.archspec import ArchSpec, Head, Layer, Stem
from space.blocks import ClassifierHead, StemConv, layer_axes
from space.builder import build_model
from space.references import reference
from train.weights import check_fits


def rich_spec() -> ArchSpec:
    """Every op, SE on each kind, residual chains including the stem's, head conv and FC."""
    return ArchSpec(
        Stem(16, 3, 2, "hswish"),
        (
            Layer("dwconv", 3, 1, 16, 16, 16, 8, "relu", residual=True),
            Layer("mbconv", 3, 2, 16, 24, 64, 16, "hswish"),
            Layer("mbconv", 5, 1, 24, 24, 72, 0, "relu", residual=True),
            Layer("mbconv", 3, 1, 24, 24, 96, 24, "hswish", residual=True),
            Layer("conv", 3, 2, 24, 32, 32, 8, "relu"),
            Layer("conv", 3, 1, 32, 32, 32, 8, "hswish", residual=True),
            Layer("dwconv", 3, 1, 32, 40, 32, 8, "hswish"),
        ),
        Head(64, "hswish", "avg", 48), resolution=16, in_channels=3, num_classes=5, dropout=0.0, name="rich",
    )


def randomized_model(spec: ArchSpec, seed: int = 0) -> torch.nn.Module:
    """Random BN affine parameters, linear layers and biases, and running statistics estimated on
    random inputs (so activations keep a sensible scale), so that surgery on all of them is checked."""
    torch.manual_seed(seed)
    m = build_model(spec)
    bns = []
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.3)
            mod.momentum = None
            bns.append(mod)
        elif isinstance(mod, torch.nn.Linear):
            mod.weight.data.normal_(0, mod.in_features ** -0.5)
            mod.bias.data.normal_(0, 0.1)
        elif isinstance(mod, torch.nn.Conv2d) and mod.bias is not None:
            mod.bias.data.normal_(0, 0.1)
    m.train()
    with torch.no_grad():
        m(torch.randn(32, spec.in_channels, spec.resolution, spec.resolution))
    for mod in bns:
        mod.running_mean.add_(torch.randn_like(mod.running_mean) * 0.1)
        mod.running_var.mul_(torch.empty_like(mod.running_var).uniform_(0.8, 1.25))
    return m.eval()


def producer_module(spec: ArchSpec, t: int) -> str:
    if t == 0:
        return "stem.act1"
    layer = spec.layers[t - 1]
    return f"blocks.{t - 1}." + {"conv": "act1", "dwconv": "bn2", "mbconv": "bn3"}[layer.op]


def mask_points(spec: ArchSpec, group, kept: dict) -> dict[str, tuple[torch.Tensor, int]]:
    """Module name -> (kept indices, channel count) where the original must be masked."""
    keep = kept[group.name]
    n = group.channels(spec)
    points = {}
    if group.kind == "chain":
        for t in group.tensors:
            points[producer_module(spec, t)] = (keep, n)
            if t < len(spec.layers) and spec.layers[t].op == "dwconv":
                points[f"blocks.{t}.act1"] = (keep, n)  # the depthwise channels go with their input
    elif group.kind == "exp":
        points[f"blocks.{group.layers[0]}.act2"] = (keep, n)
    elif group.kind == "head_conv":
        points["head.act1"] = (keep, n)
    else:
        points["head.act2"] = (keep, n)
    for key, idx in kept.items():
        if key.startswith("se"):
            i = int(key[2:])
            points[f"blocks.{i}.se.act"] = (idx, spec.layers[i].se_ch)
    return points


def masked_forward(model, points, x):
    handles = []
    modules = dict(model.named_modules())
    for name, (keep, n) in points.items():
        mask = torch.zeros(n)
        mask[keep] = 1.0

        def hook(_m, _inp, out, mask=mask):
            shape = (1, -1) + (1,) * (out.dim() - 2)
            return out * mask.view(shape)

        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def test_groups_of_a_network():
    spec = rich_spec()
    assert chains(spec) == [(0, 1), (2, 3, 4), (5, 6), (7,)]
    names = [g.name for g in proposal_groups(spec)]
    assert names == ["stem", "out1-3", "exp1", "exp2", "exp3", "out4-5", "out6", "head.conv", "head.fc"]
    v3 = reference("mobilenet_v3_small")
    groups = proposal_groups(v3)
    assert sum(g.kind == "exp" for g in groups) == sum(layer.op == "mbconv" for layer in v3.layers)
    assert {g.kind for g in groups} == {"chain", "exp", "head_conv", "head_fc"}


def test_blocks_describe_their_channel_axes():
    """Every axis a block lists names one of its tensors with that many channels on that dimension,
    and every tensor of a block is on some axis (the classifier's bias only carries classes)."""
    spec = rich_spec()
    model = build_model(spec)
    parts = [(model.stem, StemConv.channel_axes(spec.stem), {"out": spec.stem.out_ch}),
             (model.head, ClassifierHead.channel_axes(spec.head),
              {"in": spec.body_ch, "conv": spec.head.conv_ch, "fc": spec.head.fc_ch})]
    parts += [(block, layer_axes(layer), {"in": layer.in_ch, "out": layer.out_ch, "exp": layer.exp_ch,
                                          "se": layer.se_ch})
              for block, layer in zip(model.blocks, spec.layers)]
    for module, axes, channels in parts:
        state = module.state_dict()
        for role, role_axes in axes.items():
            assert sum(a.producer for a in role_axes) == (role != "in"), (role, role_axes)
            for a in role_axes:
                assert state[a.key].shape[a.dim] == channels[role], (type(module).__name__, role, a)
        covered = {a.key for role_axes in axes.values() for a in role_axes}
        assert set(state) - covered <= {k for k in state if k.endswith("num_batches_tracked")} | {"classifier.bias"}
    assert {frozenset(layer_axes(layer)) for layer in spec.layers} == {
        frozenset({"in", "out", "se"}), frozenset({"in", "exp", "out", "se"}), frozenset({"in", "exp", "out"})}


@pytest.mark.parametrize("group_name", ["stem", "out1-3", "exp1", "exp2", "exp3", "out4-5", "out6",
                                        "head.conv", "head.fc"])
def test_shrunk_network_equals_masked_original(group_name):
    spec = rich_spec()
    model = randomized_model(spec)
    group = next(g for g in proposal_groups(spec) if g.name == group_name)
    n = channel_steps(group.channels(spec), step=4)[1]  # remove two steps of 4 (surgery takes any count)
    new_spec, new_state, kept = shrink(spec, model.state_dict(), group, n)
    assert group.channels(new_spec) == n == len(kept[group_name])
    small = build_model(new_spec)
    check_fits(small, new_state)
    small.load_state_dict(new_state)
    small.eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    want = masked_forward(model, mask_points(spec, group, kept), x)
    with torch.no_grad():
        got = small(x)
    assert float(want.std(0).mean()) > 0.05  # outputs depend on the input
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()
    # masking really changed something: the unmasked original differs
    with torch.no_grad():
        assert (model(x) - want).abs().max() > 1e-3


def test_filters_with_largest_l2_norm_survive():
    spec = rich_spec()
    model = randomized_model(spec)
    state = model.state_dict()
    w = state["head.conv.weight"]
    w.mul_(0.01)
    w[[3, 10, 40]] *= 1000.0  # three clearly strongest filters
    group = next(g for g in proposal_groups(spec) if g.name == "head.conv")
    _, new_state, kept = shrink(spec, state, group, 8)
    assert {3, 10, 40} <= set(kept["head.conv"].tolist())
    imp = channel_importance(state, group_axes(spec, group))
    assert float(imp[kept["head.conv"]].min()) >= float(imp.sort(descending=True).values[7])
    assert torch.equal(new_state["head.conv.weight"], w[kept["head.conv"]])


def test_chain_importance_sums_all_producers():
    spec = rich_spec()
    state = randomized_model(spec).state_dict()
    group = next(g for g in proposal_groups(spec) if g.name == "out1-3")
    imp = channel_importance(state, group_axes(spec, group))
    manual = sum(state[k].reshape(24, -1).pow(2).sum(1) for k in
                 ("blocks.1.conv_pwl.weight", "blocks.2.conv_pwl.weight", "blocks.3.conv_pwl.weight"))
    assert torch.allclose(imp, manual)


def test_bn_importance_keeps_the_channels_with_the_largest_batchnorm_scale():
    spec = rich_spec()
    state = randomized_model(spec).state_dict()
    group = next(g for g in proposal_groups(spec) if g.name == "exp3")  # 96 channels; conv_pw -> bn1
    state["blocks.3.bn1.weight"].fill_(0.1)
    state["blocks.3.bn1.weight"][[5, 50, 90]] = torch.tensor([-2.0, 1.5, 3.0])  # the sign does not matter
    state["blocks.3.conv_pw.weight"][[5, 50, 90]] *= 1e-3  # ... and neither do the filters' norms
    _, _, kept = shrink(spec, state, group, 8, importance="bn")
    assert {5, 50, 90} <= set(kept["exp3"].tolist())
    _, _, kept_l2 = shrink(spec, state, group, 8, importance="l2")
    assert not {5, 50, 90} & set(kept_l2["exp3"].tolist())
    # A residual chain sums the scales of all its producers' BatchNorms.
    chain = next(g for g in proposal_groups(spec) if g.name == "out1-3")
    imp = channel_importance(state, group_axes(spec, chain), "bn")
    assert torch.allclose(imp, sum(state[f"blocks.{i}.bn3.weight"].pow(2) for i in (1, 2, 3)))
    # The head's FC layer has no BatchNorm: its filters' L2 norms rank it.
    fc = next(g for g in proposal_groups(spec) if g.name == "head.fc")
    assert torch.equal(channel_importance(state, group_axes(spec, fc), "bn"),
                       channel_importance(state, group_axes(spec, fc), "l2"))


def test_channel_steps_and_se_rule():
    assert channel_steps(64) == [56, 48, 40, 32, 24, 16, 8]
    assert channel_steps(72)[:2] == [64, 56]
    assert channel_steps(16) == [8] and channel_steps(20) == [16, 8] and channel_steps(8) == []
    assert channel_steps(20, step=4) == [16, 12, 8, 4]
    assert channel_steps(64, min_channels=40) == [56, 48, 40]
    assert se_after_trim(24, 96, 48) == 12
    assert se_after_trim(16, 64, 56) == 16 and se_after_trim(0, 64, 32) == 0
    spec = with_channels(rich_spec(), next(g for g in proposal_groups(rich_spec()) if g.name == "exp3"), 48)
    assert spec.layers[3].exp_ch == 48 and spec.layers[3].se_ch == 12
