"""The NetAdapt loop end to end on digits.

Most tests trim against the deterministic MACs latency model, and the run that steers by measured
latency measures on :class:`AffineDevice`, a device whose latency is an affine function of that
model's (a predictor with an offset error), so that its iterations do not depend on timings of a
busy machine and the steering can be checked exactly. The CLI tests measure with onnxruntime.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from common.errors import UserError
from netadapt import steer
from netadapt.config import NetAdaptConfig
from netadapt.loop import NetAdaptRun
from netadapt.proposals import make_proposals, smallest_network
from netadapt.resource import MacsLatency
from space.archspec import ArchSpec
from space.builder import build_model
from space.searchspace import get_space
from train.data import load_data
from train.weights import check_fits, load_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return load_data("digits", limit=300, eval_limit=120)


# A small network of the tiny predictor's space (mnasnet at 32 px): per stage op, kernel, se, skip,
# filters, layers, act tokens; SE on three stages, residual chains in four.
SEED_STAGES = [(1, 0, 1, 0, 0, 0, 1), (2, 0, 0, 0, 0, 0, 0), (2, 0, 1, 0, 0, 0, 1), (2, 0, 0, 0, 0, 0, 0),
               (2, 0, 1, 0, 0, 0, 1), (2, 0, 0, 0, 0, 0, 0), (1, 0, 0, 0, 0, 0, 0)]


def seed_spec() -> ArchSpec:
    space = get_space("mnasnet")
    tokens = space.canonical([t for stage in SEED_STAGES for t in stage])
    return space.decode(tokens, resolution=32, num_classes=10, in_channels=1)


MACS = MacsLatency()


class AffineDevice:
    """Measures ``offset + slope * MACS.predict(spec)`` ms: a device on which the MACs model is off by
    a constant (its measured / predicted ratio changes as the network shrinks, its slope does not)."""

    def __init__(self, offset: float = 0.2, slope: float = 0.4) -> None:
        self.offset, self.slope = offset, slope

    def ms(self, spec: ArchSpec) -> float:
        return self.offset + self.slope * MACS.predict(spec)

    def __call__(self, spec: ArchSpec, **_timing) -> SimpleNamespace:
        ms = self.ms(spec)
        return SimpleNamespace(latency_ms=ms, median_ms=ms, p10_ms=ms, p90_ms=ms, runs=1, threads=1, provider="affine",
                               ort_version="none")


DEVICE = AffineDevice()


def reachable_target(pred, spec: ArchSpec, share: float = 0.3) -> float:
    """A target ``share`` of the way from the seed's latency down to the smallest reachable one."""
    top, floor = pred.predict(spec), pred.predict(smallest_network(spec))
    return top - share * (top - floor)


def config(pred, spec, **kw) -> NetAdaptConfig:
    base = dict(target_ms=reachable_target(pred, spec), delta=0.1, decay=0.9, steps=3, final_epochs=0.5,
                seed_epochs=8, batch_size=64, workers=0, measure_iterations=False, seed=0)
    return NetAdaptConfig(**{**base, **kw})


def measured_config(**kw) -> NetAdaptConfig:
    """Steering by :data:`DEVICE`: a target 40% of the way from the seed's measured latency down to the smallest network's."""
    top, floor = DEVICE.ms(seed_spec()), DEVICE.ms(smallest_network(seed_spec()))
    return config(MACS, seed_spec(), target_ms=top - 0.4 * (top - floor), measure_iterations=True, **kw)


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("netadapt") / "run"
    logs: list[str] = []
    run = NetAdaptRun(run_dir, measured_config(), data, MACS, progress=logs.append, measure_fn=DEVICE)
    summary = run.run(seed_spec(), None)
    return run_dir, summary, logs


