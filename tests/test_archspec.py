"""ArchSpec: JSON round trips and refusal of malformed or impossible specs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from space.archspec import ArchSpec, Layer
from space.errors import SpecError
from space.references import REFERENCES, mobilenet_v2


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_json_round_trip(name, tmp_path):
    spec = REFERENCES[name]()
    assert ArchSpec.from_json(spec.to_json()) == spec
    path = spec.save(tmp_path / "a" / "spec.json")
    assert ArchSpec.load(path) == spec
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def _bad(mutate) -> str:
    d = mobilenet_v2().to_dict()
    mutate(d)
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(d)
    return str(e.value)


def test_negative_channels_named():
    msg = _bad(lambda d: d["layers"][2].__setitem__("out_ch", -24))
    assert msg.startswith("layers[2].out_ch: -24")


def test_residual_with_stride_two_refused():
    def m(d):
        d["layers"][1]["residual"] = True  # stride-2 layer

    msg = _bad(m)
    assert "layers[1].residual" in msg and "stride 2" in msg


def test_unknown_op_and_act_refused():
    assert "layers[0].op" in _bad(lambda d: d["layers"][0].__setitem__("op", "sepconv"))
    assert "stem.act" in _bad(lambda d: d["stem"].__setitem__("act", "gelu"))


def test_missing_and_unknown_fields_refused():
    assert _bad(lambda d: d["layers"][3].pop("kernel")) == "layers[3].kernel: missing field"
    assert _bad(lambda d: d.pop("stem")) == "stem: missing field"
    assert "head.colour: unknown field" in _bad(lambda d: d["head"].__setitem__("colour", 1))


def test_wrong_types_refused():
    assert "not an integer" in _bad(lambda d: d["layers"][0].__setitem__("kernel", "3"))
    assert "not an integer" in _bad(lambda d: d["layers"][0].__setitem__("kernel", True))
    assert "not true/false" in _bad(lambda d: d["layers"][0].__setitem__("residual", 1))
    assert "even" not in _bad(lambda d: d["layers"][0].__setitem__("kernel", 4)) and "odd" in _bad(
        lambda d: d["layers"][0].__setitem__("kernel", 4))
    assert "dropout" in _bad(lambda d: d.__setitem__("dropout", 1.5))
    assert "is not a list" in _bad(lambda d: d.__setitem__("layers", {}))


def test_wiring_checked():
    msg = _bad(lambda d: d["layers"][4].__setitem__("in_ch", 40))
    assert msg.startswith("layers[4].in_ch: 40 does not match")


def test_op_specific_expansion_rules():
    conv = Layer("conv", 3, 1, 32, 16, 32)
    with pytest.raises(SpecError, match="exp_ch"):
        replace(mobilenet_v2(), layers=(conv,))


def test_malformed_json_and_files(tmp_path):
    with pytest.raises(SpecError, match="not valid JSON"):
        ArchSpec.from_json("{")
    with pytest.raises(SpecError, match="not a JSON object"):
        ArchSpec.from_json("[1, 2]")
    with pytest.raises(SpecError, match="no such file"):
        ArchSpec.load(tmp_path / "missing.json")
    p = tmp_path / "trunc.json"
    p.write_text(mobilenet_v2().to_json()[:200])
    with pytest.raises(SpecError) as e:
        ArchSpec.load(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_failed_save_keeps_old_file(tmp_path):
    path = mobilenet_v2().save(tmp_path / "spec.json")
    before = path.read_text()
    with pytest.raises(AttributeError):
        ArchSpec.save(object(), path)  # not a spec: to_json fails before anything is written
    assert path.read_text() == before
    assert json.loads(before)["name"] == "mobilenet_v2"


def test_resolutions_follow_strides():
    spec = mobilenet_v2()
    res = spec.layer_resolutions()
    assert res[0] == 112 and spec.final_resolution == 7
    assert replace(spec, resolution=32).final_resolution == 1
