"""ONNX graphs of units and whole networks written directly with ``onnx.helper``, without torch.

The graph is the one the torch exporter writes for the built model in eval mode (BatchNorm folded
into the conv's bias, ReLU6 as Clip, h-swish as HardSwish, SE as ReduceMean -> Conv -> Relu ->
Conv -> HardSigmoid or Sigmoid -> Mul, Linear as Gemm; tests compare the optimised node lists), but takes
milliseconds instead of 0.02-0.5 s: building a table and validating are dominated by measuring,
not exporting. Weights are random; latency does not depend on their values.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from latency.signature import Sig, spec_sigs
from space.archspec import ArchSpec

OPSET = 17


class _Graph:
    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        # One block of random numbers tiled over every weight: drawing millions per network would
        # cost more than the graph itself, and latency does not depend on the values.
        self.pool = np.random.default_rng(seed).standard_normal(8191).astype(np.float32)
        self.n = 0

    def random(self, shape: tuple[int, ...], scale: float) -> np.ndarray:
        return np.resize(self.pool, shape) * np.float32(scale)

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base: str, arr: np.ndarray) -> str:
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), nm))
        return nm

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> str:
        w = self.const("w", self.random((cout, cin // groups, k, k), 0.1))
        b = self.const("b", self.random((cout,), 0.1))
        p = k // 2
        return self.node("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p],
                         group=groups, dilations=[1, 1])

    def act(self, x: str, act: str) -> str:
        if act == "relu":
            return self.node("Relu", [x])
        if act == "relu6":
            lo, hi = self.const("min", np.array(0.0)), self.const("max", np.array(6.0))
            return self.node("Clip", [x, lo, hi])
        if act == "hswish":
            return self.node("HardSwish", [x])
        raise ValueError(f"unknown activation {act!r}")

    def se(self, x: str, ch: int, se_ch: int, gate: str) -> str:
        s = self.node("ReduceMean", [x], axes=[2, 3], keepdims=1)
        s = self.node("Relu", [self.conv(s, ch, se_ch, 1)])
        s = self.conv(s, se_ch, ch, 1)
        g = self.node("Sigmoid", [s]) if gate == "sigmoid" else self.node("HardSigmoid", [s], alpha=1.0 / 6.0, beta=0.5)
        return self.node("Mul", [x, g])

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = self.const("w", self.random((cout, cin), 0.01))
        b = self.const("b", np.zeros(cout))
        return self.node("Gemm", [x, w, b], alpha=1.0, beta=1.0, transB=1)


    def unit(self, x: str, sig: Sig) -> str:
        """Append one unit's nodes to the graph, reading tensor ``x``; returns its output tensor."""
        if sig.op in ("stem", "conv"):
            y = self.act(self.conv(x, sig.in_ch, sig.out_ch, sig.kernel, sig.stride), sig.act)
            if sig.se_ch:
                y = self.se(y, sig.out_ch, sig.se_ch, sig.gate)
        elif sig.op == "dwconv":
            y = self.act(self.conv(x, sig.in_ch, sig.in_ch, sig.kernel, sig.stride, groups=sig.in_ch), sig.act)
            if sig.se_ch:
                y = self.se(y, sig.in_ch, sig.se_ch, sig.gate)
            y = self.conv(y, sig.in_ch, sig.out_ch, 1)
            if sig.pw_act:
                y = self.act(y, sig.act)
        elif sig.op == "mbconv":
            y = self.act(self.conv(x, sig.in_ch, sig.exp_ch, 1), sig.act)
            y = self.act(self.conv(y, sig.exp_ch, sig.exp_ch, sig.kernel, sig.stride, groups=sig.exp_ch), sig.act)
            if sig.se_ch:
                y = self.se(y, sig.exp_ch, sig.se_ch, sig.gate)
            y = self.conv(y, sig.exp_ch, sig.out_ch, 1)
        elif sig.op == "head":
            ch, y = sig.in_ch, x
            if sig.exp_ch:
                y, ch = self.act(self.conv(y, ch, sig.exp_ch, 1), sig.act), sig.exp_ch
            y = self.node("ReduceMean", [y], axes=[2, 3], keepdims=0)
            if sig.fc_ch:
                y, ch = self.act(self.gemm(y, ch, sig.fc_ch), sig.act), sig.fc_ch
            y = self.gemm(y, ch, sig.out_ch)
        else:
            raise ValueError(f"unknown unit op {sig.op!r}")
        if sig.residual:
            y = self.node("Add", [x, y])
        return y

    def model(self, y: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], name: str) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [y], ["output"]))
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(out_shape))], self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwnas")
        model.ir_version = 8
        return model


def _out_shape(sig: Sig) -> tuple[int, ...]:
    if sig.op == "head":
        return (1, sig.out_ch)
    ro = -(-sig.res // sig.stride)
    return (1, sig.out_ch, ro, ro)


def unit_graph(sig: Sig, seed: int = 0) -> onnx.ModelProto:
    """One unit alone at its input shape."""
    g = _Graph(seed)
    return g.model(g.unit("input", sig), (1, sig.in_ch, sig.res, sig.res), _out_shape(sig), f"unit_{sig.op}")


def network_graph(spec: ArchSpec, seed: int = 0) -> onnx.ModelProto:
    """A whole network: its units chained, as the torch exporter writes the built model."""
    g = _Graph(seed)
    sigs = spec_sigs(spec)
    y = "input"
    for sig in sigs:
        y = g.unit(y, sig)
    return g.model(y, (1, spec.in_channels, spec.resolution, spec.resolution), _out_shape(sigs[-1]), "network")


def network_onnx_bytes(spec: ArchSpec, seed: int = 0) -> bytes:
    return network_graph(spec, seed).SerializeToString()


def unit_onnx_bytes(sig: Sig, seed: int = 0) -> bytes:
    return unit_graph(sig, seed).SerializeToString()
