"""Property tests: the ArchSpec parser only ever raises SpecError, what it accepts builds and runs,
and tokens -> spec -> tokens round trips in every space."""

from __future__ import annotations

import copy
import json

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from space.archspec import ArchSpec
from space.builder import build_model
from space.cost import cost
from space.errors import SpecError
from space.references import REFERENCES
from space.searchspace import SPACES, get_space

BASES = [REFERENCES[n]().to_dict() for n in sorted(REFERENCES)]
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                 st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _paths(obj, prefix=()):
    """Every (container, key) location in a JSON-like tree."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield obj, k
            yield from _paths(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield obj, i
            yield from _paths(v)


@st.composite
def mutated_specs(draw):
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    doc["resolution"] = 32
    for _ in range(draw(st.integers(1, 3))):
        spots = list(_paths(doc))
        container, key = draw(st.sampled_from(spots))
        action = draw(st.sampled_from(["replace", "delete", "small_int"]))
        if action == "delete":
            del container[key]
        elif action == "small_int":
            container[key] = draw(st.integers(-2, 9))
        else:
            container[key] = draw(JUNK)
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_parser_raises_only_spec_error_and_accepted_specs_run(doc):
    try:
        spec = ArchSpec.from_dict(doc)
    except SpecError as e:
        assert "\n" not in str(e)
        return
    # Accepted: it must build and run (the JSON text round trip must hold too). Mutations can ask
    # for gigabytes (a 10**6 resolution or class count): those are only costed, not run.
    assert ArchSpec.from_json(spec.to_json()) == spec
    c = cost(spec)
    assert c.params > 0 and c.macs > 0
    if spec.resolution > 64 or spec.in_channels > 8 or c.params > 2e7 or c.macs > 2e9:
        return
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(torch.randn(1, spec.in_channels, spec.resolution, spec.resolution))
    assert out.shape == (1, spec.num_classes)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_is_refused_cleanly(text):
    try:
        ArchSpec.from_json(text)
    except SpecError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(SPACES)), st.data())
def test_tokens_round_trip_in_every_space(name, data):
    space = get_space(name)
    tokens = [data.draw(st.integers(0, d.n - 1)) for d in space.decisions]
    canon = space.canonical(tokens)
    spec = space.decode(tokens)
    assert space.encode(spec) == canon
    assert space.decode(canon) == spec
    assert json.loads(spec.to_json())["layers"]
