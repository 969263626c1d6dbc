"""bench/latency_at_budget.py: the end-to-end table's error on networks near the latency budget."""

from __future__ import annotations

import numpy as np
import pytest

from .bench_scripts import bench_module


@pytest.fixture(scope="module")
def lab():
    return bench_module("latency_at_budget")


def test_scores_separate_absolute_error_from_error_against_the_target(lab):
    meas = np.array([1.0, 2.0, 1.0, 1.0])
    meas_t = np.array([1.0, 1.0, 2.0, 2.0])  # the machine twice as slow for the last two groups
    pred = np.array([1.0, 2.08, 0.5, 0.6])
    sc = lab.scores(pred, meas, 1.0, meas_t)
    a, r = sc["absolute"], sc["relative_to_target"]
    assert a["n"] == 4 and a["within_10pct"] == pytest.approx(0.5) and a["within_5pct"] == pytest.approx(0.5)
    assert a["mape"] == pytest.approx((0 + 4 + 50 + 40) / 4)
    # against the target: 1/1 vs 1/1, 2.08/1 vs 2/1, 0.5/1 vs 1/2, 0.6/1 vs 1/2 -> 0, +4%, 0, +20%
    assert r["within_5pct"] == pytest.approx(0.75) and r["within_10pct"] == pytest.approx(0.75)
    assert r["mape"] == pytest.approx(24 / 4) and r["median_error"] == pytest.approx(0.02)


def test_random_networks_are_the_space_samples_of_their_seed(lab):
    from space.searchspace import get_space

    nets = lab.random_networks("mnasnet_cifar_wide", 3, 123)
    sp = get_space("mnasnet_cifar_wide")
    assert [n["draw"] for n in nets] == [0, 1, 2]
    assert [n["tokens"] for n in nets] == ["-".join(map(str, sp.sample(123 + j))) for j in range(3)]


@pytest.mark.parametrize("argv, message", [
    (["--band", "1.6,0.6"], "need 0 < LO < HI"),
    (["--band", "wide"], "must be two ratios"),
    (["--n", "0"], "--n must be at least 1"),
    (["--near", "0.9"], "--near '0.9' must be two ratios"),
    (["--space", "mnasnet"], "stem is at stride 1"),
])
def test_bad_arguments_are_one_line_and_exit_2(lab, argv, message, capsys, tmp_path):
    assert lab.main([*argv, "--work", str(tmp_path / "w"), "--records", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()


def test_a_table_is_reused_only_for_the_calibration_it_was_built_with(lab, monkeypatch):
    from common.errors import UserError

    monkeypatch.setenv("HWNAS_RESULTS", "/some/work")
    lab.check_reuse({"calibration_near_ms": None}, None)
    lab.check_reuse({"calibration_near_ms": [0.6, 1.6]}, (0.5, 1.5))  # the ms range follows the target's time
    with pytest.raises(UserError, match="in /some/work was built without --near; give another --work"):
        lab.check_reuse({}, (0.6, 1.6))
    with pytest.raises(UserError, match="was built with --near"):
        lab.check_reuse({"calibration_near_ms": [0.6, 1.6]}, None)


def test_each_calibration_candidate_is_refitted_on_the_tables_own_networks(lab, tiny_predictor, monkeypatch):
    from pathlib import Path

    from latency.testing import TINY_DEVICE, TINY_RESOLUTION
    from space.searchspace import get_space

    monkeypatch.setenv("HWNAS_RESULTS", str(Path(tiny_predictor.meta["device_dir"]).parents[1]))
    sp = get_space("mnasnet")
    specs = [sp.decode(sp.sample(900 + j), resolution=TINY_RESOLUTION, num_classes=10) for j in range(5)]
    got = lab.candidate_calibrations(tiny_predictor, TINY_DEVICE)
    # Six calibration networks: the shared scale is the only candidate, and refitted it is the table's own.
    assert tiny_predictor.calibration.kind == "scale" and set(got) == {"scale"}
    assert got["scale"].n_networks == tiny_predictor.calibration.n_networks == 6
    Fs = tiny_predictor.calib_features(specs)
    assert got["scale"].apply(Fs) == pytest.approx(tiny_predictor.predict_many(specs), rel=1e-9)
    assert lab.candidate_calibrations(tiny_predictor, "no-such-device") == {}


def test_how_far_the_target_moved_between_its_groups(lab):
    assert lab.target_moved([2.0, 2.0, 2.0]) == 0.0
    # the seed-600,000 run's five groups on a noisy VM: 1.93-2.35 ms
    assert lab.target_moved([1.9271, 1.9726, 2.0075, 2.3482, 2.3485]) == pytest.approx((2.3485 - 1.9271) / 2.0075)
    assert lab.target_moved([1.0, 1.05]) < lab.NOISY < lab.target_moved([1.0, 1.2])
