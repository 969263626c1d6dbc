"""The latency predictor: table lookups + the per-op model + a calibration on whole networks.

``predict(spec)`` = calibration(per-op sums over units of (measured ms if the unit is in the table,
else the per-op model's ms), unit count, input elements, parameters). The calibration is what a
per-unit sum misses on a CPU: each unit timed alone keeps its weights in cache between runs, pays a
session call and brings its input in (and into onnxruntime's blocked NCHWc layout) itself, while
a network streams its weights in once per inference and its layers hand activations over in the
cache and in the blocked layout. It is a linear model (see :class:`Calibration`) chosen by
cross-validation and fitted by least relative squares on whole networks measured end to end
(never the networks a validation scores).

Prediction needs numpy only (no torch, pandas or scikit-learn), and caches unit latencies, so
scoring thousands of networks per second is cheap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write_text
from common.errors import UserError
from latency.opmodel import OpModel
from latency.signature import KEY_COLUMNS, UNIT_OPS, Sig, sig_params, spec_sigs
from space.archspec import ArchSpec

PREDICTOR_FORMAT = 8  # bump when features or the model change: saved predictors are refitted


CALIB_FEATURES = ("conv_ms", "dwconv_ms", "mbconv_ms", "edge_ms", "units", "in_melems", "params_m", "fixed")
_OP_COLUMN = {"conv": 0, "dwconv": 1, "mbconv": 2, "stem": 3, "head": 3}
_COL = {f: i for i, f in enumerate(CALIB_FEATURES)}
# The candidate calibrations, simplest first: whether the four unit-time sums get a scale each
# (else one shared scale) and which further terms join. The fit keeps the candidate with the lowest
# cross-validated error on the calibration networks.
CANDIDATES: dict[str, tuple[bool, tuple[str, ...]]] = {
    "scale": (False, ()),
    "scale+inputs": (False, ("in_melems",)),
    "scale+units": (False, ("units",)),
    "scale+units+inputs": (False, ("units", "in_melems")),
    "scale+weights": (False, ("params_m",)),
    "scale+weights+inputs": (False, ("params_m", "in_melems")),
    "scale+fixed": (False, ("fixed",)),
    "scale+weights+fixed": (False, ("params_m", "fixed")),
    "per-op": (True, ("units", "in_melems", "params_m")),
}
# A constant (``fixed``: what every inference pays once, whatever its size) joins only beside the
# scale and the weights term: with the input term beside it, the two traded off (+0.95 ms against
# -0.99 ms per million elements on one table) and moved small networks far outside the range.
RIDGE = 0.05  # pulls the per-op scales towards 1 when few networks disagree
PER_OP_MIN_NETWORKS = 50
TERMS_MIN_NETWORKS = 20  # below this, one scale only: a handful of networks cannot pin down more
MAX_TERM_SHARE = 0.5     # the non-scale terms may move no calibration network by more than this share
MIN_COMPUTE_SHARE = 0.1
CV_FOLDS = 10


def _fit_candidate(F: np.ndarray, measured: np.ndarray, per_op: bool, terms: tuple[str, ...]) -> np.ndarray:
    """Least relative squares for one candidate; the full weight vector over CALIB_FEATURES."""
    sums = F[:, :4] if per_op else F[:, :4].sum(axis=1, keepdims=True)
    cols = [_COL[t] for t in terms]
    A = np.hstack([sums, F[:, cols]]) / measured[:, None]
    b = np.ones(len(measured))
    if per_op:
        pen = np.sqrt(RIDGE) * np.eye(A.shape[1])[:4]
        A, b = np.vstack([A, pen]), np.concatenate([b, pen.sum(axis=1)])
    x = np.linalg.lstsq(A, b, rcond=None)[0]
    w = np.zeros(len(CALIB_FEATURES))
    w[:4] = x[:4] if per_op else x[0]
    w[cols] = x[sums.shape[1]:]
    return w


def _sound(w: np.ndarray, F: np.ndarray) -> bool:
    """Positive scales, and extra terms that move no network by more than MAX_TERM_SHARE."""
    scaled, extra = F[:, :4] @ w[:4], F[:, 4:] @ w[4:]
    return bool(np.all(w[:4] > 0) and np.all(np.abs(extra) <= MAX_TERM_SHARE * scaled))


def _cv_mape(F: np.ndarray, measured: np.ndarray, per_op: bool, terms: tuple[str, ...]) -> float:
    """K-fold cross-validated mean absolute relative error (%), with fixed folds."""
    n = len(measured)
    order = np.random.default_rng(0).permutation(n)
    err = np.zeros(n)
    for k in range(min(CV_FOLDS, n)):
        test = order[k::CV_FOLDS]
        train = np.setdiff1d(order, test)
        w = _fit_candidate(F[train], measured[train], per_op, terms)
        err[test] = F[test] @ w / measured[test] - 1.0
    return float(np.mean(np.abs(err)) * 100)


def _transfer_mape(F: np.ndarray, measured: np.ndarray, groups: np.ndarray, per_op: bool,
                   terms: tuple[str, ...]) -> dict[str, float]:
    """Per family: the mean absolute relative error (%) on its networks of the candidate fitted on
    the other families' networks alone."""
    out = {}
    for g in dict.fromkeys(groups.tolist()):
        test = groups == g
        if (~test).sum() < 3:
            continue
        w = _fit_candidate(F[~test], measured[~test], per_op, terms)
        out[g] = round(float(np.mean(np.abs(F[test] @ w / measured[test] - 1.0)) * 100), 4)
    return out


