"""A tabular search space: every network is a row of a CSV with its accuracy and latency.

Tabular benchmarks (NAS-Bench-201, Dong & Yang 2020; HW-NAS-Bench, Li et al. 2021) trained and
timed every network of a small space once, so a search strategy can be scored on thousands of
runs in minutes: "training" a candidate is a look-up. :class:`TableSpace` declares such a table
through the same decisions interface as :class:`space.searchspace.SearchSpace` (``decisions``,
``canonical``, ``sample``, ``size``), and :class:`TableTask` plays the part of the real search's
trials for :class:`search.searcher.NetworkSearcher`, so the strategies run unchanged on it.

The CSV has a ``tokens`` column (one integer per decision, space-separated, e.g. ``3 0 1 3 2 4``),
an accuracy column (percent when any value exceeds 1, else a fraction) and a latency column in
milliseconds. Decision ``d`` offers the values its tokens take in the table; each row is one
network (no two rows may have the same tokens). A combination of choices with no row is a network
that failed: its trial scores reward 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.errors import UserError
from search.reward import Reward
from space.searchspace import Decision


@dataclass
class Table:
    """Rows of a tabular benchmark: tokens as choice indices, accuracy as a fraction, latency in ms."""

    path: str
    tokens: np.ndarray     # (rows, decisions) int, indices into each decision's choices
    choices: list[tuple[int, ...]]  # per decision, the token values of the file
    accuracy: np.ndarray
    latency_ms: np.ndarray
    acc_column: str
    latency_column: str

    @cached_property
    def row_of(self) -> dict[tuple[int, ...], int]:
        return {tuple(int(t) for t in row): i for i, row in enumerate(self.tokens)}


def _fail(path: str, msg: str) -> UserError:
    return UserError(f"table {path}: {msg}")


def _numbers(df: pd.DataFrame, col: str, path: str, what: str) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        i = int(bad[0])
        raise _fail(path, f"{what} column {col!r} has {df[col].iloc[i]!r} on line {i + 2}, not a finite number")
    return values


def load_table(path: str | Path, acc_column: str, latency_column: str) -> Table:
    """Read and check a tabular benchmark CSV (see the module doc); bad input is one :class:`UserError` line."""
    p = str(path)
    try:
        df = pd.read_csv(path, dtype={"tokens": str})
    except FileNotFoundError:
        raise _fail(p, "no such file") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise _fail(p, f"not a readable CSV ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    cols = ", ".join(map(str, df.columns))
    if "tokens" not in df.columns:
        raise _fail(p, f"no 'tokens' column (one space-separated token per decision); its columns are {cols}")
    for col, what in ((acc_column, "accuracy"), (latency_column, "latency")):
        if col not in df.columns:
            raise _fail(p, f"no {what} column {col!r}; its columns are {cols}")
    if df.empty:
        raise _fail(p, "no rows")
    rows: list[list[int]] = []
    for i, text in enumerate(df["tokens"].fillna("")):
        try:
            rows.append([int(t) for t in str(text).split()])
        except ValueError:
            raise _fail(p, f"tokens {text!r} on line {i + 2} are not integers separated by spaces") from None
        if len(rows[-1]) != len(rows[0]) or not rows[-1]:
            raise _fail(p, f"line {i + 2} has {len(rows[-1])} tokens and line 2 has {len(rows[0])}; every row "
                           "must give one token per decision")
    raw = np.asarray(rows, dtype=np.int64)
    acc = _numbers(df, acc_column, p, "accuracy")
    lat = _numbers(df, latency_column, p, "latency")
    if (lat <= 0).any():
        i = int(np.flatnonzero(lat <= 0)[0])
        raise _fail(p, f"latency column {latency_column!r} has {lat[i]:g} ms on line {i + 2}; latencies must be > 0")
    if (acc < 0).any():
        i = int(np.flatnonzero(acc < 0)[0])
        raise _fail(p, f"accuracy column {acc_column!r} has {acc[i]:g} on line {i + 2}; accuracies must be >= 0")
    if acc.max() > 1:
        acc = acc / 100.0
    choices = [tuple(int(v) for v in np.unique(raw[:, d])) for d in range(raw.shape[1])]
    tokens = np.stack([np.searchsorted(c, raw[:, d]) for d, c in enumerate(choices)], axis=1)
    _, first, counts = np.unique(tokens, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = int(first[np.flatnonzero(counts > 1)[0]])
        again = int(np.flatnonzero((tokens == tokens[dup]).all(axis=1))[1])
        raise _fail(p, f"lines {dup + 2} and {again + 2} have the same tokens ({df['tokens'].iloc[dup]}); "
                       "each network must be one row")
    return Table(p, tokens, choices, acc, lat, acc_column, latency_column)


class TableSpace:
    """The decisions of a :class:`Table` (decision ``t<i>``, choices its token values), as a search space."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.decisions = tuple(Decision(f"t{d}", c) for d, c in enumerate(table.choices))
        self.name = f"table:{Path(table.path).name}"

    def canonical(self, tokens: Any) -> list[int]:
        """Every row is its own network: the tokens themselves, checked."""
        toks = [int(t) for t in tokens]
        if len(toks) != len(self.decisions) or any(not 0 <= t < d.n for t, d in zip(toks, self.decisions)):
            raise UserError(f"tokens {toks} are not in {self.name} ({len(self.decisions)} decisions)")
        return toks

    def sample(self, rng: np.random.Generator | int | None = None) -> list[int]:
        """Uniform random choice per decision, as :meth:`space.searchspace.SearchSpace.sample`."""
        rng = np.random.default_rng(rng)
        return [int(rng.integers(d.n)) for d in self.decisions]

    @property
    def size(self) -> int:
        """Networks the decisions describe (combinations without a row among them)."""
        return math.prod(d.n for d in self.decisions)


class TableTask:
    """The search over a table with the reward ``ACC * (LAT / target) ** w``: what a trial learns is a look-up."""

    def __init__(self, table: Table, reward: Reward) -> None:
        self.table, self.reward, self.space = table, reward, TableSpace(table)

    @cached_property
    def rewards(self) -> np.ndarray:
        """The reward of every row."""
        return np.array([self.reward(a, t) for a, t in zip(self.table.accuracy, self.table.latency_ms)])

    def row(self, tokens: list[int]) -> int | None:
        return self.table.row_of.get(tuple(int(t) for t in tokens))

    def candidate(self, tokens: list[int]) -> dict[str, Any]:
        i = self.row(tokens)
        return {"latency_ms": float(self.table.latency_ms[i]) if i is not None else math.nan}

    def shared(self) -> dict[str, Any]:
        return {}

    def result(self, tokens: list[int]) -> dict[str, Any]:
        """What training this network reports: its row's accuracy and reward, or a failed trial for no row."""
        i = self.row(tokens)
        if i is None:
            return {"reward": 0.0, "status": "error", "accuracy": math.nan}
        return {"reward": float(self.rewards[i]), "status": "ok", "accuracy": float(self.table.accuracy[i])}
