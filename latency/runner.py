#!/usr/bin/env python3
"""Standalone latency runner for the target device: needs only onnxruntime and numpy.

Copy the folder written by ``python cli.py latency export`` (ONNX files + ``manifest.json`` +
this script) to the device and run::

    python3 runner.py FOLDER [--threads 1] [--provider cpu] [--out FOLDER/measurements.csv]

It times every model the manifest lists and writes a CSV (one row per file: median, p10, p90,
spread, runs) whose first lines are ``#`` comments with the device's CPU, onnxruntime version,
threads, provider, clock and optimisation level; ``python cli.py latency import CSV --device
NAME`` turns it into a latency table. The project's own measurements use the same functions.

Method: fixed intra-op threads, one inter-op thread, sequential execution, graph optimisation
level ORT_ENABLE_ALL, no spinning worker threads; warm-up runs, then the timed runs in rounds,
keeping the round with the lowest median (see :func:`time_session`); the whole list is measured in
``passes`` passes (the manifest says how many) and each model keeps its quietest pass.
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

import numpy as np

OPT_LEVEL = "all"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CLOCKS = ("auto", "cpu", "wall")
CSV_COLUMNS = ("file", "median_ms", "p10_ms", "p90_ms", "mean_ms", "min_ms", "spread", "runs", "rounds", "round_runs",
               "passes")


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


def make_session(model, threads: int = 1, provider: str = "cpu"):
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


def time_session(sess, warmup: int = 10, runs: int = 50, max_spread: float = 0.15, rounds: int = 5,
                 clock: str = "cpu") -> dict:
    """Time ``sess`` on a fixed random input of its declared shape; statistics in ms.

    The ``runs`` timed runs are split into ``rounds`` rounds spread over time; the round with the
    lowest median is kept (the quietest moment of a shared machine; on an idle device all rounds
    agree). When even that round's spread (p90 - p10) / median exceeds ``max_spread``, up to
    ``rounds`` more rounds are made.
    """
    if warmup < 0 or runs < 1 or rounds < 1:
        raise RunnerError(f"need warmup >= 0, runs >= 1, rounds >= 1; got {warmup}, {runs}, {rounds}")
    now = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    out_names = [o.name for o in sess.get_outputs()]
    run = sess.run
    for _ in range(warmup):
        run(out_names, feed)
    rounds = min(rounds, runs)
    per_round = runs // rounds
    best, best_med, best_spread, used = None, float("inf"), float("inf"), 0
    while used < rounds or (best_spread > max_spread and used < 2 * rounds):
        used += 1
        times = np.empty(per_round)
        for i in range(per_round):
            t0 = now()
            run(out_names, feed)
            times[i] = now() - t0
        times /= 1e6
        med = float(np.median(times))
        if med < best_med:
            spread = float(np.percentile(times, 90) - np.percentile(times, 10)) / med if med > 0 else 0.0
            best, best_med, best_spread = times, med, spread
    return {
        "median_ms": best_med, "p10_ms": float(np.percentile(best, 10)),
        "p90_ms": float(np.percentile(best, 90)), "mean_ms": float(best.mean()), "min_ms": float(best.min()),
        "spread": best_spread, "runs": per_round * used, "rounds": used, "round_runs": per_round,
    }


def environment(threads: int, provider: str, clock: str) -> dict:
    """What a measurement depends on, recorded with every table."""
    return {"cpu": cpu_model(), "machine": platform.machine(), "system": platform.system(), "cores": os.cpu_count(),
            "ort_version": ort_version(), "threads": threads, "provider": resolve_provider(provider),
            "clock": resolve_clock(clock, threads, provider), "opt_level": OPT_LEVEL, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


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
               progress: bool = True, passes: int | None = None) -> Path:
    """Measure every model of an export folder in ``passes`` passes over the whole list (default:
    the manifest's, else 1), each model keeping its quietest pass (lowest median); units and whole
    networks share the passes, so both see the same machine. Writes the CSV atomically."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    clock = resolve_clock(clock, threads, provider)
    passes = int(passes if passes is not None else manifest.get("passes", 1))
    if passes < 1:
        raise RunnerError(f"passes must be >= 1, got {passes}")
    env = environment(threads, provider, clock)
    items = manifest["items"]
    best: list[dict | None] = [None] * len(items)
    t_start, done, total = time.time(), 0, len(items) * passes
    for p in range(passes):
        for i in pass_order(len(items), passes, p):
            item = items[i]
            kind = item.get("kind", "unit")
            w = warmup if warmup is not None else manifest.get(f"{kind}_warmup", 5)
            r = runs if runs is not None else manifest.get(f"{kind}_runs", 30)
            nr = manifest.get(f"{kind}_rounds", 3)
            sess = make_session(folder / item["file"], threads, provider)
            row = {"file": item["file"], **time_session(sess, w, r, rounds=nr, clock=clock), "passes": passes}
            if best[i] is None or row["median_ms"] < best[i]["median_ms"]:
                best[i] = row
            done += 1
            if progress and (done == total or done % 25 == 0):
                el = time.time() - t_start
                print(f"measured {done}/{total} (pass {p + 1}/{passes}), {el:.0f} s elapsed, "
                      f"~{el / done * (total - done):.0f} s left", file=sys.stderr, flush=True)
    rows = [r for r in best if r is not None]
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
    ap.add_argument("--runs", type=int, help="timed runs per model (default from the manifest)")
    ap.add_argument("--passes", type=int, help="passes over the whole list, each model keeping its quietest "
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