@dataclass
class Calibration:
    """Whole-network latency from unit latencies: ``ms = w . (sum of conv units, sum of dwconv
    units, sum of mbconv units, stem + head, number of units, millions of unit input elements,
    millions of parameters, 1)``.

    What a per-unit sum misses, and the terms for it: a unit timed alone keeps its weights in cache
    from run to run, where a network streams every weight in once per inference (``params_m``,
    positive); each unit timed alone brings its input in and into onnxruntime's blocked layout
    itself (``in_melems``, negative) and pays a session call (``units``); a network pays once per
    inference what no unit timed alone shows (``fixed``, a constant); fusion and cache effects
    differ between ops (per-op scales). Candidates (:data:`CANDIDATES`) are fitted by least
    relative squares. When the calibration networks come from several families, each candidate is
    also fitted on all families but one and scored on that one (``transfer_mape``: per candidate,
    per held-out family, in %), and the candidate with the lowest mean of those is kept, so that a
    term joins only where it helps on families it was not fitted on; otherwise the one with the
    lowest 10-fold cross-validated error (``cv_mape``, in %, reported either way). Below 20 networks
    only the shared scale is fitted; per-op scales need 50. A candidate whose extra terms would move
    a calibration network by more than half its scaled unit time is not considered. Identity
    (plain sum) when not fitted.
    """

    weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    n_networks: int = 0
    kind: str = "identity"
    cv_mape: dict[str, float] = field(default_factory=dict)
    transfer_mape: dict[str, dict[str, float]] = field(default_factory=dict)

    def apply(self, F: np.ndarray) -> np.ndarray:
        w = np.asarray(self.weights)
        # The fitted per-unit and input terms may be negative (separately timed units each paid
        # overheads a network pays once). Far below the calibration range, e.g. a heavily trimmed
        # or tiny network, they could outweigh the compute, so no network is predicted faster than
        # a tenth of its scaled unit time: never zero or negative.
        return np.maximum(F @ w, MIN_COMPUTE_SHARE * (F[:, :4] @ w[:4]))

    @classmethod
    def fit_candidate(cls, F: np.ndarray, measured: np.ndarray, name: str) -> Calibration:
        """The candidate ``name`` of :data:`CANDIDATES` fitted on these networks alone, whether or not
        :meth:`fit` would choose it (to see what another choice would have predicted)."""
        if name not in CANDIDATES:
            raise UserError(f"no calibration candidate {name!r}; choose one of {', '.join(CANDIDATES)}")
        w = _fit_candidate(F, measured, *CANDIDATES[name])
        return cls([float(x) for x in w], len(measured), name)

    @classmethod
    def fit(cls, F: np.ndarray, measured: np.ndarray, groups: list[str] | None = None) -> Calibration:
        n = len(measured)
        if n < 3:
            raise UserError(f"calibration needs at least 3 measured networks, got {n}")
        if n < TERMS_MIN_NETWORKS:
            names = ["scale"]
        else:
            names = [c for c, (per_op, _) in CANDIDATES.items() if not per_op or n >= PER_OP_MIN_NETWORKS]
        fits = {c: _fit_candidate(F, measured, *CANDIDATES[c]) for c in names}
        fits = {c: w for c, w in fits.items() if c == "scale" or _sound(w, F)}
        cv = {c: _cv_mape(F, measured, *CANDIDATES[c]) for c in fits} if len(fits) > 1 else {}
        kind = min(cv, key=cv.__getitem__) if cv else "scale"
        transfer: dict[str, dict[str, float]] = {}
        g = np.asarray(groups) if groups is not None else np.zeros(0)
        if len(fits) > 1 and len(set(g.tolist())) > 1:
            transfer = {c: _transfer_mape(F, measured, g, *CANDIDATES[c]) for c in fits}
            kind = min(transfer, key=lambda c: float(np.mean(list(transfer[c].values()))))
        w = fits[kind]
        if np.any(w[:4] <= 0):  # degenerate data: the median ratio
            kind, w = "median-ratio", np.zeros(len(CALIB_FEATURES))
            w[:4] = float(np.median(measured / F[:, :4].sum(axis=1)))
        return cls([float(x) for x in w], n, kind, {c: round(v, 4) for c, v in cv.items()}, transfer)


