"""ArchSpec: the per-layer description of a network, and the one currency between parts.

A searched network, a reference network and a NetAdapt result are all ArchSpecs. The spec is plain
data (JSON on disk) so the latency predictor and the cost model never need torch.

Layer ops (all follow a conv with BatchNorm; ``act`` is the layer's non-linearity):

``conv``
    kxk convolution ``in_ch -> out_ch`` + BN + act, optional SE on its output. ``exp_ch == out_ch``.
``dwconv``
    depthwise-separable conv (MobileNetV1; MnasNet's SepConv): kxk depthwise on ``in_ch`` + BN +
    act, optional SE, 1x1 linear projection to ``out_ch`` + BN. ``exp_ch == in_ch``.
``mbconv``
    inverted residual with linear bottleneck (MobileNetV2): 1x1 expansion to ``exp_ch`` + BN +
    act, kxk depthwise + BN + act, optional SE, 1x1 linear projection + BN.

``exp_ch`` is an absolute count so that pruned networks are expressible; ``se_ch`` is the number of
squeeze channels of the squeeze-and-excitation module (0 = none), which acts on ``exp_ch``
channels in every op. ``residual`` adds the layer's input to its output (needs stride 1 and
``in_ch == out_ch``). ``pw_act`` (``dwconv`` only) puts the layer's activation after the 1x1
projection too, as MobileNetV1's separable layers have it (Howard et al. 2017, Figure 3).

What the papers set differently is a property of the whole spec, not a constant of the builder:
``se_gate`` is the SE module's gate (``hsigmoid``: MobileNetV3's hard sigmoid; ``sigmoid``:
MnasNet's), ``bn_eps`` / ``bn_momentum`` are BatchNorm's settings in PyTorch's convention
(TensorFlow's decay 0.99 is momentum 0.01; PyTorch's defaults are 1e-5 / 0.1). Specs written
before these fields existed read with the values every network had then (hsigmoid, 1e-3, 0.01).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from space.errors import SpecError

OPS = ("conv", "dwconv", "mbconv")
ACTS = ("relu", "relu6", "hswish")
GATES = ("hsigmoid", "sigmoid")
POOLS = ("avg",)
# BatchNorm of the TensorFlow-trained mobile networks (MnasNet, MobileNetV3): eps 1e-3, decay 0.99.
TF_BN_EPS, TF_BN_MOMENTUM = 1e-3, 0.01


def _fail(where: str, value: Any, why: str) -> SpecError:
    shown = json.dumps(value) if _jsonable(value) else repr(value)
    if len(shown) > 60:  # a whole list or object where a field was expected: its start is enough
        shown = shown[:57] + "..."
    return SpecError(f"{where}: {shown} {why}")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _int(where: str, value: Any, lo: int | None = None) -> int:
    # bool is a subclass of int in Python; JSON true must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, value, "is not an integer")
    if lo is not None and value < lo:
        raise _fail(where, value, f"must be >= {lo}")
    return value


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(where, value, f"is unknown; expected one of {', '.join(choices)}")
    return value


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, value, "is not true/false")
    return value


def _kernel(where: str, value: Any) -> int:
    k = _int(where, value, 1)
    if k % 2 == 0:
        raise _fail(where, k, "must be odd (same padding needs an odd kernel)")
    return k


def _stride(where: str, value: Any) -> int:
    s = _int(where, value, 1)
    if s not in (1, 2):
        raise _fail(where, s, "must be 1 or 2")
    return s


@dataclass(frozen=True)
class Stem:
    """First conv: kxk, stride ``stride``, ``in_channels -> out_ch``, BN, act."""

    out_ch: int
    kernel: int = 3
    stride: int = 2
    act: str = "relu6"


@dataclass(frozen=True)
class Layer:
    """One block of the network body; see the module docstring for each op."""

    op: str
    kernel: int
    stride: int
    in_ch: int
    out_ch: int
    exp_ch: int
    se_ch: int = 0
    act: str = "relu6"
    residual: bool = False
    pw_act: bool = False


@dataclass(frozen=True)
class Head:
    """Classifier head: 1x1 conv (``conv_ch``, 0 = none) + BN + act, global pooling, an optional
    MobileNetV3-style FC layer (``fc_ch``, 0 = none) + act, dropout, the final linear classifier."""

    conv_ch: int = 1280
    act: str = "relu6"
    pool: str = "avg"
    fc_ch: int = 0


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: input, stem, body layers, head. Immutable; use :func:`dataclasses.replace`."""

    stem: Stem
    layers: tuple[Layer, ...]
    head: Head = field(default_factory=Head)
    resolution: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    dropout: float = 0.2
    name: str = ""
    se_gate: str = "hsigmoid"
    bn_eps: float = TF_BN_EPS
    bn_momentum: float = TF_BN_MOMENTUM

    def __post_init__(self) -> None:
        # Accept a list for convenience but store a tuple so specs are hashable and immutable.
        if not isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", tuple(self.layers))
        validate(self)

    # ---- derived facts -------------------------------------------------------------------
    @property
    def body_ch(self) -> int:
        """Channels leaving the body (the head's input)."""
        return self.layers[-1].out_ch if self.layers else self.stem.out_ch

    @property
    def feature_ch(self) -> int:
        """Channels entering the global pooling."""
        return self.head.conv_ch or self.body_ch

    @property
    def classifier_in(self) -> int:
        return self.head.fc_ch or self.feature_ch

    def layer_resolutions(self) -> list[int]:
        """Input height/width (square) of every body layer, in order."""
        res = _conv_out(self.resolution, self.stem.stride)
        out = []
        for layer in self.layers:
            out.append(res)
            res = _conv_out(res, layer.stride)
        return out

    @property
    def final_resolution(self) -> int:
        res = _conv_out(self.resolution, self.stem.stride)
        for layer in self.layers:
            res = _conv_out(res, layer.stride)
        return res

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        return from_dict(data)

    @classmethod
    def from_json(cls, text: str, source: str = "ArchSpec") -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename) so an interrupted save never leaves half a file."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ArchSpec:
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise SpecError(f"{p}: no such file") from None
        except IsADirectoryError:
            raise SpecError(f"{p}: is a folder, not an ArchSpec JSON file; pass the .json file inside it") from None
        except PermissionError:
            raise SpecError(f"{p}: cannot read ArchSpec (permission denied); make the file readable") from None
        except UnicodeDecodeError:
            raise SpecError(f"{p}: cannot read ArchSpec (not a text file); pass an ArchSpec JSON file") from None
        try:
            return cls.from_json(text, source=str(p))
        except SpecError as e:
            msg = str(e)
            raise SpecError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None

    def with_layers(self, layers: list[Layer]) -> ArchSpec:
        return replace(self, layers=tuple(layers))


