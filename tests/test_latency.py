"""Latency: measurement, table, predictor, on-device flow, CLI. Real onnxruntime, tiny inputs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import cli
from common.errors import UserError
from latency.files import units_path
from latency.load import load_predictor
from latency.measure import export_spec, measure
from latency.predictor import Calibration, Predictor
from latency.signature import FEATURES, Sig, feature_matrix, spec_sigs
from latency.table import LatencyTable
from latency.testing import TINY_DEVICE, TINY_RESOLUTION
from latency.units import MEASURE_PASSES
from space.cost import cost
from space.references import reference
from space.searchspace import get_space

ROOT = Path(__file__).resolve().parents[1]


def _spec(seed: int = 0, resolution: int = TINY_RESOLUTION, classes: int = 1000):
    sp = get_space("mnasnet")
    return sp.decode(sp.sample(seed), resolution=resolution, num_classes=classes)


def _pruned(spec):
    """Shrink every mbconv's expansion to an odd count, as NetAdapt may."""
    layers = [replace(lay, exp_ch=max(1, lay.exp_ch - 11)) if lay.op == "mbconv" else lay for lay in spec.layers]
    return spec.with_layers(layers)


@pytest.fixture
def tiny_results(tiny_predictor, tmp_path, monkeypatch):
    """The tiny device's folder copied into this test's results folder."""
    dst = tmp_path / "results" / "latency" / TINY_DEVICE
    shutil.copytree(tiny_predictor.meta["device_dir"], dst)
    monkeypatch.setenv("HWNAS_RESULTS", str(tmp_path / "results"))
    return dst


# ---- measurement ---------------------------------------------------------------------------

def test_measure_spec_stats_are_ordered_and_recorded():
    st = measure(_spec(1, 32), warmup=2, runs=5, blocks=4, sessions=2, gap_s=0.0)
    assert 0 < st.min_ms <= st.latency_ms <= st.p90_ms and st.p10_ms <= st.median_ms <= st.p90_ms
    assert st.runs == 2 * 4 * 5 and st.sessions == 2 and st.blocks == 8 and st.threads == 1
    assert st.session_spread >= 0
    assert st.provider == "CPUExecutionProvider" and st.clock == "cpu" and st.opt_level == "all"
    assert st.ort_version


def test_latency_figure_is_the_fastest_fifth_of_the_blocks_not_their_median():
    from latency.runner import fast_mean, summarize

    fast, slow = [np.full(5, 1.0)] * 3, [np.full(5, 2.0)] * 7  # 3 of 10 blocks undisturbed
    st = summarize([fast[:2] + slow[:3], fast[2:] + slow[3:]])
    assert st["latency_ms"] == 1.0 and st["median_ms"] == 2.0 and st["spread"] == pytest.approx(0.5)
    assert (st["sessions"], st["blocks"], st["runs"]) == (2, 10, 50)
    assert st["session_spread"] == 0  # both sessions reached the undisturbed level
    apart = summarize([[np.full(5, 1.0)], [np.full(5, 1.5)]])
    assert apart["latency_ms"] == 1.0 and apart["session_spread"] == pytest.approx(0.5)
    assert fast_mean([3.0, 1.0, 2.0, 5.0, 4.0, 9.0, 8.0, 7.0, 6.0, 10.0]) == 1.5


def test_blocks_take_turns_over_fresh_sessions_and_input_placements():
    from latency.onnx_units import unit_onnx_bytes
    from latency.runner import input_feeds, make_session, time_models

    unit = unit_onnx_bytes(Sig("mbconv", 3, 1, 8, 8, 24, 0, "relu", True, 8, 0))
    feeds = input_feeds(make_session(unit), 3)
    arrays = [next(iter(f.values())) for f in feeds]
    assert len({a.ctypes.data for a in arrays}) == 3 and all(np.array_equal(arrays[0], a) for a in arrays)
    made = []
    stats = time_models([unit, unit], [(1, 3, 2), (0, 2, 4)], sessions=2, on_session=lambda: made.append(1))
    assert len(made) == 4  # a fresh session of each model in each pass
    assert [(st["sessions"], st["blocks"], st["runs"]) for st in stats] == [(2, 6, 12), (2, 4, 16)]


def test_measure_onnx_file_and_wall_clock(tmp_path):
    path = tmp_path / "net.onnx"
    export_spec(_spec(2, 32), path)
    st = measure(path, warmup=1, runs=3, blocks=2, sessions=1, clock="wall", gap_s=0.0)
    assert st.clock == "wall" and st.latency_ms > 0


def test_measure_rejects_unavailable_provider_listing_the_available_ones():
    with pytest.raises(UserError, match="CPUExecutionProvider"):
        measure(_spec(0, 32), provider="NoSuchExecutionProvider", runs=1)


def test_measure_rejects_missing_onnx_file(tmp_path):
    with pytest.raises(UserError, match="no such ONNX file"):
        measure(tmp_path / "missing.onnx")


def test_gated_timing_reads_only_blocks_whose_probe_ran_fast():
    from latency.runner import gate, time_models

    assert gate([(1.0, 5.0), (1.05, 6.0), (1.3, 9.0)], 1.0) == [5.0, 6.0]
    unit = export_spec(_spec(1, 32))
    probe_bytes = __import__("latency.probe", fromlist=["probe_model"]).probe_model()
    (st,) = time_models([unit], (1, 3, 3), sessions=2, probe=probe_bytes)
    assert st["probe_ms"] > 0 and 1 <= st["fast_blocks"] <= 6 and st["blocks"] == 6
    (never,) = time_models([unit], (1, 3, 3), sessions=1, probe=probe_bytes, reference=1e-9)
    assert never["fast_blocks"] == 0 and never["latency_ms"] <= never["median_ms"]  # the fastest fifth of all
    # The same reference with a gate wide enough for any probe: every block counts.
    (wide,) = time_models([unit], (1, 3, 3), sessions=1, probe=probe_bytes, reference=1e-9, within=1e12)
    assert wide["fast_blocks"] == 3


def test_one_probe_block_serves_the_blocks_timed_right_after_it(monkeypatch):
    from latency import runner
    from latency.probe import probe_model

    units = [export_spec(_spec(i, 16)) for i in range(3)]
    monkeypatch.setattr(runner, "PROBE_EVERY_S", 1e9)  # one probe per turn over the open models
    shared = runner.time_models(units, (1, 4, 2), sessions=2, probe=probe_model())
    assert len({(st["probe_ms"], st["fast_blocks"]) for st in shared}) == 1  # every model saw the same probes
    assert all(st["blocks"] == 8 and 1 <= st["fast_blocks"] <= 8 for st in shared)
    monkeypatch.setattr(runner, "PROBE_EVERY_S", 0.0)  # a probe before every block
    own = runner.time_models(units, (1, 4, 2), sessions=2, probe=probe_model())
    assert len({st["probe_ms"] for st in own}) == 3