def test_steers_by_the_measured_latency(finished_run):
    run_dir, summary, _ = finished_run
    hist = pd.read_csv(run_dir / "history.csv")
    assert len(hist) == summary["iterations"] >= 3
    seed_ms = DEVICE.ms(seed_spec())
    assert summary["target_basis"] == "measured" and summary["seed_latency_ms"] == pytest.approx(seed_ms)
    prev_p, prev_m = summary["seed_predicted_ms"], seed_ms
    slope_learned = 0
    for k, row in hist.iterrows():
        spec = ArchSpec.load(run_dir / "checkpoints" / f"iter_{int(row['iteration']):03d}.json")
        assert row["measured_ms"] == pytest.approx(DEVICE.ms(spec))
        assert row["predicted_ms"] == pytest.approx(MACS.predict(spec))
        assert row["filters_removed"] == row["channels_before"] - row["channels_after"] > 0
        # The cut is asked in measured ms and turned into a predicted constraint by the correction ...
        assert row["predicted_ms"] <= row["constraint_ms"] + 1e-9
        assert row["constraint_ms"] == pytest.approx(prev_p - row["delta_ms"] / row["correction"])
        # ... which is the measured / predicted ratio until the measured latency has fallen by 15%, then
        # the device's own ms per predicted ms (the ratio would be off by the device's offset).
        if k >= 2 and seed_ms - prev_m >= steer.MIN_SPAN * seed_ms:
            assert row["correction"] == pytest.approx(DEVICE.slope)
            assert prev_m - row["measured_ms"] >= row["delta_ms"] - 1e-9  # the device saw at least the cut asked
            slope_learned += 1
        else:
            assert row["correction"] == pytest.approx(prev_m / prev_p)
        if k < len(hist) - 1:
            assert row["delta_ms"] == pytest.approx(0.1 * seed_ms * 0.9 ** k)  # delta_i as configured
            assert row["measured_ms"] > summary["target_ms"]
        prev_p, prev_m = row["predicted_ms"], row["measured_ms"]
    assert slope_learned >= 1
    # Stopped by the measurement, not the prediction: the MACs model still puts the network above the target.
    assert prev_m <= summary["target_ms"] < prev_p
    assert summary["stop_reason"] == "target met (measured)" and summary["target_met_measured"]
    assert not summary["target_met_predicted"]
    assert summary["final_measured_in_loop_ms"] == pytest.approx(prev_m)


def test_history_reports_how_sure_each_choice_was(finished_run, data):
    run_dir, _, _ = finished_run
    hist = pd.read_csv(run_dir / "history.csv")
    props = pd.read_csv(run_dir / "proposals.csv")
    assert (hist["val_images"] == len(data.val)).all()
    for _, row in hist.iterrows():
        scores = props.loc[props["iteration"] == row["iteration"], "score"].sort_values(ascending=False).tolist()
        assert row["score_gap"] == pytest.approx(scores[0] - scores[1])
        assert row["score_gap_se"] >= 0
    # The two best differ on some images somewhere in the run, and then the standard error is positive.
    assert (hist["score_gap_se"] > 0).any()


def test_outputs_and_summary(finished_run):
    run_dir, s, logs = finished_run
    for name in ("history.csv", "proposals.csv", "netadapt.json", "netadapt.pt", "netadapt.onnx", "progress.png",
                 "result.json", "config.json", "state.json"):
        assert (run_dir / name).stat().st_size > 0, name
    for key in ("seed_latency_ms", "final_latency_ms", "final_predicted_ms", "seed_accuracy", "final_accuracy",
                "iterations", "run_dir"):
        assert key in s
    assert s["final_latency_ms"] > 0 and s["seed_latency_ms"] > 0 and s["final_predicted_ms"] > 0
    assert 0 <= s["final_accuracy"] <= 1 and s["final_accuracy"] > 0.3  # digits, chance is 0.1
    final = ArchSpec.load(run_dir / "netadapt.json")
    check_fits(build_model(final), load_weights(run_dir / "netadapt.pt"))
    assert json.loads((run_dir / "result.json").read_text()) == json.loads(json.dumps(s))
    props = pd.read_csv(run_dir / "proposals.csv")
    assert set(props["status"]) == {"ok"} and len(props) >= s["iterations"] + 1
    assert any(line.startswith("[iteration 1] kept") for line in logs)
    assert sum(line.startswith("  ") and " -> " in line and "val acc" in line for line in logs) == len(props)


def test_kept_proposal_is_the_best_by_the_rule(finished_run):
    run_dir, s, _ = finished_run
    props = pd.read_csv(run_dir / "proposals.csv")
    hist = pd.read_csv(run_dir / "history.csv")
    for _, row in hist.iterrows():
        it = props[props["iteration"] == row["iteration"]]
        best = it.loc[it["score"].idxmax()]
        assert best["group"] == row["group"]


