"""Which speed mode this machine is in: a fixed probe model timed beside a measurement, against the
fastest level the probe has shown here before.

A virtual machine's speed moves between modes. On the development VM, spells in which every model
runs 1.28-1.40x slower come and go with nothing else running, lasting from a fraction of a second
to two minutes (``bench/latency_modes.py``, docs/benchmarks.md); no measurement of a few seconds
can tell such a spell from the network's own time. The probe can: it is slowed at the same moments
(block by block its mode agreed with three networks' modes 93-95% of the time), and its time in the
fast mode is known once it has been timed over minutes. So a whole-network measurement
(:func:`latency.measure.measure`) times a probe block before each of its blocks, keeps the blocks
whose probe ran at the fast level, and, given time to wait, keeps measuring until it has some.

The reference is this machine's fastest probe level seen so far, per onnxruntime setting, in
``results/latency/probe.json``; every table build and ``latency probe`` lower it where they see the
probe run faster. Without one, a measurement compares its probe blocks with each other.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write_text
from common.paths import results_dir
from latency.runner import PROBE_RUNS

# Blocks in the fast mode that a measurement waits for, when it may wait. 8, not 3: figures of the reference
# networks in fresh processes lay more than 3% off their median 7% of the time against 27%
# (bench/records/latency_repeat/PROTOCOL-min-fast.md), at about 1.5x the time per measurement.
MIN_FAST = 8


@functools.lru_cache(maxsize=1)
def probe_model() -> bytes:
    """The probe: an inverted bottleneck (1x1 to 96 channels, 3x3 depthwise, 1x1 back to 32) on a
    56x56 map, about 0.3 ms with one thread on the development machine."""
    import torch

    from latency.measure import export_module

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(32, 96, 1), torch.nn.ReLU(), torch.nn.Conv2d(96, 96, 3, padding=1, groups=96),
                            torch.nn.ReLU(), torch.nn.Conv2d(96, 32, 1))
    return export_module(m.eval(), (1, 32, 56, 56))


def path() -> Path:
    return results_dir() / "latency" / "probe.json"


def setting_key(threads: int, provider: str, clock: str) -> str:
    from latency.runner import cpu_model, ort_version

    return f"{cpu_model()} | onnxruntime {ort_version()} | {provider} | {threads} thread(s) | {clock} clock"


def _read() -> dict[str, Any]:
    try:
        doc = json.loads(path().read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}  # no reference yet, or an unreadable one: measure without it


def reference_ms(threads: int = 1, provider: str = "cpu", clock: str = "cpu") -> float | None:
    """This machine's fastest probe level for these settings, or None when none was recorded."""
    entry = _read().get(setting_key(threads, provider, clock))
    ms = entry.get("ms") if isinstance(entry, dict) else None
    return float(ms) if isinstance(ms, (int, float)) and ms > 0 else None


def record(level_ms: float, threads: int = 1, provider: str = "cpu", clock: str = "cpu") -> float:
    """Lower the reference to ``level_ms`` where that is faster (atomically); the reference after."""
    doc = _read()
    key = setting_key(threads, provider, clock)
    old = reference_ms(threads, provider, clock)
    level = round(float(level_ms), 5)
    if old is not None and old <= level:
        return old
    doc[key] = {"ms": level, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path(), json.dumps(doc, indent=1, sort_keys=True))
    return level


def time_probe(seconds: float = 2.0, threads: int = 1, provider: str = "cpu", clock: str = "cpu") -> list[float]:
    """Probe block medians (ms) over ``seconds``, one block every 50 ms: its level over that time."""
    from latency.runner import _Timer, make_session

    t = _Timer(make_session(probe_model(), threads, provider), seed=0, clock=clock)
    t.warm(5)
    end = time.monotonic() + seconds
    while True:
        t.block(PROBE_RUNS)
        if time.monotonic() >= end:
            break
        time.sleep(0.05)
    return [float(np.median(b)) for b in t.blocks]