def _conv_out(res: int, stride: int) -> int:
    # Odd kernel with padding k//2: out = ceil(in / stride).
    return math.ceil(res / stride)


# ---- parsing and validation ------------------------------------------------------------------

def _check_keys(where: str, data: Any, cls: type, required: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(where or "ArchSpec", data, "is not a JSON object")
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise SpecError(f"{where + '.' if where else ''}{key}: unknown field; expected {', '.join(sorted(known))}")
    for key in required:
        if key not in data:
            raise SpecError(f"{where + '.' if where else ''}{key}: missing field")
    return data


def from_dict(data: Any) -> ArchSpec:
    """Parse a JSON-like dict into an ArchSpec, raising :class:`SpecError` naming the bad field."""
    d = _check_keys("", data, ArchSpec, ("stem", "layers"))
    s = _check_keys("stem", d["stem"], Stem, ("out_ch",))
    stem = Stem(**s)
    if not isinstance(d["layers"], list):
        raise _fail("layers", d["layers"], "is not a list")
    layers = []
    for i, raw in enumerate(d["layers"]):
        ld = _check_keys(f"layers[{i}]", raw, Layer, ("op", "kernel", "stride", "in_ch", "out_ch", "exp_ch"))
        layers.append(Layer(**ld))
    head = Head(**_check_keys("head", d.get("head", {}), Head, ()))
    rest = {k: v for k, v in d.items() if k not in ("stem", "layers", "head")}
    return ArchSpec(stem=stem, layers=tuple(layers), head=head, **rest)


def validate(spec: ArchSpec) -> None:
    """Check every field's type and range and the layer-to-layer wiring."""
    _int("resolution", spec.resolution, 1)
    _int("in_channels", spec.in_channels, 1)
    _int("num_classes", spec.num_classes, 1)
    if isinstance(spec.dropout, bool) or not isinstance(spec.dropout, (int, float)) or not 0 <= spec.dropout < 1:
        raise _fail("dropout", spec.dropout, "must be a number in [0, 1)")
    if not isinstance(spec.name, str):
        raise _fail("name", spec.name, "is not a string")
    _choice("se_gate", spec.se_gate, GATES)
    for key, lo, hi in (("bn_eps", 0.0, 0.1), ("bn_momentum", 0.0, 1.0)):
        v = getattr(spec, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v <= hi:
            raise _fail(key, v, f"must be a number in ({lo:g}, {hi:g}]")

    st = spec.stem
    _int("stem.out_ch", st.out_ch, 1)
    _kernel("stem.kernel", st.kernel)
    _stride("stem.stride", st.stride)
    _choice("stem.act", st.act, ACTS)

    prev = st.out_ch
    for i, layer in enumerate(spec.layers):
        w = f"layers[{i}]"
        if not isinstance(layer, Layer):
            raise _fail(w, layer, "is not a Layer")
        _choice(f"{w}.op", layer.op, OPS)
        _kernel(f"{w}.kernel", layer.kernel)
        _stride(f"{w}.stride", layer.stride)
        _int(f"{w}.in_ch", layer.in_ch, 1)
        _int(f"{w}.out_ch", layer.out_ch, 1)
        _int(f"{w}.exp_ch", layer.exp_ch, 1)
        _int(f"{w}.se_ch", layer.se_ch, 0)
        _choice(f"{w}.act", layer.act, ACTS)
        _bool(f"{w}.residual", layer.residual)
        _bool(f"{w}.pw_act", layer.pw_act)
        if layer.pw_act and layer.op != "dwconv":
            raise _fail(f"{w}.pw_act", layer.pw_act, f"applies to dwconv layers only, not {layer.op} (whose projection is linear)")
        if layer.in_ch != prev:
            raise _fail(f"{w}.in_ch", layer.in_ch, f"does not match the previous layer's output ({prev} channels)")
        if layer.op == "conv" and layer.exp_ch != layer.out_ch:
            raise _fail(f"{w}.exp_ch", layer.exp_ch, f"must equal out_ch ({layer.out_ch}) for a conv layer")
        if layer.op == "dwconv" and layer.exp_ch != layer.in_ch:
            raise _fail(f"{w}.exp_ch", layer.exp_ch, f"must equal in_ch ({layer.in_ch}) for a dwconv layer")
        if layer.residual and (layer.stride != 1 or layer.in_ch != layer.out_ch):
            raise _fail(
                f"{w}.residual", layer.residual,
                f"is impossible with stride {layer.stride}, in_ch {layer.in_ch}, out_ch {layer.out_ch} "
                "(a residual needs stride 1 and in_ch == out_ch)",
            )
        prev = layer.out_ch

    hd = spec.head
    _int("head.conv_ch", hd.conv_ch, 0)
    _choice("head.act", hd.act, ACTS)
    _choice("head.pool", hd.pool, POOLS)
    _int("head.fc_ch", hd.fc_ch, 0)
