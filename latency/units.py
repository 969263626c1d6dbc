"""Measure units or whole networks (graphs from :mod:`latency.onnx_units`); the torch modules of
units, whose exports those graphs reproduce."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from latency.measure import LatencyStats, export_module, make_session, time_session
from latency.signature import Sig, input_shape, sig_head, sig_layer, sig_stem
from space.archspec import ArchSpec

# Timed runs per unit / network and the rounds they are split into (the quietest round is kept).
# Units are cheap (0.01-3 ms); whole networks are what validation compares against.
UNIT_WARMUP, UNIT_RUNS, UNIT_ROUNDS = 3, 24, 3
NET_WARMUP, NET_RUNS, NET_ROUNDS = 3, 40, 5
# Passes over a whole list (units and networks alike), each item keeping its quietest. On a shared
# machine a unit's figure drifts by ~10% over minutes while back-to-back passes agree within ~2%;
# the table, its calibration networks and held-out networks are all measured the same way.
MEASURE_PASSES = 2


def unit_module(sig: Sig):
    """The torch module that computes exactly this unit, as it appears inside a built network."""
    from space.blocks import ClassifierHead, StemConv
    from space.builder import build_layer

    if sig.op == "stem":
        return StemConv(sig.in_ch, sig_stem(sig))
    if sig.op == "head":
        return ClassifierHead(sig.in_ch, sig_head(sig), sig.out_ch, 0.0)
    return build_layer(sig_layer(sig))


def export_unit(sig: Sig, path=None) -> bytes:
    """The unit exported by torch (the reference that :mod:`latency.onnx_units` reproduces)."""
    return export_module(unit_module(sig), input_shape(sig), path)


def stats_row(stats: LatencyStats) -> dict[str, Any]:
    return {"median_ms": stats.median_ms, "p10_ms": stats.p10_ms, "p90_ms": stats.p90_ms,
            "spread": stats.spread, "runs": stats.runs}


def _progress(items: list, desc: str, progress: bool) -> Iterable:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="unit" if "unit" in desc else "net", file=sys.stderr, smoothing=0.1)


def measure_units(sigs: list[Sig], threads: int = 1, provider: str = "cpu", warmup: int = UNIT_WARMUP,
                  runs: int = UNIT_RUNS, progress: bool = True, desc: str = "measuring units",
                  on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Export and time every unit; one table row per unit."""
    from latency.onnx_units import unit_onnx_bytes

    rows = []
    for sig in _progress(sigs, desc, progress):
        sess = make_session(unit_onnx_bytes(sig), threads, provider)
        stats = time_session(sess, warmup, runs, rounds=UNIT_ROUNDS, provider=provider, threads=threads)
        row = {**sig._asdict(), **stats_row(stats)}
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def measure_networks(specs: list[ArchSpec], threads: int = 1, provider: str = "cpu", warmup: int = NET_WARMUP,
                     runs: int = NET_RUNS, progress: bool = True, desc: str = "measuring networks",
                     passes: int = 1) -> list[dict[str, Any]]:
    """Time whole networks end to end; rows with the spec's JSON and its statistics.

    With ``passes`` > 1 the list is measured that many times, minutes apart on a long list, and
    each network keeps its quietest pass (lowest median): a burst of load from other processes
    then spoils a network's figure only if it hits every pass. Same scheme as the runner's.
    """
    from latency.onnx_units import network_onnx_bytes
    from latency.runner import pass_order

    graphs = [network_onnx_bytes(s) for s in specs]
    best: list[dict[str, Any] | None] = [None] * len(specs)
    order = [(p, i) for p in range(passes) for i in pass_order(len(specs), passes, p)]
    for p, i in _progress(order, desc, progress):
        t0 = time.perf_counter()
        sess = make_session(graphs[i], threads, provider)
        stats = time_session(sess, warmup, runs, rounds=NET_ROUNDS, provider=provider, threads=threads)
        row = {"spec": specs[i].to_json(indent=None), **stats_row(stats), "seconds": time.perf_counter() - t0,
               "passes": p + 1}
        if best[i] is None or row["median_ms"] < best[i]["median_ms"]:
            best[i] = row
    return [r for r in best if r is not None]
