#!/usr/bin/env python3
"""Standalone latency runner for the target device: needs only onnxruntime and numpy.

Copy the folder written by ``python cli.py latency export`` (ONNX files + ``manifest.json`` +
this script) to the device and run::

    python3 runner.py FOLDER [--threads 1] [--provider cpu] [--out FOLDER/measurements.csv]

It times every model the manifest lists and writes a CSV (one row per file: the latency figure,
the median, p10 and p90 of all timed runs, their spread and the spread between sessions) whose first
line is a ``#`` comment with the device's CPU, onnxruntime version, threads, provider, clock and
optimisation level; ``python cli.py latency import CSV --device NAME`` turns it into a latency
table. The project's own measurements use the same functions. It is long because it is copied alone to
the device and must stand by itself (onnxruntime and numpy only).

Method: fixed intra-op threads, one inter-op thread, sequential execution, graph optimisation
level ORT_ENABLE_ALL, no spinning worker threads. The whole list is measured in ``passes`` passes
(the manifest says how many), each opening a fresh session of every model with fresh input
buffers; after warm-up runs, the timed runs are made in short blocks that take turns with other
models' blocks, so that a model's blocks lie at many moments. Its figure is the mean of the fastest
fifth of the block medians (see :data:`FAST_SHARE`): other processes only ever add time.
With one thread on the CPU provider the clock is the calling thread's CPU time (immune to other
processes stealing the core; equal to wall time on an idle device), otherwise the wall clock.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

OPT_LEVEL = "all"
# How models are timed (recorded with every table: measurements made otherwise are not mixed with them).
METHOD = "sessions-blocks-fast-fifth"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CLOCKS = ("auto", "cpu", "wall")
CSV_COLUMNS = ("file", "latency_ms", "median_ms", "p10_ms", "p90_ms", "mean_ms", "min_ms", "spread", "session_spread",
               "runs", "sessions", "blocks")


class RunnerError(ValueError):
    """Bad input to the runner (unknown provider, bad clock, bad numbers)."""


def ort_version() -> str:
    try:  # the package metadata answers without importing onnxruntime (a quarter second)
        from importlib.metadata import version

        return version("onnxruntime")
    except Exception:
        import onnxruntime as ort

        return ort.__version__


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform's guess)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def resolve_provider(provider: str) -> str:
    """Map ``cpu``/``cuda`` (or a full provider name) to an available onnxruntime provider."""
    import onnxruntime as ort

    name = PROVIDERS.get(provider.lower(), provider)
    available = ort.get_available_providers()
    if name not in available:
        raise RunnerError(f"onnxruntime provider {provider!r} is not available here; available: {', '.join(available)}")
    return name


def resolve_clock(clock: str, threads: int, provider: str) -> str:
    """``auto`` -> ``cpu`` (calling thread's CPU time) for 1 thread on the CPU provider, else ``wall``."""
    if clock not in CLOCKS:
        raise RunnerError(f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")
    if clock == "auto":
        return "cpu" if threads == 1 and PROVIDERS.get(provider.lower(), provider) == PROVIDERS["cpu"] else "wall"
    return clock


def make_session(model, threads: int = 1, provider: str = "cpu") -> ort.InferenceSession:
    """An inference session set up for repeatable timing; ``model`` is a path or ONNX bytes."""
    import onnxruntime as ort

    if threads < 1:
        raise RunnerError(f"threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Worker threads that spin steal the core from the timed thread on a loaded machine.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=opts, providers=[resolve_provider(provider)])


# How a model's time is read from its timed runs. Other processes slow a run down (on a shared machine
# even one on another core: two virtual CPUs can be hyperthreads of one physical core, and a busy
# sibling can double a run's time without the calling thread's CPU clock noticing), but nothing
# makes a run faster than the undisturbed core runs it. So the runs are timed in short blocks spread
# over several fresh sessions, input placements and moments, and the figure is the mean of the
# fastest fifth of the block medians: the least disturbed moments, each a median, not one lucky run.
FAST_SHARE = 0.2
PLACEMENTS = 3  # input buffers per session, at different addresses
CHUNK = 16      # models whose sessions are open together; their blocks take turns (spread in time)


# With a probe model (latency.probe: slow spells of the machine slow it at the same moments), a block
# counts as run in the machine's fast mode when the probe block timed just before it lay within this
# share of the probe's fast level (the default; `--fast-within` sets another for a measurement or a
# validation); the figure then reads those blocks only.
PROBE_TOLERANCE = 0.10
PROBE_RUNS = 8
# A probe block serves the blocks timed within this many seconds after it: the machine's slow spells
# last from a fraction of a second to minutes, and a probe before each of many tiny blocks (a table's
# units) would cost more than the units themselves.
PROBE_EVERY_S = 0.02


def gate(pairs: list[tuple[float, float]], level: float, within: float = PROBE_TOLERANCE) -> list[float]:
    """The block medians of ``pairs`` (probe block median, block median) whose probe ran within
    ``within`` (a share, default :data:`PROBE_TOLERANCE`) of ``level``."""
    return [m for a, m in pairs if a <= level * (1 + within)]


def new_prober(probe, threads: int, provider: str, clock: str, warmup: int = 5) -> _Timer:
    """An open session of the probe model (:mod:`latency.probe`) after ``warmup`` runs."""
    prober = _Timer(make_session(probe, threads, provider), seed=7, clock=clock)
    prober.warm(warmup)
    return prober


def probed_block(prober: _Timer, timer: _Timer, runs: int) -> tuple[float, float]:
    """A probe block, then a block of ``runs`` timed runs of ``timer``'s model: their medians."""
    prober.block(PROBE_RUNS)
    timer.block(runs)
    return float(np.median(prober.blocks[-1])), float(np.median(timer.blocks[-1]))


def summarize_gated(sessions: list[list[np.ndarray]], pairs: list[tuple[float, float]], level: float,
                    within: float = PROBE_TOLERANCE) -> dict:
    """:func:`summarize` with ``latency_ms`` read from the blocks :func:`gate` keeps against ``level``
    (all of them when it keeps none), plus ``probe_ms`` (the probe's fast level beside the blocks)
    and ``fast_blocks``."""
    st = summarize(sessions)
    kept = gate(pairs, level, within)
    if kept:
        st["latency_ms"] = fast_mean(kept)
    st["probe_ms"], st["fast_blocks"] = fast_mean([a for a, _ in pairs]), len(kept)
    return st


def fast_mean(block_medians) -> float:
    """Mean of the fastest :data:`FAST_SHARE` of ``block_medians`` (at least one)."""
    b = np.sort(np.asarray(block_medians, dtype=float))
    return float(b[:max(1, int(round(len(b) * FAST_SHARE)))].mean())


def input_feeds(sess, n: int = PLACEMENTS, seed: int = 0) -> list[dict]:
    """``n`` feeds for ``sess``'s input, each a fresh buffer holding the same random values at its own
    offset (64-byte aligned, as allocators align), so that blocks see different input placements."""
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    size = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(size).astype(np.float32)
    feeds = []
    for _ in range(n):
        off = 16 * int(rng.integers(0, 64))
        buf = np.empty(size + 1024, dtype=np.float32)
        x = buf[off:off + size]
        x[:] = values
        feeds.append({inp.name: x.reshape(shape)})
    return feeds


class _Timer:
    """One open session of one model: its feeds, and the blocks of timed runs made so far."""

    def __init__(self, sess, seed: int, clock: str) -> None:
        self.sess, self.run = sess, sess.run
        self.out_names = [o.name for o in sess.get_outputs()]
        self.feeds = input_feeds(sess, PLACEMENTS, seed)
        self.now = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
        self.blocks: list[np.ndarray] = []

    def warm(self, n: int) -> None:
        for _ in range(n):
            self.run(self.out_names, self.feeds[0])

    def block(self, runs: int) -> None:
        """One untimed run (the caches hold another model's data), then ``runs`` timed runs."""
        feed, run, out, now = self.feeds[len(self.blocks) % len(self.feeds)], self.run, self.out_names, self.now
        run(out, feed)
        t = np.empty(runs)
        for i in range(runs):
            t0 = now()
            run(out, feed)
            t[i] = now() - t0
        self.blocks.append(t / 1e6)


def summarize(sessions: list[list[np.ndarray]]) -> dict:
    """Statistics of one model from its timed runs, grouped by session and block (ms).

    ``latency_ms`` is the figure (:func:`fast_mean` of all block medians); ``median_ms``, ``p10_ms``,
    ``p90_ms``, ``mean_ms``, ``min_ms`` describe all timed runs, ``spread`` is (p90 - p10) / median of
    them, and ``session_spread`` is (slowest - fastest) / fastest of the sessions' own figures."""
    if not sessions or not all(sessions):
        raise RunnerError("no timed runs to summarise")
    meds = [[float(np.median(b)) for b in s] for s in sessions]
    runs = np.concatenate([b for s in sessions for b in s])
    med = float(np.median(runs))
    per_session = [fast_mean(m) for m in meds]
    p10, p90 = (float(v) for v in np.percentile(runs, [10, 90]))
    return {
        "latency_ms": fast_mean([m for s in meds for m in s]), "median_ms": med, "p10_ms": p10, "p90_ms": p90,
        "mean_ms": float(runs.mean()), "min_ms": float(runs.min()), "spread": (p90 - p10) / med if med > 0 else 0.0,
        "session_spread": (max(per_session) - min(per_session)) / min(per_session) if min(per_session) > 0 else 0.0,
        "runs": int(runs.size), "sessions": len(sessions), "blocks": sum(len(s) for s in sessions),
    }


def _check_counts(warmup: int, runs: int, blocks: int, sessions: int) -> None:
    if warmup < 0 or runs < 1 or blocks < 1 or sessions < 1:
        raise RunnerError(f"need warmup >= 0 and runs, blocks, sessions >= 1; got warmup={warmup}, runs={runs}, "
                          f"blocks={blocks}, sessions={sessions}")


def time_models(models: list, settings: list[tuple[int, int, int]] | tuple[int, int, int], sessions: int = 3,
                threads: int = 1, provider: str = "cpu", clock: str = "cpu", chunk: int = CHUNK,
                gap_s: float = 0.0, on_session=None, probe=None, reference: float | None = None,
                within: float = PROBE_TOLERANCE) -> list[dict]:
    """Time every model (an ONNX path or bytes) in ``sessions`` passes over the list.

    Pass ``p`` goes over the list rotated by ``p / sessions`` of its length (a model's sessions lie
    a pass-time apart), ``chunk`` models at a time: each gets a fresh session with its own input
    placements and ``warmup`` runs, then the open models take turns at blocks of ``runs`` timed runs
    (``settings``: one (warmup, blocks, runs) for all or one per model), so that even one session's
    blocks lie at different moments; ``gap_s`` pauses between turns (for a single model). Returns
    :func:`summarize`'s statistics per model, in order. ``on_session`` is called after each session
    is made (progress).

    ``probe`` (a model, e.g. :func:`latency.probe.probe_model`): a probe block precedes the blocks
    timed within :data:`PROBE_EVERY_S` of it (for one model or large ones, every block), and a
    model's ``latency_ms`` is read from its blocks :func:`gate` keeps against ``reference`` (None:
    the probe's fast level over the whole call), ``within`` that share of it; its statistics add ``probe_ms`` (the probe's fast
    level beside its blocks) and ``fast_blocks``."""
    n = len(models)
    per = [settings] * n if isinstance(settings, tuple) else list(settings)
    for w, b, r in per:
        _check_counts(w, r, b, sessions)
    timed: list[list[list[np.ndarray]]] = [[] for _ in range(n)]
    pairs: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    prober = new_prober(probe, threads, provider, clock) if probe is not None else None
    for p in range(sessions):
        order = pass_order(n, sessions, p)
        for c in range(0, n, chunk):
            idx = order[c:c + chunk]
            timers = {}
            for i in idx:
                timers[i] = _Timer(make_session(models[i], threads, provider), seed=1000 * p + i, clock=clock)
                timers[i].warm(per[i][0])
                if on_session:
                    on_session()
            for turn in range(max(per[i][1] for i in idx)):
                if turn and gap_s:
                    time.sleep(gap_s)
                probed_at = None  # (probe block median, when): one probe serves the blocks that follow closely
                for i in idx:
                    if turn >= per[i][1]:
                        continue
                    if prober is None:
                        timers[i].block(per[i][2])
                        continue
                    if probed_at is None or time.perf_counter() - probed_at[1] > PROBE_EVERY_S:
                        prober.block(PROBE_RUNS)
                        probed_at = (float(np.median(prober.blocks[-1])), time.perf_counter())
                    timers[i].block(per[i][2])
                    pairs[i].append((probed_at[0], float(np.median(timers[i].blocks[-1]))))
            for i in idx:
                timed[i].append(timers[i].blocks)
    if prober is None:
        return [summarize(t) for t in timed]
    level = reference or fast_mean([a for pr in pairs for a, _ in pr])
    return [summarize_gated(t, pr, level, within) for t, pr in zip(timed, pairs)]


def environment(threads: int, provider: str, clock: str) -> dict:
    """What a measurement depends on, recorded with every table."""
    return {"cpu": cpu_model(), "machine": platform.machine(), "system": platform.system(), "cores": os.cpu_count(),
            "ort_version": ort_version(), "threads": threads, "provider": resolve_provider(provider),
            "clock": resolve_clock(clock, threads, provider), "opt_level": OPT_LEVEL, "method": METHOD, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def read_manifest(folder: Path) -> dict:
    p = folder / "manifest.json"
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError:
        raise RunnerError(f"{p}: no manifest; pass the folder written by `cli.py latency export`") from None
    except json.JSONDecodeError as e:
        raise RunnerError(f"{p}: not valid JSON ({e.msg})") from None
    if not isinstance(m, dict) or not isinstance(m.get("items"), list):
        raise RunnerError(f"{p}: not a latency export manifest (no 'items' list)")
    return m


def pass_order(n: int, passes: int, p: int) -> list[int]:
    """Item order of pass ``p``: the list rotated by ``p / passes`` of its length, so that an item's
    passes lie one pass-time apart (a burst of load on a shared machine rarely spans them all)."""
    start = (p * n) // passes if passes else 0
    return [(start + i) % n for i in range(n)]


def run_folder(folder: str | os.PathLike, out: str | os.PathLike | None = None, threads: int = 1,
               provider: str = "cpu", clock: str = "auto", warmup: int | None = None, runs: int | None = None,
               progress: bool = True, passes: int | None = None, on_session=None, probe=None,
               reference: float | None = None) -> Path:
    """Measure every model of an export folder with :func:`time_models`: ``passes`` sessions per
    model (default: the manifest's), the manifest's warm-up runs, blocks and runs per block for
    units and for networks (``warmup`` and ``runs`` override both). Units and whole networks share
    the passes, so both see the same machine. ``probe`` and ``reference``: gate the blocks by a probe
    model, as :func:`time_models` does (a local build does; a device has no probe). Writes the CSV
    atomically."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    clock = resolve_clock(clock, threads, provider)
    passes = int(passes if passes is not None else manifest.get("passes", 1))
    if passes < 1:
        raise RunnerError(f"passes must be >= 1, got {passes}")
    env = environment(threads, provider, clock)
    items = manifest["items"]
    settings = []
    for item in items:
        kind = item.get("kind", "unit")
        settings.append((warmup if warmup is not None else int(manifest.get(f"{kind}_warmup", 2)),
                         int(manifest.get(f"{kind}_blocks", 3)),
                         runs if runs is not None else int(manifest.get(f"{kind}_runs", 5))))
    t_start, done, total = time.time(), [0], len(items) * passes

    def tick() -> None:
        done[0] += 1
        if on_session:
            on_session()
        if progress and (done[0] == total or done[0] % 25 == 0):
            el = time.time() - t_start
            print(f"measured {done[0]}/{total} (pass {(done[0] - 1) // max(1, len(items)) + 1}/{passes}), "
                  f"{el:.0f} s elapsed, ~{el / done[0] * (total - done[0]):.0f} s left", file=sys.stderr, flush=True)

    stats = time_models([folder / it["file"] for it in items], settings, passes, threads, provider, clock,
                        on_session=tick, probe=probe, reference=reference)
    rows = [{"file": it["file"], **{c: st[c] for c in CSV_COLUMNS[1:]}} for it, st in zip(items, stats)]
    out = Path(out) if out else folder / "measurements.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 would hide the CSV from the user's other tools
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(f"# hwnas-latency-runner {json.dumps({**env, 'manifest_id': manifest.get('id', '')})}\n")
            w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Time every ONNX model of a latency export folder with onnxruntime.")
    ap.add_argument("folder", help="folder with manifest.json and the ONNX files")
    ap.add_argument("--out", help="CSV to write (default FOLDER/measurements.csv)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--provider", default="cpu", help="cpu | cuda | a full onnxruntime provider name")
    ap.add_argument("--clock", default="auto", choices=CLOCKS, help="cpu (thread CPU time), wall, or auto")
    ap.add_argument("--warmup", type=int, help="warm-up runs per model (default from the manifest)")
    ap.add_argument("--runs", type=int, help="timed runs per block (default from the manifest)")
    ap.add_argument("--passes", type=int, help="passes over the whole list, a fresh session of every model in each "
                    "(default from the manifest)")
    args = ap.parse_args(argv)
    try:
        out = run_folder(args.folder, args.out, args.threads, args.provider, args.clock, args.warmup, args.runs,
                         passes=args.passes)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