def _gather(cache: dict[Sig, float], sigs: Sequence[Sig]) -> np.ndarray:
    """``cache[s]`` for every unit, as floats (map over C callables: no Python loop); KeyError if
    one is missing."""
    return np.fromiter(map(cache.__getitem__, sigs), dtype=np.float64, count=len(sigs))


def _cached(cache: dict[Sig, float], sigs: Sequence[Sig], fn) -> np.ndarray:
    """``fn(sig)`` of every unit, computed once per distinct unit."""
    try:
        return _gather(cache, sigs)
    except KeyError:
        for s in sigs:
            if s not in cache:
                cache[s] = fn(s)
    return _gather(cache, sigs)


def _in_melems(sig: Sig) -> float:
    """Millions of elements of the unit's input."""
    return sig.in_ch * sig.res * sig.res / 1e6


def _params_m(sig: Sig) -> float:
    """Millions of parameters of the unit: the weights a network streams in once per inference."""
    return sig_params(sig) / 1e6


@dataclass
class Predictor:
    """Predicts a network's latency in ms on the device its table was measured on."""

    lookup: dict[Sig, float]
    models: dict[str, OpModel]
    calibration: Calibration = field(default_factory=Calibration)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cache: dict[Sig, float] = dict(self.lookup)
        self._params: dict[Sig, float] = {}
        self._melems: dict[Sig, float] = {}

    # ---- units ---------------------------------------------------------------------------
    def unit_ms(self, sigs: Sequence[Sig]) -> np.ndarray:
        """Latency of each unit: measured when in the table, else the per-op model's estimate."""
        cache = self._cache
        try:  # the common case once warm: every unit cached (map over C callables, no Python loop)
            return _gather(cache, sigs)
        except KeyError:
            pass
        missing = list(dict.fromkeys(s for s in sigs if s not in cache))
        by_op: dict[str, list[Sig]] = {}
        for s in missing:
            by_op.setdefault(s[0], []).append(s)
        for op, group in by_op.items():
            model = self.models.get(op)
            if model is None:
                raise UserError(
                    f"no measurement and no per-op model for {op!r} units (e.g. {tuple(group[0])}); "
                    f"extend the table with `python cli.py latency build --device {self.meta.get('device', 'NAME')}`"
                )
            for s, v in zip(group, model.predict(group)):
                cache[s] = float(v)
        return _gather(cache, sigs)

    def calib_features(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        """Per network: the :data:`CALIB_FEATURES` row (unit-latency sums per op group, unit count,
        millions of unit input elements, millions of parameters, and 1 for the constant)."""
        per_spec = [spec_sigs(s) for s in specs]
        counts = np.fromiter(map(len, per_spec), dtype=np.int64, count=len(per_spec))
        flat = [u for sigs in per_spec for u in sigs]
        ms = self.unit_ms(flat)
        n = len(per_spec)
        col = np.fromiter(map(_OP_COLUMN.__getitem__, map(itemgetter(0), flat)), dtype=np.int64, count=len(flat))
        row = np.repeat(np.arange(n), counts)
        F = np.zeros((n, len(CALIB_FEATURES)))
        F[:, :4] = np.bincount(row * 4 + col, weights=ms, minlength=4 * n).reshape(n, 4)
        F[:, _COL["units"]] = counts
        F[:, _COL["in_melems"]] = np.bincount(row, weights=_cached(self._melems, flat, _in_melems), minlength=n)
        F[:, _COL["params_m"]] = np.bincount(row, weights=_cached(self._params, flat, _params_m), minlength=n)
        F[:, _COL["fixed"]] = 1.0
        return F

    # ---- networks ------------------------------------------------------------------------
    def unit_sum(self, spec: ArchSpec) -> float:
        """The plain per-unit sum (no calibration): the lookup-table baseline."""
        return float(self.unit_sum_many([spec])[0])

    def unit_sum_many(self, specs: Iterable[ArchSpec]) -> np.ndarray:
        specs = list(specs)
        return self.calib_features(specs)[:, :4].sum(axis=1) if specs else np.zeros(0)

    def predict(self, spec: ArchSpec) -> float:
        """Predicted latency (ms) of one network."""
        return float(self.predict_many([spec])[0])

    def predict_many(self, specs: Iterable[ArchSpec]) -> np.ndarray:
        """Predicted latencies (ms) of many networks, as a float array in the same order."""
        specs = list(specs)
        if not specs:
            return np.zeros(0)
        return self.calibration.apply(self.calib_features(specs))

    def layer_breakdown(self, spec: ArchSpec) -> list[dict[str, Any]]:
        """Per unit: signature, ms, and whether it was measured or modelled."""
        sigs = spec_sigs(spec)
        ms = self.unit_ms(sigs)
        return [{**s._asdict(), "ms": float(m), "measured": s in self.lookup} for s, m in zip(sigs, ms)]

    # ---- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(cls, table, networks: list[tuple[ArchSpec, float]] | None = None,
            meta: dict[str, Any] | None = None, groups: list[str] | None = None) -> Predictor:
        """Fit the per-op models on ``table`` (a :class:`~latency.table.LatencyTable`) and the
        calibration on ``networks`` (spec, measured ms) pairs, of the families ``groups`` when given."""
        f = table.frame
        if f.empty:
            raise UserError("the latency table is empty; build one with `python cli.py latency build`")
        lookup = table.lookup()
        sigs = list(lookup)
        ms = np.array([lookup[s] for s in sigs])
        models = {}
        for op in UNIT_OPS:
            idx = [i for i, s in enumerate(sigs) if s.op == op]
            if idx:
                models[op] = OpModel.fit(op, [sigs[i] for i in idx], ms[idx])
        pred = cls(lookup, models, Calibration(), dict(meta or table.meta))
        if networks:
            specs = [s for s, _ in networks]
            measured = np.array([m for _, m in networks], dtype=float)
            pred.calibration = Calibration.fit(pred.calib_features(specs), measured, groups)
        return pred

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREDICTOR_FORMAT,
            "meta": self.meta,
            "key_columns": list(KEY_COLUMNS),
            "lookup": [[*s, v] for s, v in self.lookup.items()],
            "models": {op: m.to_dict() for op, m in self.models.items()},
            "calibration": vars(self.calibration),
        }

    def save(self, path: str | Path) -> Path:
        body = json.dumps(self.to_dict(), separators=(",", ":"))
        doc = json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "body": body})
        return atomic_write_text(path, doc + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        p = Path(path)
        try:
            outer = json.loads(p.read_text())
            body = outer["body"]
            if hashlib.sha256(body.encode()).hexdigest() != outer["sha256"]:
                raise ValueError("checksum mismatch")
            d = json.loads(body)
            if d.get("format") != PREDICTOR_FORMAT:
                raise ValueError(f"format {d.get('format')} is not {PREDICTOR_FORMAT}")
            lookup = {Sig(row[0], *map(int, row[1:7]), row[7], bool(row[8]), int(row[9]), int(row[10]), bool(row[11]),
                          row[12]): float(row[13]) for row in d["lookup"]}
            models = {op: OpModel.from_dict(m) for op, m in d["models"].items()}
            calib = Calibration(**d["calibration"])
        except FileNotFoundError:
            raise UserError(f"{p}: predictor file not found") from None
        except (ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
            raise UserError(f"{p}: predictor file is corrupted ({e}); rebuild it with `python cli.py latency build`") from None
        return cls(lookup, models, calib, d.get("meta", {}))