def test_a_build_round_waits_for_the_fast_mode_only_as_long_as_its_plan_allows():
    from latency import probe
    from latency.build import _wait_for_fast

    assert _wait_for_fast(1, "cpu", 5.0) == 0.0  # no reference yet: nothing to wait for
    probe.record(1e-4)  # a level no probe reaches: a slow spell that never ends
    assert 0.5 <= _wait_for_fast(1, "cpu", 0.5) < 10.0  # one probe past the limit at most (plus its export)
    assert _wait_for_fast(1, "cpu", 0.0) == 0.0


def test_measure_keeps_the_blocks_whose_probe_ran_at_the_fast_level(monkeypatch):
    from latency import runner

    # Real timing, with every other block turned into a slow spell: its probe and its model both 3x slower.
    real, seen = runner.probed_block, []

    def spell_every_other_block(prober, timer, runs):
        a, m = real(prober, timer, runs)
        if len(seen) % 2:
            a, m = 3 * a, 3 * m
        seen.append((a, m))
        return a, m

    monkeypatch.setattr(runner, "probed_block", spell_every_other_block)
    st = measure(_spec(1, 32), warmup=1, runs=4, blocks=5, sessions=2, gap_s=0.0, reference_ms=None)
    assert len(seen) == st.blocks == 10 and st.slowdown is None and st.waited_s == 0
    level = runner.fast_mean([a for a, _ in seen])
    kept = runner.gate(seen, level)
    assert st.probe_ms == pytest.approx(level) and st.fast_blocks == len(kept)
    assert 1 <= st.fast_blocks <= 5 and set(kept) <= {m for _, m in seen[0::2]}  # no block of a slow spell counts
    assert st.latency_ms == pytest.approx(runner.fast_mean(kept))


def test_a_narrower_fast_mode_gate_keeps_fewer_blocks_and_measures_on_for_them(monkeypatch):
    from latency import runner

    # Real model timing; the probe pinned to its reference on even blocks and 7% above it on odd ones.
    real, seen = runner.probed_block, []

    def seven_percent_slow_every_other_block(prober, timer, runs):
        _, m = real(prober, timer, runs)
        seen.append(m)
        return (1.07 if len(seen) % 2 == 0 else 1.0), m

    monkeypatch.setattr(runner, "probed_block", seven_percent_slow_every_other_block)
    wide = measure(_spec(1, 32), warmup=1, runs=3, blocks=2, sessions=1, gap_s=0.0, reference_ms=1.0, wait_s=30,
                   min_fast=6)
    assert wide.fast_blocks == 6 and wide.sessions == 3  # the default 10% gate keeps both blocks of a session
    seen.clear()
    narrow = measure(_spec(1, 32), warmup=1, runs=3, blocks=2, sessions=1, gap_s=0.0, reference_ms=1.0, wait_s=30,
                     min_fast=6, fast_within=0.05)
    assert narrow.fast_blocks == 6 and narrow.sessions == 6  # one block a session passes 5%: twice the sessions
    assert narrow.latency_ms == pytest.approx(runner.fast_mean(seen[0::2]))  # read from the even blocks only
    with pytest.raises(UserError, match="fast-within"):
        measure(_spec(1, 32), fast_within=0.0)


def test_measure_waits_for_the_fast_mode_and_says_when_it_never_came():
    # A reference no probe can reach: every block counts as run in a slow spell.
    st = measure(_spec(1, 32), warmup=1, runs=3, blocks=2, sessions=1, gap_s=0.0, reference_ms=1e-6, wait_s=1.5)
    assert st.fast_blocks == 0 and st.slowdown > 1000 and st.waited_s > 0 and st.slow_throughout
    assert st.sessions > 1  # it measured on while it waited
    assert st.min_ms <= st.latency_ms <= st.p90_ms  # the fastest fifth of all blocks, as without a probe
    quick = measure(_spec(1, 32), warmup=1, runs=3, blocks=2, sessions=1, gap_s=0.0, reference_ms=1e-6)
    assert quick.sessions == 1 and quick.waited_s == 0  # no time to wait: no waiting


