"""Steering NetAdapt by what the device measures, not by what the predictor says.

The predictor sizes the proposals (one measurement cannot resolve a 1% cut on a shared CPU), but
every kept network is measured with onnxruntime and the measurement decides:

- **Stop** when the kept network's *measured* latency meets the target.
- **Size** the next cut in measured milliseconds and turn it into a predicted constraint through
  the measured milliseconds that one predicted millisecond of cut has bought so far
  (:func:`ms_per_predicted_ms`), so that the predictor's error is divided out whatever it is.
- **Confirm** a measurement that meets the target with ``CONFIRM_REPEATS`` measurements in all (in
  fresh sessions; their median counts), so that a run does not stop on one lucky measurement, and
  **aim** the last cut ``AIM_BELOW`` under the target, so that the final network still meets it
  when measured again (a network's measurement moves by a few percent between sessions, more on a
  busy machine).
- **Refuse** a kept network measured slower than the current one by more than ``RISE_TOLERANCE``
  (a cut onnxruntime turns into a slower kernel): the next best proposal is measured instead.

Without measurements (``--no-measure-iterations``) the predicted latency takes the measured one's
place and the ratio is 1: NetAdapt as the papers ran it, on the latency model alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from space.archspec import ArchSpec

if TYPE_CHECKING:
    from latency.measure import LatencyStats

AIM_BELOW = 0.02
MIN_SPAN = 0.15    # measured fall (share of the seed's latency) before the slope is trusted
SLOPE_LIMIT = 4.0  # the slope stays within 1/4x..4x of the current measured / predicted ratio
RISE_TOLERANCE = 0.03
MAX_MEASURED_TRIES = 3
CONFIRM_REPEATS = 3  # measurements (median) behind a stop, and behind the final report's figures


def first_cut_ms(delta: float, decay: float, base_ms: float, i: int) -> float:
    """Iteration ``i``'s cut, in the latency the run steers by: ``delta * base * decay**(i-1)``."""
    return delta * base_ms * decay ** (i - 1)


def ms_per_predicted_ms(points: list[tuple[float, float]], min_span: float = MIN_SPAN) -> float:
    """Measured ms cut per predicted ms cut, from the (predicted, measured) latencies of the seed and
    every kept network so far (seed first, current last).

    Until the measured latency has fallen by ``min_span`` of the seed's, single measurements are too
    noisy to give a slope (a 2% cut against a few percent of noise), and the current network's
    measured / predicted ratio stands in: right when the predictor's error is a share of the
    latency. Past that, the least-squares slope of measured on predicted over all the points: right
    also when the error is an offset, or grows as the network shrinks (the predictor overestimates
    trimmed MobileNetV3-Small by 1.0x at full width and up to 1.8x at x0.3, docs/benchmarks.md; there
    the ratio shrinks while each predicted ms cut buys more than one measured ms, and the ratio
    would size cuts 2x too large)."""
    p = np.array([pt[0] for pt in points], dtype=np.float64)
    m = np.array([pt[1] for pt in points], dtype=np.float64)
    if len(points) < 3 or m[0] - m[-1] < min_span * m[0]:
        return float(m[-1] / p[-1])
    slope = float(np.polyfit(p, m, 1)[0])
    # A slope out of all proportion to the ratio is noise (or a predictor that does not see the cuts).
    ratio = float(m[-1] / p[-1])
    return float(np.clip(slope, ratio / SLOPE_LIMIT, ratio * SLOPE_LIMIT))


def correction(st, history: list[dict[str, Any]]) -> float:
    """:func:`ms_per_predicted_ms` for a run in state ``st`` with kept networks ``history`` (rows of
    history.csv); 1 for a run that does not measure."""
    if st.measured_ms is None:
        return 1.0
    points = [(st.seed_predicted_ms, st.seed_measured_ms or st.seed_predicted_ms)]
    points += [(float(r["predicted_ms"]), float(r["measured_ms"])) for r in history if r.get("measured_ms")]
    if points[-1] != (st.predicted_ms, st.measured_ms):
        points.append((st.predicted_ms, st.measured_ms))
    return ms_per_predicted_ms(points)


def predicted_constraint(predicted_ms: float, ms_per_pred_ms: float, cut_ms: float) -> float:
    """The predicted latency a proposal must reach so that ``cut_ms`` is cut on the device."""
    return predicted_ms - cut_ms / ms_per_pred_ms


def figure_ms(stats) -> float:
    """The one figure NetAdapt reads from a ``latency.measure`` result: its ``latency_ms``, the
    figure tables and the predictor are made of (docs/latency.md, Measuring)."""
    return float(stats.latency_ms)


MEASURE_WAIT_S = 30.0  # the longest wait for the machine's fast mode per measurement (latency.probe)


class Device:
    """Measures networks (``latency.measure`` with one thread, waiting up to :data:`MEASURE_WAIT_S`
    for the machine's fast mode, or ``measure_fn``); a failed measurement is logged and gives None,
    never stops the run."""

    def __init__(self, measure_fn: Callable[..., Any] | None, log: Callable[[str], None]) -> None:
        self.measure_fn = measure_fn
        self.log = log
        self.seconds = 0.0

    def stats(self, spec: ArchSpec, repeats: int = 1) -> LatencyStats:
        """The measurement (``latency.measure``'s defaults, one thread) whose median is the median of
        ``repeats`` measurements, each in its own session."""
        t0 = time.perf_counter()
        try:
            if self.measure_fn is not None:
                runs = [self.measure_fn(spec) for _ in range(repeats)]
            else:
                from latency import measure

                runs = [measure(spec, threads=1, wait_s=MEASURE_WAIT_S) for _ in range(repeats)]
            return sorted(runs, key=figure_ms)[(len(runs) - 1) // 2]
        finally:
            self.seconds += time.perf_counter() - t0

    def ms(self, spec: ArchSpec, repeats: int = 1) -> float | None:
        """:meth:`stats`' median in ms; None (logged) when the measurement fails."""
        try:
            return figure_ms(self.stats(spec, repeats))
        except Exception as e:  # a measurement problem must not lose the iteration
            from netadapt.runner import first_line

            self.log(f"  (latency measurement failed: {first_line(e)})")
            return None


def accept_measured(candidates: list, device_ms: Callable[[Any], float | None], current_ms: float
                    ) -> tuple[Any, float | None, int]:
    """The first of ``candidates`` (best first) whose measured latency does not exceed
    ``current_ms`` by more than :data:`RISE_TOLERANCE`, trying at most :data:`MAX_MEASURED_TRIES`;
    when all tried rise, the one measured fastest. Returns (candidate, its measurement, how many
    better-scored candidates were passed over)."""
    tried: list[float] = []
    for k, cand in enumerate(candidates[:MAX_MEASURED_TRIES]):
        ms = device_ms(cand)
        if ms is None or ms <= current_ms * (1 + RISE_TOLERANCE):
            return cand, ms, k
        tried.append(ms)
    k = min(range(len(tried)), key=tried.__getitem__)
    return candidates[k], tried[k], k
