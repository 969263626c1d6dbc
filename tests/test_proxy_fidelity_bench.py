"""bench/proxy_fidelity.py's ASHA replay: Tune's scheduler deciding on recorded learning curves."""

from __future__ import annotations

import pytest

from .bench_scripts import bench_module


@pytest.fixture(scope="module")
def fidelity():
    return bench_module("proxy_fidelity")


def curves(epochs_at: list[float], n: int = 9) -> dict:
    """Network ``i`` has reward ``i`` at every report (the better networks are better from the start), one
    second per half epoch; the reports lie at ``epochs_at`` and the end at 2 epochs."""
    return {i: [(e, float(i), 2 * e) for e in epochs_at] + [(2.0, float(i), 4.0)] for i in range(n)}


def test_asha_replay_stops_the_poor_networks_at_the_first_rung(fidelity):
    trained = fidelity.replay_asha(curves([0.5, 1.0, 1.5]), list(range(9)), grace=0.5, rf=3, max_t=2.0, concurrency=1)
    # Proposed worst first, every network reaches the rung above those recorded before it: none stops.
    assert set(trained.values()) == {2.0}
    order = list(range(8, -1, -1))  # best first: each later network is below the rung's cutoff
    trained = fidelity.replay_asha(curves([0.5, 1.0, 1.5]), order, grace=0.5, rf=3, max_t=2.0, concurrency=1)
    assert trained[8] == 2.0 and all(trained[i] == 0.5 for i in range(7))
    assert sum(trained.values()) < 0.4 * 2.0 * 9


def test_asha_replay_takes_points_scored_a_step_off_the_rung_as_the_rung(fidelity):
    # Scored at the step nearest each half epoch, 157 steps an epoch: 78 steps is 0.497 epochs, not 0.5.
    off = [78 / 157, 1.0, 236 / 157]
    order = list(range(8, -1, -1))
    exact = fidelity.replay_asha(curves([0.5, 1.0, 1.5]), order, grace=0.5, rf=3, max_t=2.0, concurrency=1)
    assert fidelity.replay_asha(curves(off), order, 0.5, 3, 2.0, 1, step=1 / 157 + 1e-9) == exact
    # Matched exactly, the first rung is never reported and ASHA can only decide at the end.
    missed = fidelity.replay_asha(curves(off), order, 0.5, 3, 2.0, 1)
    assert set(missed.values()) == {2.0}


def test_cifar10_kinds_train_on_the_cifar_proxy_images_whatever_their_length(fidelity):
    for name, epochs in (("cifar10-e4", 4.0), ("cifar10-e3", 3.0), ("cifar10-e1", 1.0)):
        recipe = fidelity.kind_named(name).recipe
        assert (recipe.epochs, recipe.train_images, recipe.eval_images) == (epochs, 5000, 2000)
    # The declared longer proxy is scored at every rung of ASHA at grace 0.5 with reduction factor 2 or 3.
    assert {0.5, 1.0, 1.5, 2.0} <= set(fidelity.kind_named("cifar10-e4").curve)
    digits = fidelity.kind_named("digits-r8-e2-s0-v25").recipe
    assert digits.train_images != 5000 and digits.resolution == 8


def test_paired_tau_difference_tells_a_proxy_that_ranks_better_and_one_that_is_the_same(fidelity):
    n = 16
    long = {i: {"result": {"accuracy": 0.3 + 0.01 * i}} for i in range(n)}
    lat = {i: 5.0 for i in range(n)}  # one latency: the reward orders as the accuracy does
    exact = {i: {"result": {"accuracy": 0.1 + 0.005 * i}} for i in range(n)}
    shuffled = {i: {"result": {"accuracy": 0.1 + 0.005 * ((7 * i) % n)}} for i in range(n)}
    same = fidelity.paired_difference(exact, exact, long, lat)
    assert same["difference"] == 0 and same["difference_90"] == [0.0, 0.0]
    better = fidelity.paired_difference(exact, shuffled, long, lat)
    assert better["difference"] > 0.5 and better["difference_90"][0] > 0 and better["share_above_zero"] > 0.95
    assert fidelity.paired_difference(exact, {0: exact[0]}, long, lat) is None  # too few networks in common
    lo, hi = fidelity.interval(fidelity.bootstrap_kendall([(list(range(n)), list(range(n)))], resamples=50)[:, 0])
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