def test_measure_measures_on_until_it_has_min_fast_blocks():
    # A reference every probe beats: every block is fast; 2 blocks a session, so 7 take 4 sessions.
    st = measure(_spec(1, 32), warmup=1, runs=3, blocks=2, sessions=1, gap_s=0.0, reference_ms=1e6, wait_s=30,
                 min_fast=7)
    assert st.sessions == 4 and st.fast_blocks == 8 and st.waited_s == 0  # fast blocks: no pause
    assert not st.slow_throughout
    from latency.probe import MIN_FAST

    assert measure(_spec(1, 32), warmup=1, runs=3, blocks=2, sessions=1, gap_s=0.0, reference_ms=1e6,
                   wait_s=30).sessions == -(-MIN_FAST // 2)  # the default
    with pytest.raises(UserError, match="min_fast"):
        measure(_spec(1, 32), min_fast=0)


def test_the_probe_reference_only_goes_down_and_survives_a_bad_file(capsys):
    from latency import probe

    assert probe.reference_ms() is None
    assert probe.record(0.5) == 0.5 and probe.record(0.6) == 0.5 and probe.record(0.4) == 0.4
    assert probe.reference_ms() == 0.4 and probe.reference_ms(threads=2) is None  # per setting
    probe.path().write_text("{not json")
    assert probe.reference_ms() is None
    assert cli.main(["latency", "probe", "--seconds", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reference_ms"] == probe.reference_ms() == pytest.approx(out["level_ms"], abs=1e-5)
    assert 0 <= out["slow_share"] <= 1
    assert out["blocks"] >= 2


def test_latency_measure_warns_in_one_line_when_the_machine_ran_slow_throughout(capsys):
    from latency import probe

    probe.record(1e-4)
    assert cli.main(["latency", "measure", "mobilenet_v3_small", "--resolution", "32", "--sessions", "1",
                     "--blocks", "2", "--runs", "2", "--wait", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: the machine ran") and "--wait" in err[0]


# ---- signatures and features ----------------------------------------------------------------

def test_spec_sigs_cover_stem_layers_head_with_resolutions():
    spec = reference("mobilenet_v2")
    sigs = spec_sigs(spec)
    assert len(sigs) == len(spec.layers) + 2
    assert sigs[0].op == "stem" and sigs[0].res == 224 and sigs[-1].op == "head"
    assert [s.res for s in sigs[1:-1]] == spec.layer_resolutions()
    assert sigs[-1].res == spec.final_resolution == 7 and sigs[-1].out_ch == 1000


def test_features_count_macs_like_the_cost_model():
    spec = reference("mnasnet_a1")
    X = feature_matrix(spec_sigs(spec))
    macs = X[:, [i for i, f in enumerate(FEATURES) if f.startswith("mac_")]].sum()
    assert macs == pytest.approx(cost(spec).macs, rel=1e-9)


@pytest.mark.parametrize("name", ["mnasnet_a1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])
def test_unit_parameters_add_up_to_the_network(name):
    from latency.signature import sig_params

    spec = reference(name)  # SE, FC heads (v3), dwconv-first stages (v2): every unit kind
    assert sum(sig_params(s) for s in spec_sigs(spec)) == cost(spec).params


# ---- table -------------------------------------------------------------------------------------

def _row(sig: Sig, ms: float) -> dict:
    return {**sig._asdict(), "latency_ms": ms, "median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.1, "spread": 0.2,
            "session_spread": 0.01, "runs": 10}


def test_table_roundtrip_and_corruption_is_refused(tmp_path):
    sigs = spec_sigs(_spec(3))
    t = LatencyTable(meta={"device": "x"})
    t.add([_row(s, (i + 1) / 8) for i, s in enumerate(sigs)])
    p = t.save(tmp_path / "units.csv")
    back = LatencyTable.load(p)
    assert back.lookup() == t.lookup() and back.meta["device"] == "x"
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    with pytest.raises(UserError, match="corrupted or truncated"):
        LatencyTable.load(p)


# ---- predictor ---------------------------------------------------------------------------------

def test_tiny_predictor_is_real_and_consistent(tiny_predictor):
    specs = [_spec(s) for s in range(20)]
    batch = tiny_predictor.predict_many(specs)
    assert batch.shape == (20,) and np.all(batch > 0) and np.all(np.isfinite(batch))
    assert [tiny_predictor.predict(s) for s in specs] == pytest.approx(batch.tolist(), rel=1e-12)
    assert tiny_predictor.calibration.n_networks >= 3 and len(tiny_predictor.lookup) > 10


def test_predictor_handles_pruned_networks_other_heads_and_references(tiny_predictor):
    spec = _spec(5)
    pruned = _pruned(spec)
    assert any(lay.exp_ch % 2 for lay in pruned.layers if lay.op == "mbconv")
    p_full, p_pruned = tiny_predictor.predict(spec), tiny_predictor.predict(pruned)
    assert 0 < p_pruned < p_full * 1.05
    assert tiny_predictor.predict(replace(spec, num_classes=10)) > 0
    assert tiny_predictor.predict(replace(reference("mobilenet_v3_large"), resolution=32)) > 0


def test_bigger_networks_predict_slower(tiny_predictor):
    spec = _spec(7)
    wide = spec.with_layers([replace(lay, exp_ch=lay.exp_ch * 2) if lay.op == "mbconv" else lay for lay in spec.layers])
    if wide == spec:
        pytest.skip("no mbconv layer in this sample")
    assert tiny_predictor.predict(wide) > tiny_predictor.predict(spec)


def test_predictor_save_load_roundtrip_and_corruption(tiny_predictor, tmp_path):
    p = tiny_predictor.save(tmp_path / "pred.json")
    back = Predictor.load(p)
    specs = [_spec(s) for s in range(5)] + [_pruned(_spec(9))]
    assert back.predict_many(specs) == pytest.approx(tiny_predictor.predict_many(specs), rel=1e-12)
    p.write_text(p.read_text()[:-200])
    with pytest.raises(UserError, match="corrupted"):
        Predictor.load(p)


def test_missing_op_model_is_a_clear_error():
    pred = Predictor({}, {}, Calibration(), {"device": "d"})
    with pytest.raises(UserError, match="no measurement and no per-op model"):
        pred.predict(_spec(0))


def _calib_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """Rows of CALIB_FEATURES: four unit-time sums, units, M input elements, M params, 1."""
    return np.column_stack([rng.uniform(2, 10, (n, 4)), rng.integers(10, 25, n), rng.uniform(1, 6, n),
                            rng.uniform(2, 8, n), np.ones(n)])


def test_calibration_keeps_the_candidate_that_cross_validates_best():
    from latency.predictor import CANDIDATES

    rng = np.random.default_rng(0)
    F = _calib_features(rng, 60)
    # 20-49 networks: shared-scale candidates only; the one holding both terms fits exactly.
    truth = [0.8, 0.8, 0.8, 0.8, 0.0, -0.2, 0.1, 0.0]
    y = F @ np.array(truth)
    mid = Calibration.fit(F[:30], y[:30])
    assert mid.kind == "scale+weights+inputs" and mid.n_networks == 30
    assert mid.weights == pytest.approx(truth, rel=1e-6, abs=1e-9)
    assert set(mid.cv_mape) == set(CANDIDATES) - {"per-op"}
    assert mid.cv_mape["scale+weights+inputs"] < 1e-6 < min(v for k, v in mid.cv_mape.items() if k != mid.kind)
    # A handful of networks: one scale only, whatever else the data might suggest.
    few = Calibration.fit(F[:8], y[:8])
    assert few.kind == "scale" and few.weights[4:] == [0.0] * 4 and len(set(few.weights[:4])) == 1
    # Many networks: per-op scales (lightly pulled towards 1) and the unit count as well.
    y = F @ np.array([0.8, 1.1, 0.9, 1.0, 0.05, -0.2, 0.1, 0.0])
    full = Calibration.fit(F, y)
    assert full.kind == "per-op" and full.cv_mape["per-op"] == min(full.cv_mape.values())
    assert full.apply(F) == pytest.approx(y, rel=0.02)
    assert full.weights[1] > full.weights[0]


def test_calibration_keeps_the_candidate_that_transfers_to_families_it_was_not_fitted_on():
    rng = np.random.default_rng(2)
    F = _calib_features(rng, 90)
    F[:30, 6] *= 3  # one family streams far more weights in than the others
    groups = ["a"] * 30 + ["b"] * 30 + ["c"] * 30
    y = F @ np.array([0.8, 0.8, 0.8, 0.8, 0.0, 0.0, 0.3, 0.0]) * np.exp(0.02 * rng.standard_normal(90))
    cal = Calibration.fit(F, y, groups)
    assert set(cal.transfer_mape) == set(cal.cv_mape) and all(set(v) == {"a", "b", "c"} for v in cal.transfer_mape.values())
    mean = {c: np.mean(list(v.values())) for c, v in cal.transfer_mape.items()}
    assert cal.kind == min(mean, key=mean.get) == "scale+weights"
    assert cal.transfer_mape["scale"]["a"] > 3 * cal.transfer_mape["scale+weights"]["a"]  # the term carries over to a
    assert Calibration.fit(F, y).transfer_mape == {}  # one family: the 10-fold choice


def test_calibration_prices_a_per_unit_overhead_that_transfers_to_networks_of_many_small_units():
    # Each unit timed alone paid a session call that a network pays once: a family of many small
    # units (trimmed networks) is over-predicted by a scale alone.
    from latency.predictor import CALIB_FEATURES

    rng = np.random.default_rng(3)
    F = _calib_features(rng, 90)
    F[:30, :4] *= 0.3  # family a: short networks...
    F[:30, 4] += 20  # ...of many units
    groups = ["a"] * 30 + ["b"] * 30 + ["c"] * 30
    y = (F @ np.array([0.9, 0.9, 0.9, 0.9, -0.04, 0.0, 0.0, 0.0])) * np.exp(0.01 * rng.standard_normal(90))
    cal = Calibration.fit(F, y, groups)
    assert cal.kind.startswith("scale+units")  # with or without an input term the noise cannot rule out
    w = dict(zip(CALIB_FEATURES, cal.weights))
    assert w["units"] == pytest.approx(-0.04, rel=0.15) and abs(w["in_melems"]) < 0.01
    assert cal.transfer_mape["scale"]["a"] > 3 * cal.transfer_mape["scale+units"]["a"]


def test_calibration_prices_a_fixed_cost_that_transfers_to_small_networks():
    # Every inference pays a constant that no unit timed alone shows: a scale alone, fitted mostly
    # on larger networks, under-predicts a family of small ones.
    from latency.predictor import CALIB_FEATURES

    rng = np.random.default_rng(4)
    F = _calib_features(rng, 90)
    F[:30, :4] *= 0.08  # family a: networks of about 1-3 ms
    groups = ["a"] * 30 + ["b"] * 30 + ["c"] * 30
    y = (F @ np.array([0.85, 0.85, 0.85, 0.85, 0.0, 0.0, 0.0, 0.4])) * np.exp(0.01 * rng.standard_normal(90))
    cal = Calibration.fit(F, y, groups)
    assert "fixed" in cal.kind
    w = dict(zip(CALIB_FEATURES, cal.weights))
    assert w["fixed"] == pytest.approx(0.4, rel=0.2) and w["conv_ms"] == pytest.approx(0.85, rel=0.05)
    assert cal.transfer_mape["scale"]["a"] > 3 * cal.transfer_mape["scale+fixed"]["a"]
    assert cal.apply(F[:30]) == pytest.approx(y[:30], rel=0.05)
    # Any candidate can be refitted alone: the chosen one is the same fit; the scale alone is not.
    again = Calibration.fit_candidate(F, y, cal.kind)
    assert again.kind == cal.kind and again.n_networks == 90 and again.weights == pytest.approx(cal.weights)
    scale = Calibration.fit_candidate(F, y, "scale")
    assert scale.weights[7] == 0 and len(set(scale.weights[:4])) == 1
    assert np.mean(np.abs(scale.apply(F[:30]) / y[:30] - 1)) > 3 * np.mean(np.abs(cal.apply(F[:30]) / y[:30] - 1))
    with pytest.raises(UserError, match="no calibration candidate 'nope'; choose one of scale, "):
        Calibration.fit_candidate(F, y, "nope")


def test_calibration_falls_back_to_a_scale_when_its_terms_would_dominate():
    # Input elements that "explain" most of the time on a narrow set would reorder networks outside
    # it (a trimmed network predicted slower than its seed): candidates with that term are dropped.
    from latency.predictor import CALIB_FEATURES

    rng = np.random.default_rng(1)
    F = np.column_stack([rng.uniform(0.1, 0.3, (30, 4)), rng.integers(10, 25, 30), rng.uniform(0.04, 0.06, 30),
                         np.zeros(30), np.ones(30)])
    y = F[:, :4].sum(axis=1) * 0.2 + 12.0 * F[:, 5]  # nonsense the input term could fit
    cal = Calibration.fit(F, y)
    w = dict(zip(CALIB_FEATURES, cal.weights))
    assert "inputs" not in cal.kind and w["in_melems"] == 0 and w["conv_ms"] > 0
    assert not any("inputs" in k for k in cal.cv_mape)


def test_export_estimates_its_bytes_and_refuses_to_fill_the_disk(tmp_path):
    from latency.sampling import units_to_measure
    from latency.transfer import check_room, export_bytes, export_folder

    units = units_to_measure(get_space("mnasnet"), 32, "quick", per_stage=2)[:12]
    specs = [_spec(s, 32) for s in range(2)]
    folder = export_folder(tmp_path / "export", units, [("mnasnet", "calibration", s) for s in specs], progress=False)
    written = sum(f.stat().st_size for f in folder.rglob("*.onnx"))
    assert export_bytes(units, specs) == pytest.approx(written, rel=0.1)
    check_room(10**9, 10**9, tmp_path)  # exactly enough is enough
    with pytest.raises(UserError, match=r"^/x: the models to measure need about 53\.0 GB of ONNX files and 20\.0 GB is "
                                        r"free there; make room, point TMPDIR"):
        check_room(53 * 10**9, 20 * 10**9, Path("/x"))


def test_runner_is_standalone_and_export_import_round_trip(tmp_path):
    from latency.files import load_networks
    from latency.sampling import units_to_measure
    from latency.transfer import export_folder, import_measurements

    units = units_to_measure(get_space("mnasnet"), 16, "quick", per_stage=1)[:5]
    nets = [("mnasnet", "calibration", _spec(s, 16)) for s in range(3)] + [("mnasnet", "check", _spec(3, 16))]
    folder = export_folder(tmp_path / "export", units, nets, progress=False, unit_runs=3, net_runs=3, check_seed=42)
    # On the device: only onnxruntime and numpy; no project on the path.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    r = subprocess.run([sys.executable, "-I", "runner.py", ".", "--out", str(tmp_path / "m.csv")], cwd=folder,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    # Every model measured in a fresh session in each of the manifest's passes (one row per model).
    rows = list(csv.DictReader((tmp_path / "m.csv").read_text().splitlines()[1:]))
    assert len(rows) == 9 and {row["sessions"] for row in rows} == {str(MEASURE_PASSES)}
    assert f"(pass {MEASURE_PASSES}/{MEASURE_PASSES})" in r.stderr
    counts = import_measurements(tmp_path / "m.csv", "phone", folder)
    checks = counts.pop("checks")
    assert counts == {"units": 5, "networks": 3, "table_rows": 5, "check_seed": 42}
    # The self-check network comes back for scoring, never among the calibration networks.
    assert [c["spec"] for c in checks] == [_spec(3, 16).to_json(indent=None)] and checks[0]["family"] == "mnasnet"
    t = LatencyTable.load(units_path("phone"))
    assert set(t.lookup()) == set(units) and t.meta["device"] == "phone" and t.meta["clock"] == "cpu"
    assert len(load_networks("phone")[0]) == 3


def test_quick_sample_holds_every_conv_unit_and_netadapt_like_trimmed_units():
    from latency.onnx_units import unit_onnx_bytes
    from latency.sampling import _stage_units, units_to_measure

    space = get_space("mnasnet")
    grid = {s for st in _stage_units(space, 224) for s in st}
    quick = units_to_measure(space, 224, "quick")
    assert {s for s in grid if s.op == "conv"} <= set(quick)
    trimmed = [s for s in quick if s.op not in ("stem", "head") and s not in grid]
    assert 200 <= len(trimmed) <= 7 * 40
    for s in trimmed:
        assert s.in_ch % 4 == 0 and s.out_ch % 4 == 0 and s.exp_ch % 4 == 0  # se_ch follows the space's SE rule
        assert not s.residual or s.in_ch == s.out_ch
        assert (s.op != "dwconv" or s.exp_ch == s.in_ch) and (s.op != "conv" or s.exp_ch == s.out_ch)
    assert any(s.in_ch % 8 for s in trimmed)  # off onnxruntime's 8-channel blocks too
    unit_onnx_bytes(trimmed[0])  # a valid unit graph
    assert units_to_measure(space, 224, "quick") == quick  # seeded: the same sample every build
    # A stage with more conv units than the cap (mnasnet_cifar_wide's late stages) measures a seeded sample of them.
    from latency.sampling import QUICK_CONV_PER_STAGE

    wide = get_space("mnasnet_cifar_wide")
    stages = _stage_units(wide, 32)
    picked = set(units_to_measure(wide, 32, "quick"))
    for st in stages:
        conv = [s for s in st if s.op == "conv"]
        kept = sum(s in picked for s in conv)  # a unit two stages share may be picked by the other one too
        assert kept == len(conv) if len(conv) <= QUICK_CONV_PER_STAGE else QUICK_CONV_PER_STAGE <= kept < len(conv) / 2
    assert max(len([s for s in st if s.op == "conv"]) for st in stages) > 3 * QUICK_CONV_PER_STAGE


def test_pass_order_spreads_each_items_passes_apart():
    from latency.runner import pass_order

    for n, passes in ((10, 2), (7, 3), (1, 2)):
        orders = [pass_order(n, passes, p) for p in range(passes)]
        assert all(sorted(o) == list(range(n)) for o in orders)
        if n > 1:  # item i's passes lie about n / passes positions apart, never back to back
            assert all(orders[1].index(i) != orders[0].index(i) for i in range(n))
    assert pass_order(10, 2, 1)[:3] == [5, 6, 7]


def test_calibration_features_count_units_and_input_elements(tiny_predictor):
    from latency.predictor import CALIB_FEATURES

    spec = _spec(3)
    row = dict(zip(CALIB_FEATURES, tiny_predictor.calib_features([spec])[0]))
    sigs = spec_sigs(spec)
    assert row["units"] == len(sigs)
    assert row["in_melems"] == pytest.approx(sum(s.in_ch * s.res**2 for s in sigs) / 1e6)
    assert row["params_m"] == pytest.approx(cost(spec).params / 1e6)  # every weight, stem to classifier
    assert sum(row[c] for c in CALIB_FEATURES[:4]) == pytest.approx(tiny_predictor.unit_sum(spec))
    assert row["fixed"] == 1.0


def test_import_refuses_a_csv_that_is_not_the_runners(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file,median_ms\nx.onnx,1.0\n")
    assert cli.main(["latency", "import", str(bad), "--device", "phone"]) == 2
    assert not units_path("phone").exists()


def test_cli_predict_and_measure_json(tiny_results, tmp_path, capsys):
    spec_path = tmp_path / "net.json"
    _pruned(_spec(4)).save(spec_path)
    assert cli.main(["latency", "predict", str(spec_path), "--device", TINY_DEVICE, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency_ms"] > 0 and out["device"] == TINY_DEVICE
    assert cli.main(["latency", "measure", str(spec_path), "--runs", "3", "--blocks", "2", "--sessions", "2",
                     "--warmup", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["min_ms"] <= out["latency_ms"] <= out["p90_ms"] and out["sessions"] == 2 and out["runs"] == 12


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["latency", "predict", "mobilenet_v2", "--device", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "latency build --device nowhere" in err
    assert cli.main(["latency", "measure", "mobilenet_v2", "--provider", "tpu"]) == 2
    assert "available" in capsys.readouterr().err


def test_validation_reports_every_figure_with_a_recorded_fresh_seed(tiny_results):
    import pandas as pd

    from latency.files import load_networks
    from latency.suite import run_suite

    rep = run_suite(TINY_DEVICE, ["mnasnet"], 4, progress=False, passes=2, resolution=TINY_RESOLUTION)
    fam = rep["families"]["mnasnet"]
    for d in (fam, fam["baselines"]["flops"], fam["baselines"]["lut_sum"]):
        assert {"within_10pct", "within_5pct", "mape", "spearman", "kendall"} <= set(d)
        assert 0 <= d["within_10pct"] <= 1
    assert {"sessions_within_5pct", "sessions_within_10pct", "session_spread_median"} <= set(fam["repeatability"])
    assert fam["n"] == 4 and Path(rep["plot"]).stat().st_size > 1000 and len(rep["loadavg_1m"]) == 2
    assert rep["calibration"] == "scale"  # the tiny table's 6 networks: below 20, one scale only
    calib = set(load_networks(TINY_DEVICE)[0]["spec"])
    scored = pd.read_csv(rep["csv"])
    assert not calib & set(scored["spec"]) and set(scored["family"]) == {"mnasnet"}
    assert str(rep["seed"]) in rep["csv"]  # every run its own seed, and its own files
    assert rep["never_fast"] == 0  # gated against the validation's own probe level: some blocks always pass
    assert (scored["fast_blocks"] >= 1).all()
    assert (scored["probe_ms"] > 0).all()  # the machine's level beside each network, for drift analyses
    from latency.units import NET_BLOCKS, NET_RUNS

    assert (scored["runs"] == NET_BLOCKS * NET_RUNS * 2).all()  # the build's blocks, in each of 2 passes


def test_validation_can_measure_each_network_as_latency_measure_does(tiny_results, capsys):
    import pandas as pd

    from latency.measure import DEFAULT_BLOCKS, DEFAULT_RUNS
    from latency.units import NET_BLOCKS, NET_RUNS

    # The tiny results folder has no probe reference: the validation says it cannot wait, and goes on.
    assert cli.main(["latency", "validate", "--device", TINY_DEVICE, "--space", "mnasnet", "--resolution",
                     str(TINY_RESOLUTION), "--n", "2", "--passes", "1", "--wait", "5", "--fast-within", "2.5",
                     "--json"]) == 0
    out = capsys.readouterr()
    assert "no probe reference yet" in out.err
    rep = json.loads(out.out)
    assert rep["wait_s"] == 5 and rep["families"]["mnasnet"]["n"] == 2
    scored = pd.read_csv(rep["csv"])
    assert rep["fast_within"] == 0.025 and (scored["fast_within"] == 0.025).all()  # the gate's width, recorded
    # latency measure's blocks and runs in its one session, not the build's
    assert DEFAULT_BLOCKS * DEFAULT_RUNS != NET_BLOCKS * NET_RUNS
    assert (scored["runs"] == DEFAULT_BLOCKS * DEFAULT_RUNS).all()
    assert (scored["fast_blocks"] >= 1).all() and (scored["probe_ms"] > 0).all()


def test_validate_scores_the_samples_of_any_space_at_its_resolution(tiny_results, capsys):
    assert cli.main(["latency", "validate", "--device", TINY_DEVICE, "--space", "mnasnet_cifar", "--resolution", "32",
                     "--n", "2", "--passes", "1", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert list(rep["families"]) == ["mnasnet_cifar"] and rep["families"]["mnasnet_cifar"]["n"] == 2
    assert rep["resolution"] == 32


def test_suite_draws_fresh_networks_every_run_and_the_same_ones_for_a_seed():
    from latency.families import fingerprint, key
    from latency.suite import draw_suite

    a = draw_suite(["mnasnet", "trimmed"], 5, 1, set())
    assert {f: [key(s) for s in v] for f, v in a.items()} == \
        {f: [key(s) for s in v] for f, v in draw_suite(["mnasnet", "trimmed"], 5, 1, set()).items()}
    b = draw_suite(["mnasnet", "trimmed"], 5, 2, {fingerprint(s) for s in a["mnasnet"]})
    assert not {key(s) for s in a["mnasnet"]} & {key(s) for s in b["mnasnet"]}
    assert len(b["mnasnet"]) == len(b["trimmed"]) == 5


def test_load_predictor_without_table_says_how_to_build():
    with pytest.raises(UserError, match=r"latency build --device nowhere"):
        load_predictor("nowhere")


def test_load_predictor_reloads_saved_and_refits_when_table_changes(tiny_results):
    pred = load_predictor(TINY_DEVICE, "mnasnet", TINY_RESOLUTION)
    spec = _spec(11)
    before = pred.predict(spec)
    assert load_predictor(TINY_DEVICE, "mnasnet", TINY_RESOLUTION).predict(spec) == pytest.approx(before)
    t = LatencyTable.load(units_path(TINY_DEVICE))
    t.add([_row(s, 50.0) for s in spec_sigs(spec)])  # pretend every unit of spec is very slow
    t.save(units_path(TINY_DEVICE))
    refit = load_predictor(TINY_DEVICE, "mnasnet", TINY_RESOLUTION)
    assert refit.meta["table_sha256"] != pred.meta["table_sha256"]
    assert refit.unit_sum(spec) == pytest.approx(50.0 * len(spec_sigs(spec)))


def test_load_predictor_refuses_corrupted_table(tiny_results):
    p = units_path(TINY_DEVICE)
    p.write_text(p.read_text() + "garbage,row\n")
    with pytest.raises(UserError, match="checksum"):
        load_predictor(TINY_DEVICE, "mnasnet", TINY_RESOLUTION)


def test_direct_onnx_graphs_match_the_torch_export_after_optimisation(tmp_path):
    import onnx
    import onnxruntime as ort

    from latency.onnx_units import unit_onnx_bytes
    from latency.units import export_unit

    def optimised_ops(model: bytes) -> list[str]:
        o = ort.SessionOptions()
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        o.optimized_model_filepath = str(tmp_path / "opt.onnx")
        o.log_severity_level = 3
        ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
        return sorted(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)

    sigs = [Sig("mbconv", 5, 1, 16, 16, 48, 8, "hswish", True, 8, 0), Sig("dwconv", 3, 2, 8, 16, 8, 8, "relu6", False, 8, 0),
            Sig("conv", 7, 1, 8, 12, 12, 0, "relu", False, 8, 0), Sig("stem", 3, 2, 3, 8, 8, 0, "hswish", False, 16, 0),
            Sig("head", 1, 1, 16, 10, 32, 0, "relu", False, 4, 24),
            Sig("dwconv", 3, 1, 16, 24, 16, 0, "relu", False, 8, 0, pw_act=True),  # MobileNetV1's separable layer
            Sig("mbconv", 3, 1, 16, 16, 48, 4, "relu", True, 8, 0, gate="sigmoid")]  # MnasNet's SE gate
    for s in sigs:
        assert optimised_ops(unit_onnx_bytes(s)) == optimised_ops(export_unit(s)), s
    from latency.onnx_units import network_onnx_bytes

    for spec in (_spec(21, 32), _pruned(_spec(22, 32)), reference("mobilenet_v3_small", resolution=32),
                 reference("mobilenet_v1", 0.5, 32), reference("mnasnet_a1", resolution=32)):
        assert optimised_ops(network_onnx_bytes(spec)) == optimised_ops(export_spec(spec)), spec.name


def test_calibration_never_predicts_zero_or_negative():
    # Fitted negative per-unit and input terms (overheads the separately timed units paid) must not push a
    # network far below the calibration range, e.g. a tiny or heavily trimmed one, to <= 0 ms.
    cal = Calibration([0.9, 0.9, 0.9, 0.9, -0.05, -0.3, 0.1], n_networks=30)
    F = np.array([[0.01, 0.0, 0.02, 0.01, 4, 0.5, 0.01], [2.0, 1.0, 5.0, 0.5, 20, 3.0, 4.0]])
    out = cal.apply(F)
    assert out[0] == pytest.approx(0.1 * 0.9 * 0.04) and out[0] > 0
    assert out[1] == pytest.approx(0.9 * 8.5 - 0.05 * 20 - 0.3 * 3.0 + 0.1 * 4.0)


def test_blocked_features_charge_narrow_widths_their_padding():
    from latency.signature import sig_features

    def feats(sig):
        return dict(zip(FEATURES, sig_features(sig)))

    wide = feats(Sig("mbconv", 3, 1, 32, 32, 96, 0, "relu", True, 28))
    assert wide["pad8_macs"] == wide["pad16_macs"] == wide["mac_pw"] + wide["mac_dw"]  # multiples of 16: no padding
    narrow = feats(Sig("conv", 7, 1, 8, 4, 4, 0, "hswish", False, 112))
    assert narrow["pad8_macs"] == 2 * narrow["mac_full7"] and narrow["pad16_macs"] == 8 * narrow["mac_full7"]
    assert narrow["im2col"] == 49 * 8 * 112 * 112  # the unfolded input, whatever the output width


def test_tables_hold_stems_of_trimmed_and_reference_widths_and_of_grey_images():
    from latency.sampling import STEM_ACTS, STEM_INPUTS, STEM_WIDTHS, units_to_measure

    for mode in ("quick", "full"):
        stems = {(s.in_ch, s.out_ch, s.act) for s in units_to_measure(get_space("mnasnet"), 224, mode) if s.op == "stem"}
        assert {(c, w, a) for c in STEM_INPUTS for w in STEM_WIDTHS for a in STEM_ACTS} <= stems
        assert {c for c, _, _ in stems} == {1, 3}


# ---- families, range units, adaptive sampling, self-check ----------------------------------------

def test_families_cover_what_users_bring():
    from latency.families import FAMILIES, draw, key

    got = {f: draw(f, 12, 3) for f in FAMILIES}
    assert all(len(v) == 12 and len({key(s) for s in v}) == 12 for v in got.values())
    assert {s.resolution for s in got["references"]} <= set(range(96, 225, 16))
    assert any(s.name.startswith("mobilenet_v1") for f in range(4) for s in draw("references", 12, f))
    assert all(s.num_classes == 10 and s.in_channels in (1, 3) for s in got["data_stem"])
    assert {s.in_channels for s in got["data_stem"]} == {1, 3}
    trimmed = got["trimmed"]
    widths = [c for s in trimmed for c in [s.stem.out_ch] + [lay.out_ch for lay in s.layers] + [lay.exp_ch for lay in s.layers]]
    assert min(widths) == 8  # down to 8 channels (NetAdapt's smallest step)
    assert [key(s) for s in draw("trimmed", 12, 3)] == [key(s) for s in trimmed]  # a seed names its networks
    with pytest.raises(UserError, match="unknown network family 'resnets'"):
        draw("resnets", 1, 0)


def test_a_space_is_the_family_of_its_samples_and_a_table_for_it_calibrates_on_them():
    from latency.build import Plan, calibration_specs, check_specs, for_space
    from latency.families import FAMILIES, check_families, draw, key

    assert check_families(["mnasnet_cifar", "references"]) == ["mnasnet_cifar", "references"]
    nets = draw("mnasnet_cifar", 6, 0, resolution=32)
    assert len({key(s) for s in nets}) == 6
    assert all(s.resolution == 32 and s.stem.stride == 1 for s in nets)  # the space's stride-1 stem, at 32x32
    assert [key(s) for s in draw("mnasnet_cifar", 6, 0, resolution=32)] == [key(s) for s in nets]
    # A family's stream does not depend on which other families exist: the old seeds name the old networks.
    assert not {key(s) for s in draw("mnasnet", 6, 0, resolution=32)} & {key(s) for s in nets}
    with pytest.raises(UserError, match="unknown network family 'resnets'.*mnasnet_cifar"):
        check_families(["resnets"])

    # A build for a space that no default family draws adds that space, at the build's resolution.
    plan = for_space(Plan(0, 0, 4, 2, families=("references",)), "mnasnet_cifar", 32)
    assert plan.families == ("references", "mnasnet_cifar")
    calib = calibration_specs(plan)
    own = [s for f, s in calib if f == "mnasnet_cifar"]
    assert len(own) == 4 and all(s.resolution == 32 and s.stem.stride == 1 for s in own)
    assert all(s.resolution >= 96 for f, s in calib if f == "references")  # others keep their own sizes
    checks = check_specs(plan, 5, {key(s) for _, s in calib})
    assert [f for f, _ in checks].count("mnasnet_cifar") == 2 and not {key(s) for _, s in checks} & {key(s) for _, s in calib}
    # The default build of a default space is unchanged: mnasnet at 224 already is a family.
    full = for_space(Plan(0, 0, 2, 0), "mnasnet", 224)
    assert full.families == FAMILIES
    assert [key(s) for f, s in calibration_specs(full) if f == "mnasnet"] == [key(s) for s in draw("mnasnet", 2, 7_000_000)]


def test_boosted_trees_predict_with_numpy_as_scikit_learn_does():
    from sklearn.ensemble import GradientBoostingRegressor

    from latency.opmodel import DEPTH, MIN_LEAF, RATE, SUBSAMPLE, TREES, Trees

    rng = np.random.default_rng(0)
    D = rng.uniform(-1, 1, (300, 5))
    y = np.sin(3 * D[:, 0]) + D[:, 1] * D[:, 2] + 0.1 * rng.standard_normal(300)
    trees = Trees.fit(D, y)
    gb = GradientBoostingRegressor(n_estimators=TREES, max_depth=DEPTH, learning_rate=RATE, subsample=SUBSAMPLE,
                                   min_samples_leaf=MIN_LEAF, random_state=0).fit(D, y)
    Q = rng.uniform(-1, 1, (50, 5))
    assert trees.predict(Q) == pytest.approx(gb.predict(Q), abs=1e-9)
    back = Trees.from_dict(json.loads(json.dumps(trees.to_dict())))
    assert back.predict(Q) == pytest.approx(trees.predict(Q), abs=1e-12)
    assert Trees().predict(Q).tolist() == [0.0] * 50  # no trees: the linear part alone


def test_range_units_and_adaptive_samples_are_valid_units_near_the_worst():
    from latency.onnx_units import unit_onnx_bytes
    from latency.sampling import adaptive_units, range_units

    units = range_units(2)
    assert {s.op for s in units} == {"stem", "conv", "dwconv", "mbconv", "head"}
    errors = {s: (1.0 if s.op == "dwconv" else 0.01) for s in units if s.op != "head"}
    new = adaptive_units(errors, 20, set(units))
    assert len(new) == 20 and not set(new) & set(units)
    assert sum(s.op == "dwconv" for s in new) >= 18  # near the units the model errs on
    for s in new:
        assert s.op != "dwconv" or s.exp_ch == s.in_ch
        assert not s.residual or (s.stride == 1 and s.in_ch == s.out_ch)
    unit_onnx_bytes(new[0])  # a valid graph


def test_self_check_says_what_is_wrong_and_what_to_do():
    from latency.selfcheck import advice, busy, summary

    ok = {"n": 10, "passed": True, "busy": [], "within_10pct": 1.0, "mape": 3.0, "seed": 7,
          "worst": {"family": "trimmed", "error": 0.08}}
    assert advice(ok, "local-cpu") is None and "seed 7" in summary(ok) and "+8% (trimmed)" in summary(ok)
    failed = {**ok, "passed": False, "within_10pct": 0.7, "busy": ["load average up to 5.0 on 2 cores"]}
    msg = advice(failed, "local-cpu")
    assert "failed its self-check while the machine was busy" in msg and "latency build --device local-cpu" in msg
    assert "\n" not in msg
    assert "busy machine" in advice({**ok, "busy": ["x"]}, "phone")
    assert busy(np.array([0.2, 0.3]), [0.5], cores=2) and not busy(np.array([0.01]), [1.0], cores=2)


def test_a_table_whose_self_check_failed_warns_in_one_line_and_still_predicts(tiny_results, tmp_path, capsys):
    from latency.build import _update_meta

    _update_meta(TINY_DEVICE, {"self_check": {"n": 5, "passed": False, "busy": [], "within_10pct": 0.4, "mape": 14.0,
                                              "seed": 3, "worst": {"family": "mnasnet", "error": -0.3}}})
    spec_path = tmp_path / "net.json"
    _spec(4).save(spec_path)
    assert cli.main(["latency", "predict", str(spec_path), "--device", TINY_DEVICE]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: the tiny-cpu latency table failed its self-check")


def test_build_checks_itself_on_fresh_networks(tmp_path, monkeypatch):
    from latency.build import Plan, build
    from latency.table import LatencyTable

    monkeypatch.setenv("HWNAS_RESULTS", str(tmp_path / "r"))
    with warnings.catch_warnings():  # a table this small may well miss its self-check
        warnings.simplefilter("ignore")
        pred = build("micro", "mnasnet", 16, "quick", progress=False, sample={"per_stage": 4, "conv_per_stage": 1,
                                                                            "trimmed_per_stage": 0},
                     plan=Plan(0, 4, 3, 1, families=("mnasnet",), family_resolution=16))
    rec = LatencyTable.load(units_path("micro")).meta["self_check"]
    assert rec == pred.meta["self_check"] and rec["n"] == 1 and rec["errors"][0]["family"] == "mnasnet"
    assert isinstance(rec["seed"], int) and len(rec["loadavg_1m"]) == 3 and rec["seconds"] > 0
    meta = LatencyTable.load(units_path("micro")).meta
    assert meta["adaptive"]["units"] <= 4 and len(meta["used_networks"]) == 1  # the self-check network, never a suite's
    from latency import probe

    assert len(meta["probe"]["levels_ms"]) == 3 and meta["probe"]["reference_ms"] == probe.reference_ms() > 0


def test_build_can_calibrate_on_networks_near_a_latency(tmp_path, monkeypatch):
    """``Plan.near_ms``: the units first, then calibration and self-check networks chosen by their plain
    unit sums, those within the range first in draw order."""
    from latency.build import CALIBRATION_SEED, Plan, _unit_sums, build, calibration_specs, for_space
    from latency.families import draw, key, nearest
    from latency.files import load_networks

    assert [s for s in nearest(["a", "b", "c", "d"], np.array([5.0, 1.0, 2.5, 2.0]), (2.0, 3.0))] == ["c", "d", "a", "b"]  # log distance: 5 is nearer 3 than 1 is to 2
    monkeypatch.setenv("HWNAS_RESULTS", str(tmp_path / "r"))
    sample = {"per_stage": 4, "conv_per_stage": 1, "trimmed_per_stage": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build("micro", "mnasnet", 16, "quick", progress=False, sample=sample, plan=Plan(0, 0, 0, 0, families=()))
    sums = _unit_sums("micro")
    ms = sums.unit_sum_many(draw("mnasnet", 120, CALIBRATION_SEED, resolution=16))
    band = (float(np.quantile(ms, 0.1)), float(np.quantile(ms, 0.3)))  # where few random draws lie
    plan = Plan(0, 0, 3, 1, families=("mnasnet",), family_resolution=16, near_ms=band)
    calib = calibration_specs(for_space(plan, "mnasnet", 16), unit_sum=sums)
    got = sums.unit_sum_many([s for _, s in calib])
    assert len(calib) == 3 and all(band[0] <= m <= band[1] for m in got)
    assert not all(band[0] <= m <= band[1] for m in ms[:3])  # the plain draws would not have been
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = build("micro", "mnasnet", 16, "quick", progress=False, sample=sample, plan=plan)
    assert pred.meta["calibration_near_ms"] == list(band)
    nets, _ = load_networks("micro")
    from space.archspec import ArchSpec

    measured = {key(ArchSpec.from_json(s)) for s in nets["spec"]}  # the calibration networks (checks are not kept)
    assert measured == {key(s) for _, s in calib}
    rec = pred.meta["self_check"]
    assert rec["n"] == 1