def test_resume_continues_after_an_interruption(data, tmp_path, finished_run):
    _, full, _ = finished_run
    run_dir = tmp_path / "interrupted"

    def stop_after_first(line: str) -> None:
        if line.startswith("[iteration 1] kept"):
            raise KeyboardInterrupt

    cfg = measured_config()
    with pytest.raises(KeyboardInterrupt):
        NetAdaptRun(run_dir, cfg, data, MACS, progress=stop_after_first, measure_fn=DEVICE).run(seed_spec(), None)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["iteration"] == 1 and state["phase"] == "adapt"
    logs: list[str] = []
    s = NetAdaptRun(run_dir, cfg, data, MACS, progress=logs.append, measure_fn=DEVICE).run(resume=True)
    assert logs[0].startswith(f"resuming {run_dir} after iteration 1")
    assert not any(line.startswith("seed") for line in logs)  # the seed was not trained again
    assert s["iterations"] == full["iterations"]
    assert ArchSpec.load(run_dir / "netadapt.json") == ArchSpec.load(full["arch"])
    hist = pd.read_csv(run_dir / "history.csv")
    assert hist["iteration"].tolist() == list(range(1, s["iterations"] + 1))
    full_hist = pd.read_csv(Path(full["run_dir"]) / "history.csv")
    assert hist["group"].tolist() == full_hist["group"].tolist()
    assert hist["accuracy_after"].tolist() == full_hist["accuracy_after"].tolist()
    assert hist["correction"].tolist() == pytest.approx(full_hist["correction"].tolist())
    assert hist["score_gap"].tolist() == pytest.approx(full_hist["score_gap"].tolist())


def test_a_failing_proposal_is_skipped(data, tmp_path):
    spec = seed_spec()
    torch.manual_seed(0)
    state = build_model(spec).state_dict()
    # A NaN filter in the stem: every proposal that keeps it diverges; trimming the stem drops it first.
    state["stem.conv.weight"][5] = float("nan")
    top = MACS.predict(spec)
    props, _ = make_proposals(spec, MACS, top - 0.003 * top)
    assert "stem" in [p.group for p in props] and len(props) > 1
    cfg = config(MACS, spec, target_ms=top - 0.002 * top, delta=0.003, final_epochs=0)
    run = NetAdaptRun(tmp_path / "nan", cfg, data, MACS, progress=lambda _m: None)
    s = run.run(spec, state)
    rows = pd.read_csv(tmp_path / "nan" / "proposals.csv")
    ok = rows[rows["status"] == "ok"]
    assert ok["group"].tolist() == ["stem"]
    assert (rows["status"] == "failed").sum() == len(props) - 1
    assert rows.loc[rows["status"] == "failed", "error"].str.contains("TrainingDiverged").all()
    assert s["iterations"] == 1 and pd.read_csv(tmp_path / "nan" / "history.csv")["group"].tolist() == ["stem"]
    assert math.isfinite(s["final_accuracy"])


def test_targets_that_cannot_be_met_are_user_errors(data, tmp_path):
    spec = seed_spec()
    top = MACS.predict(spec)
    floor = MACS.predict(smallest_network(spec))
    for target, msg in ((top * 1.01, "not below the seed's predicted latency"),
                        (floor * 0.9, "below anything reachable")):
        run = NetAdaptRun(tmp_path / "bad", config(MACS, spec, target_ms=target), data, MACS)
        with pytest.raises(UserError, match=msg) as err:
            run.run(spec, None)
        assert not (tmp_path / "bad").exists()  # nothing written
        if target > top:  # a seed within the target says so in a type of its own, with the figure it compared
            from netadapt.loop import SeedWithinTarget

            assert isinstance(err.value, SeedWithinTarget)
            assert (err.value.seed_ms, err.value.basis) == (pytest.approx(top), "predicted")
    with pytest.raises(UserError, match="--select"):
        NetAdaptConfig(select="fastest").check()


def test_python_entry_point_returns_a_finished_run(finished_run, data):
    from netadapt.api import adapt

    run_dir, summary, _ = finished_run
    logs: list[str] = []
    res = adapt(seed_spec(), None, data, MACS, run_dir, progress=logs.append, measure_fn=DEVICE)
    assert logs == [f"{run_dir}: run already finished"]  # nothing was run again
    assert res.spec == ArchSpec.load(run_dir / "netadapt.json") and res.iterations == summary["iterations"]
    assert res.measured_ms == summary["final_latency_ms"] <= res.target_ms and res.target_met
    check_fits(build_model(res.spec), res.state)
    c = res.compute
    props = pd.read_csv(run_dir / "proposals.csv")
    assert c["proposals"] == len(props) and c["proposal_steps"] == 3 * (props["status"] == "ok").sum()
    assert c["proposal_images"] == 64 * c["proposal_steps"] and c["adapt_seconds"] > 0
    with pytest.raises(TypeError, match="unknown NetAdapt options: speed"):
        adapt(seed_spec(), None, data, MACS, run_dir / "other", speed=2)
