"""The NetAdapt loop end to end on digits.

Most tests trim against the deterministic MACs latency model so that their iterations do not
depend on timings of a busy machine; one run uses the real (small) measured predictor and the CLI
test goes through the latency package's loader.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from common.errors import UserError
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


def reachable_target(pred, spec: ArchSpec, share: float = 0.3) -> float:
    """A target ``share`` of the way from the seed's latency down to the smallest reachable one."""
    top, floor = pred.predict(spec), pred.predict(smallest_network(spec))
    return top - share * (top - floor)


def config(pred, spec, **kw) -> NetAdaptConfig:
    base = dict(target_ms=reachable_target(pred, spec), delta=0.1, decay=0.9, steps=3, final_epochs=0.5,
                seed_epochs=8, batch_size=64, workers=0, measure_iterations=False, seed=0)
    return NetAdaptConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("netadapt") / "run"
    logs: list[str] = []
    run = NetAdaptRun(run_dir, config(MACS, seed_spec(), measure_iterations=True), data, MACS, progress=logs.append)
    summary = run.run(seed_spec(), None)
    return run_dir, summary, logs


def test_every_kept_proposal_cuts_at_least_its_delta(finished_run):
    run_dir, summary, _ = finished_run
    hist = pd.read_csv(run_dir / "history.csv")
    assert len(hist) == summary["iterations"] >= 2
    prev = summary["seed_predicted_ms"]
    for _, row in hist.iterrows():
        assert row["predicted_ms"] <= prev - row["delta_ms"] + 1e-9
        assert row["filters_removed"] == row["channels_before"] - row["channels_after"] > 0
        spec = ArchSpec.load(run_dir / "checkpoints" / f"iter_{int(row['iteration']):03d}.json")
        assert MACS.predict(spec) == pytest.approx(row["predicted_ms"])
        prev = row["predicted_ms"]
    # delta_i decays geometrically until the last step, which stops at the target
    deltas = hist["delta_ms"].tolist()
    first = 0.1 * summary["seed_predicted_ms"]
    for i, d in enumerate(deltas[:-1]):
        assert d == pytest.approx(first * 0.9 ** i)
    assert summary["final_predicted_ms"] <= summary["target_ms"] + 1e-9
    assert summary["target_met_predicted"] and summary["stop_reason"] == "target met"
    assert hist["measured_ms"].notna().all() and (hist["measured_ms"] > 0).all()


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

    cfg = config(MACS, seed_spec(), measure_iterations=True)
    with pytest.raises(KeyboardInterrupt):
        NetAdaptRun(run_dir, cfg, data, MACS, progress=stop_after_first).run(seed_spec(), None)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["iteration"] == 1 and state["phase"] == "adapt"
    logs: list[str] = []
    s = NetAdaptRun(run_dir, cfg, data, MACS, progress=logs.append).run(resume=True)
    assert logs[0].startswith(f"resuming {run_dir} after iteration 1")
    assert not any(line.startswith("seed") for line in logs)  # the seed was not trained again
    assert s["iterations"] == full["iterations"]
    assert ArchSpec.load(run_dir / "netadapt.json") == ArchSpec.load(full["arch"])
    hist = pd.read_csv(run_dir / "history.csv")
    assert hist["iteration"].tolist() == list(range(1, s["iterations"] + 1))
    full_hist = pd.read_csv(Path(full["run_dir"]) / "history.csv")
    assert hist["group"].tolist() == full_hist["group"].tolist()
    assert hist["accuracy_after"].tolist() == full_hist["accuracy_after"].tolist()


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
        with pytest.raises(UserError, match=msg):
            run.run(spec, None)
        assert not (tmp_path / "bad").exists()  # nothing written
    with pytest.raises(UserError, match="--select"):
        NetAdaptConfig(select="fastest").check()
