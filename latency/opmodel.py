"""The learned per-op model: latency of a unit that is not in the table.

Two parts, both fitted on the table's measured units and evaluated with numpy alone:

1. a linear cost model per op, ``ms = w . features`` with non-negative weights (MACs of each
   primitive, elements moved, nodes; see :data:`latency.signature.FEATURES`), fitted on relative
   error so that small and large units count alike;
2. a nearest-neighbour correction: the median log-ratio measured/linear of the ``k`` measured units
   of the same op closest in log-feature space, which captures what a linear model misses
   (kernel-specific depthwise code paths, GEMM efficiency at odd channel counts, cache sizes).

This follows the spirit of nn-Meter (Zhang et al. 2021: per-kernel learned predictors) at the
granularity of whole blocks, where onnxruntime's fusions (conv+BN folded at export, conv+ReLU
fused at load) happen inside the unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latency.signature import FEATURES, Sig, feature_matrix

K_NEIGHBOURS = 10
# Descriptors the neighbour search compares, log-scaled: the shape of a unit, not its cost split.
_SHAPE_GROUPS = (("mac_pw",), ("mac_dw", "mac_dw5", "mac_dw7"), ("mac_full", "mac_full5", "mac_full7"), ("mac_fc",),
                 ("mem_in",), ("mem_mid",), ("mem_out",))


def _shape_desc(sigs: list[Sig], X: np.ndarray) -> np.ndarray:
    cols = np.stack([X[:, [FEATURES.index(f) for f in group]].sum(axis=1) for group in _SHAPE_GROUPS], axis=1)
    extra = np.array([[s.kernel, s.stride, 1.0 if s.se_ch else 0.0, 1.0 if s.act == "hswish" else 0.0,
                       1.0 if s.residual else 0.0] for s in sigs]).reshape(len(sigs), 5)
    return np.hstack([np.log1p(cols), extra * np.array([0.5, 1.0, 1.0, 1.0, 0.5])])


def nnls(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls as _nnls

    return _nnls(A, b, maxiter=50 * A.shape[1])[0]


@dataclass
class OpModel:
    """Linear + neighbour model for one op (``stem``, ``conv``, ``dwconv``, ``mbconv``, ``head``)."""

    op: str
    weights: np.ndarray
    scale: np.ndarray  # per-feature scale used while fitting (numerical conditioning)
    desc: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    desc_scale: np.ndarray = field(default_factory=lambda: np.ones(0))
    log_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))
    k: int = K_NEIGHBOURS

    @classmethod
    def fit(cls, op: str, sigs: list[Sig], ms: np.ndarray, k: int = K_NEIGHBOURS) -> OpModel:
        X = feature_matrix(sigs)
        scale = np.maximum(X.max(axis=0), 1e-12)
        Xs = X / scale
        # Relative error: divide each row by its target.
        w = nnls(Xs / ms[:, None], np.ones(len(ms)))
        lin = np.maximum(Xs @ w, 1e-6)
        desc = _shape_desc(sigs, X)
        dscale = np.maximum(desc.std(axis=0), 1e-6)
        return cls(op, w, scale, desc / dscale, dscale, np.log(ms / lin), k)

    def linear(self, X: np.ndarray) -> np.ndarray:
        return np.maximum((X / self.scale) @ self.weights, 1e-6)

    def predict(self, sigs: list[Sig]) -> np.ndarray:
        X = feature_matrix(sigs)
        lin = self.linear(X)
        if not len(self.log_ratio) or not self.k:
            return lin
        q = _shape_desc(sigs, X) / self.desc_scale
        d = ((q[:, None, :] - self.desc[None, :, :]) ** 2).sum(axis=2)
        k = min(self.k, d.shape[1])
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]
        return lin * np.exp(np.median(self.log_ratio[nearest], axis=1))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "weights": self.weights.tolist(), "scale": self.scale.tolist(),
                "desc": self.desc.tolist(), "desc_scale": self.desc_scale.tolist(),
                "log_ratio": self.log_ratio.tolist(), "k": self.k}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpModel:
        n = len(d["log_ratio"])
        desc = np.asarray(d["desc"], dtype=float).reshape(n, -1) if n else np.zeros((0, 0))
        return cls(d["op"], np.asarray(d["weights"], float), np.asarray(d["scale"], float), desc,
                   np.asarray(d["desc_scale"], float), np.asarray(d["log_ratio"], float), int(d["k"]))
