"""bench/latency_modes.py's analysis: slow spells found in a series, and protocols replayed on it."""

from __future__ import annotations

import numpy as np
import pytest

from .bench_scripts import bench_module


@pytest.fixture(scope="module")
def modes():
    return bench_module("latency_modes")


def series(slow_from: float, slow_to: float, seconds: float = 60.0, dt: float = 0.05):
    """A model at 2 ms with a 1.4x slow spell between ``slow_from`` and ``slow_to`` s, plus 1% noise."""
    t = np.arange(0, seconds, dt)
    ms = 2.0 * np.where((t >= slow_from) & (t < slow_to), 1.4, 1.0) * (1 + 0.01 * np.random.default_rng(0).random(len(t)))
    return t.tolist(), ms.tolist()


def test_spells_measure_the_share_and_length_of_slow_time(modes):
    t, ms = series(10, 40)
    from latency.runner import fast_mean

    level = fast_mean(ms)
    assert level == pytest.approx(2.0, rel=0.01)
    s = modes.spells(t, ms, level)
    assert s["spells"] == 1 and s["spell_s_max"] == pytest.approx(30, abs=0.1)
    assert s["slow_share"] == pytest.approx(0.5, abs=0.01) and s["slow_over_fast"] == pytest.approx(1.4, rel=0.02)


def test_a_protocol_longer_than_the_spell_always_sees_the_fast_level(modes):
    t, ms = series(10, 14)  # a 4 s spell
    short = modes.replay(t, ms, blocks=15, gap=0.05)  # about 1.5 s
    long = modes.replay(t, ms, blocks=30, gap=0.25)   # about 9 s
    assert short["within_3pct"] < 1 and short["worst"] > 0.3  # started inside the spell: 40% off
    assert long["within_3pct"] == 1.0
    assert modes.replay(t[:10], ms[:10], blocks=30, gap=0.25) == {"starts": 0}  # longer than the series
