"""Every build checks itself: a handful of fresh networks of every family, measured with the build's
units and scored by the predictor it just fitted. The figures go into the table's metadata
(``self_check``), with what the machine was doing during the build (load average, how far a unit's
sessions lay apart), and a warning says what to do when the check missed or the machine was busy.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from space.archspec import ArchSpec

WITHIN = 0.10          # a self-check network is good when predicted within +/-10% of its measurement
MAX_MISSES = 0.10      # the check fails when more than a tenth of its networks are off by more
BUSY_SESSION_SPREAD = 0.10  # a unit's sessions lying further apart than this (median) means a busy machine
BUSY_LOAD_PER_CORE = 0.75   # the build itself adds 1 to the load average


def machine_load() -> float:
    return float(os.getloadavg()[0])


def busy(session_spreads: np.ndarray, loads: list[float], cores: int | None = None) -> list[str]:
    """Why the machine looked busy during a build (empty when it did not)."""
    cores = cores or os.cpu_count() or 1
    why = []
    if len(session_spreads) and float(np.median(session_spreads)) > BUSY_SESSION_SPREAD:
        why.append(f"a unit's sessions lay {float(np.median(session_spreads)):.0%} apart (median)")
    if loads and max(loads) > BUSY_LOAD_PER_CORE * cores:
        why.append(f"load average up to {max(loads):.1f} on {cores} cores")
    return why


def evaluate(pred, checks: list[dict[str, Any]], seed: int, session_spreads: np.ndarray,
             loads: list[float]) -> dict[str, Any]:
    """The self-check record: per network its family and error, the share within +/-10%, MAPE, the
    worst error, whether it passed, and whether the machine looked busy."""
    specs = [ArchSpec.from_json(c["spec"]) for c in checks]
    measured = np.array([c["latency_ms"] for c in checks], float)
    err = pred.predict_many(specs) / measured - 1 if checks else np.zeros(0)
    within = float(np.mean(np.abs(err) <= WITHIN)) if checks else float("nan")
    worst = int(np.argmax(np.abs(err))) if checks else -1
    return {
        "seed": seed, "n": len(checks), "within_10pct": within,
        "mape": float(np.mean(np.abs(err)) * 100) if checks else float("nan"),
        "worst": {"family": checks[worst]["family"], "error": float(err[worst])} if checks else None,
        "errors": [{"family": c["family"], "error": round(float(e), 4)} for c, e in zip(checks, err)],
        "passed": bool(checks) and within >= 1 - MAX_MISSES,
        "busy": busy(session_spreads, loads), "loadavg_1m": [round(x, 2) for x in loads],
        "unit_session_spread_median": float(np.median(session_spreads)) if len(session_spreads) else None,
    }


def summary(rec: dict[str, Any]) -> str:
    """One line: the self-check's figures."""
    if not rec.get("n"):
        return "self-check: no networks measured"
    w = rec["worst"]
    return (f"self-check: {rec['n']} fresh networks (seed {rec['seed']}): {rec['within_10pct']:.0%} within +/-10%, "
            f"MAPE {rec['mape']:.1f}%, worst {w['error']:+.0%} ({w['family']})")


def failed(rec: dict[str, Any] | None) -> bool:
    """Whether a self-check record measured networks and missed (a build without one has nothing to judge)."""
    return bool(rec and rec.get("n") and not rec.get("passed"))


def advice(rec: dict[str, Any] | None, device: str, busy_too: bool = True) -> str | None:
    """What to do about a table whose self-check missed or (``busy_too``) whose build saw a busy
    machine; None when there is nothing to do."""
    if not rec:
        return None
    rebuild = (f"delete {device}'s table and run `python cli.py latency build --device {device}` on an idle machine "
               "(`python cli.py latency probe` tells how much of the time it runs slow by itself)")
    if failed(rec):
        why = f" while the machine was busy ({'; '.join(rec['busy'])})" if rec.get("busy") else ""
        return (f"the {device} latency table failed its self-check{why}: {summary(rec)[len('self-check: '):]}; "
                f"predictions may be off by more than 10%: {rebuild}")
    if busy_too and rec.get("busy"):
        passed = "its self-check passed, but " if rec.get("n") else ""
        return (f"the {device} latency table was measured on a busy machine ({'; '.join(rec['busy'])}); "
                f"{passed}its figures may drift: {rebuild}")
    return None


def warn_if_needed(meta: dict[str, Any], device: str, busy_too: bool = False) -> None:
    """A one-line warning when ``meta``'s self-check missed, or (``busy_too``: right after the build)
    its build saw a busy machine."""
    msg = advice(meta.get("self_check"), device, busy_too)
    if msg:
        warnings.warn(msg, stacklevel=3)
