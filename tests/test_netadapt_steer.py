"""Steering by measured latency: the ms each predicted ms of cut buys, and refusing kept networks
that the device measures slower."""

from __future__ import annotations

import pytest

from netadapt import steer


def test_ratio_until_the_measured_latency_has_fallen_enough():
    # 10% fallen: too little to trust a slope, the current measured / predicted ratio stands in.
    points = [(10.0, 5.0), (9.0, 4.75), (8.0, 4.5)]
    assert steer.ms_per_predicted_ms(points) == pytest.approx(4.5 / 8.0)


def test_slope_once_the_measured_latency_has_fallen_enough():
    # A device at 1 + 0.4 x predicted: the ratio (0.53 here) would double-size each cut, the slope is 0.4.
    points = [(p, 1.0 + 0.4 * p) for p in (10.0, 9.0, 8.0, 6.0)]
    assert steer.ms_per_predicted_ms(points) == pytest.approx(0.4)
    # A predictor that overestimates as the network shrinks: each predicted ms cut buys more than one.
    grows = [(10.0, 10.0), (9.0, 8.5), (8.0, 7.0), (7.0, 5.5)]
    assert steer.ms_per_predicted_ms(grows) == pytest.approx(1.5)


def test_a_slope_out_of_proportion_is_bounded():
    # The predictor barely moves while the device falls: the slope is held at 4x the ratio.
    points = [(10.0, 10.0), (9.99, 8.0), (9.98, 6.0)]
    assert steer.ms_per_predicted_ms(points) == pytest.approx(4 * 6.0 / 9.98)


def test_constraint_divides_the_cut_by_the_correction():
    assert steer.predicted_constraint(10.0, 0.5, 1.0) == pytest.approx(8.0)


def test_kept_network_measured_slower_is_passed_over():
    ms = {"a": 1.10, "b": 0.99, "c": 0.95}
    assert steer.accept_measured(["a", "b", "c"], ms.get, 1.0) == ("b", 0.99, 1)
    # Within the tolerance a rise is measurement noise, not a slower network.
    assert steer.accept_measured(["a", "b"], {"a": 1.02, "b": 0.9}.get, 1.0) == ("a", 1.02, 0)
    # All tried rise: the one measured fastest; a failed measurement (None) is not held against a proposal.
    assert steer.accept_measured(["a", "b", "c", "d"], {"a": 1.2, "b": 1.1, "c": 1.3, "d": 0.5}.get, 1.0) == ("b", 1.1, 1)
    assert steer.accept_measured(["a"], {"a": None}.get, 1.0) == ("a", None, 0)
