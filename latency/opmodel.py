"""The learned per-op model: latency of a unit that is not in the table.

Two parts, fitted on the table's measured units, evaluated with numpy alone:

1. a linear cost model per op, ``ms = w . features`` with non-negative weights (MACs of each
   primitive, elements moved, nodes; see :data:`latency.signature.FEATURES`), fitted on relative
   error so that small and large units count alike;
2. gradient-boosted regression trees (Friedman 2001) on the log-ratio measured / linear, over the
   unit's shape (:data:`SHAPE`: log channel counts and resolution, kernel, stride, activation,
   how far its widths are from onnxruntime's 8- and 16-channel blocks, log MACs and elements):
   what the linear part misses, such as kernel-specific depthwise code, the blocked kernels' cost
   at odd widths, the activations that fuse into a convolution and those that do not, cache sizes.

nn-Meter (Zhang et al. 2021) predicts each kernel with a model of this kind (random forests on
the kernel's configuration) trained on configurations sampled over the whole range; here a unit is
a whole block, within which onnxruntime's fusions (conv+BN folded at export, conv+ReLU at load)
happen. The trees are fitted with scikit-learn and kept as plain arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latency.signature import FEATURES, Sig, feature_matrix

# Boosting: shallow trees, small steps, a fixed seed (the fit is deterministic).
TREES, DEPTH, RATE, SUBSAMPLE, MIN_LEAF = 300, 4, 0.05, 0.8, 3
MIN_UNITS_FOR_TREES = 20  # fewer measured units of an op: the linear part alone
ALWAYS_LEFT = 1e300  # the threshold of a split that is not one (finite, so the predictor file is plain JSON)

SHAPE = ("log_in", "log_out", "log_exp", "log_se", "log_res", "kernel", "stride", "relu6", "hswish", "residual",
         "pad8_in", "pad8_exp", "pad8_out", "pad16_exp", "log_macs", "log_mem_in", "log_mem_mid", "log_fc", "pw_act",
         "sigmoid")
_MAC = [i for i, f in enumerate(FEATURES) if f.startswith("mac_")]
_MEM_IN, _MEM_MID = FEATURES.index("mem_in"), FEATURES.index("mem_mid")


def _pad(c: np.ndarray, b: int) -> np.ndarray:
    """Channels a kernel blocked by ``b`` computes, per channel the unit has (1 = no padding)."""
    c = np.maximum(c, 1)
    return -(-c // b) * b / c


def shape_matrix(sigs: list[Sig], X: np.ndarray | None = None) -> np.ndarray:
    """The :data:`SHAPE` descriptors of each unit (``X``: its feature matrix, when already made)."""
    X = feature_matrix(sigs) if X is None else X
    a = np.array([[s.in_ch, s.out_ch, s.exp_ch, s.se_ch, s.res, s.kernel, s.stride, s.act == "relu6",
                   s.act == "hswish", s.residual, s.fc_ch, s.pw_act, s.gate == "sigmoid"] for s in sigs],
                 dtype=float).reshape(len(sigs), 13)
    cin, cout, exp = a[:, 0], a[:, 1], a[:, 2]
    return np.column_stack([np.log(np.maximum(cin, 1)), np.log(np.maximum(cout, 1)), np.log(np.maximum(exp, 1)),
                            np.log1p(a[:, 3]), np.log(a[:, 4]), a[:, 5], a[:, 6], a[:, 7], a[:, 8], a[:, 9],
                            _pad(cin, 8), _pad(exp, 8), _pad(cout, 8), _pad(exp, 16), np.log1p(X[:, _MAC].sum(axis=1)),
                            np.log1p(X[:, _MEM_IN]), np.log1p(X[:, _MEM_MID]), np.log1p(a[:, 10]), a[:, 11], a[:, 12]])


def nnls(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls as _nnls

    return _nnls(A, b, maxiter=50 * A.shape[1])[0]


@dataclass
class Trees:
    """Boosted regression trees as arrays, each tree a perfect binary tree of depth :data:`DEPTH`
    (a leaf above the bottom level is copied down, its splits always going left): node ``i``'s
    children are ``2i + 1`` (``x[feature] <= threshold``) and ``2i + 2``, so a prediction is
    :data:`DEPTH` vectorised steps over all trees at once. ``pred = base + sum over trees of
    value[leaf]`` (each tree's values already scaled by the learning rate)."""

    base: float = 0.0
    feature: np.ndarray = field(default_factory=lambda: np.zeros((0, 2**DEPTH - 1), dtype=np.int64))
    threshold: np.ndarray = field(default_factory=lambda: np.zeros((0, 2**DEPTH - 1)))
    value: np.ndarray = field(default_factory=lambda: np.zeros((0, 2**DEPTH)))

    @classmethod
    def fit(cls, D: np.ndarray, y: np.ndarray) -> Trees:
        from sklearn.ensemble import GradientBoostingRegressor

        gb = GradientBoostingRegressor(n_estimators=TREES, max_depth=DEPTH, learning_rate=RATE, subsample=SUBSAMPLE,
                                       min_samples_leaf=MIN_LEAF, random_state=0).fit(D, y)
        trees = [e[0].tree_ for e in gb.estimators_]
        inner = 2**DEPTH - 1
        feat, thr = np.zeros((len(trees), inner), dtype=np.int64), np.full((len(trees), inner), ALWAYS_LEFT)
        val = np.zeros((len(trees), 2**DEPTH))
        for i, t in enumerate(trees):
            todo = [(0, 0)]  # (sklearn node, perfect-tree node)
            while todo:
                k, j = todo.pop()
                if j >= inner:  # the bottom level: a leaf
                    val[i, j - inner] = t.value[k, 0, 0] * RATE
                elif t.children_left[k] < 0:  # a leaf above the bottom: always left, down to the bottom
                    todo.append((k, 2 * j + 1))
                else:
                    feat[i, j], thr[i, j] = t.feature[k], t.threshold[k]
                    todo += [(t.children_left[k], 2 * j + 1), (t.children_right[k], 2 * j + 2)]
        return cls(float(gb.init_.constant_.ravel()[0]), feat, thr, val)

    def predict(self, D: np.ndarray) -> np.ndarray:
        n_trees = self.feature.shape[0]
        if not n_trees or not len(D):
            return np.full(len(D), self.base)
        inner = self.feature.shape[1]
        offset = (np.arange(n_trees) * inner)[None, :]
        feat, thr = self.feature.ravel(), self.threshold.ravel()
        node = np.zeros((len(D), n_trees), dtype=np.int64)
        rows = np.arange(len(D))[:, None] * D.shape[1]
        flat = D.ravel()
        for _ in range(DEPTH):
            at = node + offset
            node = 2 * node + 1 + (flat[rows + feat[at]] > thr[at])
        leaf = node - inner + (np.arange(n_trees) * (inner + 1))[None, :]
        return self.base + self.value.ravel()[leaf].sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "feature": self.feature.tolist(), "threshold": self.threshold.tolist(),
                "value": self.value.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trees:
        if not d["feature"]:
            return cls(float(d["base"]))
        return cls(float(d["base"]), np.asarray(d["feature"], dtype=np.int64), np.asarray(d["threshold"], float),
                   np.asarray(d["value"], float))


@dataclass
class OpModel:
    """Linear + boosted-trees model for one op (``stem``, ``conv``, ``dwconv``, ``mbconv``, ``head``)."""

    op: str
    weights: np.ndarray
    scale: np.ndarray  # per-feature scale used while fitting (numerical conditioning)
    trees: Trees = field(default_factory=Trees)

    @classmethod
    def fit(cls, op: str, sigs: list[Sig], ms: np.ndarray) -> OpModel:
        X = feature_matrix(sigs)
        scale = np.maximum(X.max(axis=0), 1e-12)
        Xs = X / scale
        # Relative error: divide each row by its target.
        w = nnls(Xs / ms[:, None], np.ones(len(ms)))
        model = cls(op, w, scale)
        if len(sigs) >= MIN_UNITS_FOR_TREES:
            model.trees = Trees.fit(shape_matrix(sigs, X), np.log(ms / model.linear(X)))
        return model

    def linear(self, X: np.ndarray) -> np.ndarray:
        return np.maximum((X / self.scale) @ self.weights, 1e-6)

    def predict(self, sigs: list[Sig]) -> np.ndarray:
        X = feature_matrix(sigs)
        return self.linear(X) * np.exp(self.trees.predict(shape_matrix(sigs, X)))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "weights": self.weights.tolist(), "scale": self.scale.tolist(),
                "trees": self.trees.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpModel:
        return cls(d["op"], np.asarray(d["weights"], float), np.asarray(d["scale"], float), Trees.from_dict(d["trees"]))


def cv_errors(sigs: list[Sig], ms: np.ndarray, folds: int = 5) -> np.ndarray:
    """Each unit's |log(predicted / measured)| under a model of its op fitted without its fold (fixed
    folds): where the per-op models err on units they have not seen."""
    err = np.zeros(len(sigs))
    ops = np.array([s.op for s in sigs])
    for op in dict.fromkeys(ops):
        idx = np.random.default_rng(0).permutation(np.flatnonzero(ops == op))
        for k in range(min(folds, len(idx))):
            test = idx[k::folds]
            train = np.setdiff1d(idx, test)
            if len(train) < 2:
                continue
            model = OpModel.fit(op, [sigs[i] for i in train], ms[train])
            err[test] = np.abs(np.log(model.predict([sigs[i] for i in test]) / ms[test]))
    return err
