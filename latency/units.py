"""Measure whole networks (graphs from :mod:`latency.onnx_units`); the torch modules of
units, whose exports those graphs reproduce."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from latency.measure import LatencyStats, export_module, time_models
from latency.signature import Sig, input_shape, sig_head, sig_layer, sig_stem
from space.archspec import ArchSpec

if TYPE_CHECKING:
    from torch import nn

# Per unit / network: warm-up runs per session, blocks per session, timed runs per block. Units are
# cheap (0.01-3 ms); whole networks are what validation compares against. Every model is timed in
# MEASURE_PASSES fresh sessions, one per pass over the whole list, so a model's sessions lie a
# pass-time apart (minutes on a table): the table, its calibration networks and held-out networks
# are all measured the same way (see latency.runner).
UNIT_WARMUP, UNIT_BLOCKS, UNIT_RUNS = 2, 3, 5
NET_WARMUP, NET_BLOCKS, NET_RUNS = 2, 4, 6
MEASURE_PASSES = 3


def unit_module(sig: Sig) -> nn.Module:
    """The torch module that computes exactly this unit, as it appears inside a built network."""
    from space.blocks import ClassifierHead, Parts, StemConv
    from space.builder import build_layer

    if sig.op == "stem":
        return StemConv(sig.in_ch, sig_stem(sig))
    if sig.op == "head":
        return ClassifierHead(sig.in_ch, sig_head(sig), sig.out_ch, 0.0)
    return build_layer(sig_layer(sig), Parts.make(sig.gate))


def export_unit(sig: Sig, path=None) -> bytes:
    """The unit exported by torch (the reference that :mod:`latency.onnx_units` reproduces)."""
    return export_module(unit_module(sig), input_shape(sig), path)


STAT_KEYS = ("latency_ms", "median_ms", "p10_ms", "p90_ms", "spread", "session_spread", "runs")


def stats_row(stats: LatencyStats) -> dict[str, Any]:
    return {k: getattr(stats, k) for k in STAT_KEYS}


def measure_networks(specs: list[ArchSpec], threads: int = 1, provider: str = "cpu", warmup: int = NET_WARMUP,
                     runs: int = NET_RUNS, progress: bool = True, desc: str = "measuring networks",
                     passes: int = MEASURE_PASSES, blocks: int = NET_BLOCKS, probe: bool = False,
                     wait_s: float = 0.0, fast_within: float | None = None) -> list[dict[str, Any]]:
    """Time whole networks end to end (graphs from :mod:`latency.onnx_units`) the way a table's
    networks are timed: ``passes`` fresh sessions each, a pass over the whole list apart; ``probe``:
    each block after a probe block, the figure read from the blocks run in the machine's fast mode
    (:mod:`latency.probe`). Rows with the spec's JSON and its statistics.

    ``wait_s`` > 0: each network instead as ``latency measure`` times it (:func:`latency.measure.measure`
    with its own runs and blocks, ``passes`` sessions, waiting up to ``wait_s`` seconds for
    :data:`latency.probe.MIN_FAST` fast blocks where this machine has a probe reference; without one
    it cannot tell the fast mode and does not wait), one after the other: slower, and on a machine
    with slow spells far more repeatable (``docs/benchmarks.md``, the paths comparison). ``seconds``
    is then each network's own time, else the average over the list. ``fast_within`` (with
    ``probe``): how far above the probe's fast level a block's probe may have run for the block to
    count (a share; default :data:`latency.runner.PROBE_TOLERANCE`)."""
    import tempfile
    from pathlib import Path

    from latency.measure import check_fast_within
    from latency.onnx_units import network_onnx_bytes

    within = check_fast_within(fast_within)
    if wait_s > 0:
        return _measure_waiting(specs, threads, provider, passes, wait_s, progress, desc, within)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs) * passes, desc=desc, unit="net", file=sys.stderr, smoothing=0.1)
    t0 = time.perf_counter()
    # On disk, not in memory: a few hundred networks' weights would take gigabytes.
    with tempfile.TemporaryDirectory(prefix="hwnas-networks-") as tmp:
        graphs = [Path(tmp) / f"n{i:05d}.onnx" for i in range(len(specs))]
        for path, spec in zip(graphs, specs):
            path.write_bytes(network_onnx_bytes(spec))
        try:
            stats = time_models(graphs, warmup, runs, blocks, passes, provider, threads,
                                on_session=bar.update if bar else None, probe=probe, within=within)
        finally:
            if bar:
                bar.close()
    seconds = (time.perf_counter() - t0) / max(1, len(specs))
    return [_row(spec, st, PROBE_KEYS if probe else (), seconds=seconds) for spec, st in zip(specs, stats)]


PROBE_KEYS = ("probe_ms", "fast_blocks", "slowdown", "fast_within")


def _row(spec: ArchSpec, st: LatencyStats, extra: tuple[str, ...], **more: Any) -> dict[str, Any]:
    return {"spec": spec.to_json(indent=None), **stats_row(st), **{k: getattr(st, k) for k in extra}, **more}


def _measure_waiting(specs: list[ArchSpec], threads: int, provider: str, sessions: int, wait_s: float,
                     progress: bool, desc: str, within: float) -> list[dict[str, Any]]:
    import warnings

    from latency import probe
    from latency.measure import measure, resolve_clock

    if probe.reference_ms(threads, provider, resolve_clock("auto", threads, provider)) is None:
        warnings.warn("waiting for the fast mode: this machine has no probe reference yet, so a measurement cannot "
                      "tell its fast mode and will not wait; run `python cli.py latency probe` first", stacklevel=3)
    it = specs
    if progress:
        from tqdm import tqdm

        it = tqdm(specs, desc=desc, unit="net", file=sys.stderr, smoothing=0.1)
    rows = []
    for spec in it:
        t0 = time.perf_counter()
        st = measure(spec, threads, provider, sessions=sessions, wait_s=wait_s, fast_within=within)
        rows.append(_row(spec, st, PROBE_KEYS, waited_s=st.waited_s, seconds=time.perf_counter() - t0))
    return rows
