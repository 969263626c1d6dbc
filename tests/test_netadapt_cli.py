"""``cli.py netadapt`` end to end (Ray tasks, a copied tiny latency table) and its bad-input errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from space.builder import build_model
from train.weights import save_weights

from .cli_helpers import assert_one_line_error, run_cli
from .test_netadapt_loop import seed_spec

TINY = "tiny-cpu"


@pytest.fixture
def results(tmp_path, tiny_predictor) -> Path:
    """The test's results folder, holding the tiny predictor's latency data and a seed with weights."""
    root = Path(os.environ["HWNAS_RESULTS"])
    shutil.copytree(tiny_predictor.meta["device_dir"], root / "latency" / TINY)
    spec = seed_spec()
    spec.save(root / "seed.json")
    torch.manual_seed(0)
    save_weights(build_model(spec), root / "seed.pt")
    return root


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


FAST = ["--device", TINY, "--data", "digits", "--data-limit", "200", "--eval-limit", "100", "--steps", "2",
        "--final-epochs", "0.2", "--batch-size", "64", "--no-measure-iterations"]


def test_cli_runs_proposals_as_ray_tasks(results, tiny_predictor):
    # Steering by what onnxruntime measures on this machine: the target is 0.85 of the seed's measured latency.
    measured = [a for a in FAST if a != "--no-measure-iterations"]
    proc = run_cli("netadapt", *measured, "--target-ratio", "0.85", "--delta", "0.05", "--workers", "2", "--json",
                   env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for key in ("seed_latency_ms", "final_latency_ms", "final_predicted_ms", "seed_accuracy", "final_accuracy",
                "iterations", "run_dir", "compute"):
        assert key in out
    run_dir = Path(out["run_dir"])
    assert run_dir == results / "netadapt" / "seed" and out["iterations"] >= 1
    assert out["target_basis"] == "measured" and out["stop_reason"] == "target met (measured)"
    hist = pd.read_csv(run_dir / "history.csv")
    assert (hist["measured_ms"] > 0).all()
    # every proposal ran as a Ray task: the node column is filled only inside Ray
    props = pd.read_csv(run_dir / "proposals.csv", keep_default_na=False)
    assert len(props) and (props["node"].astype(str) != "").all()
    assert hist["measured_ms"].iloc[-1] <= out["target_ms"] == pytest.approx(0.85 * json.loads(
        (run_dir / "state.json").read_text())["seed_measured_ms"])
    assert out["compute"]["proposals"] >= out["iterations"] and out["compute"]["proposal_steps"] > 0
    assert "[iteration 1] kept" in proc.stderr and "val acc" in proc.stderr
    assert (run_dir / "netadapt.onnx").exists() and (run_dir / "progress.png").exists()
    # a second run of the same seed gets its own folder; --resume of a finished run just reports it
    again = run_cli("netadapt", *FAST, "--resume", "--json", env=_env())
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["run_dir"] == str(run_dir) and "already finished" in again.stderr


def test_missing_default_seed_says_run_search_first(tmp_path):
    proc = run_cli("netadapt", "--device", TINY, env=_env())
    assert_one_line_error(proc, "seed.json", "cli.py search")


def test_bad_inputs_are_one_line_errors(results, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(run_cli("netadapt", "--seed", str(bad), *FAST, env=_env()), "bad.json")
    assert_one_line_error(run_cli("netadapt", "--seed", "resnet9000", *FAST, env=_env()), "resnet9000")
    # weights of another network
    other = results / "other.pt"
    torch.save({"stem.conv.weight": torch.zeros(3, 1, 3, 3)}, other)
    assert_one_line_error(run_cli("netadapt", "--weights", str(other), *FAST, env=_env()), "do not fit")
    # targets above the seed or below anything reachable
    assert_one_line_error(run_cli("netadapt", *FAST, "--target-ms", "1000", env=_env()), "not below")
    assert_one_line_error(run_cli("netadapt", *FAST, "--target-ms", "0.001", env=_env()), "below anything reachable")
    assert not (results / "netadapt").exists() or not any((results / "netadapt").iterdir())
    # unknown data
    assert_one_line_error(run_cli("netadapt", "--data", str(tmp_path / "nowhere"), *FAST[:2], env=_env()), "nowhere")
    # argparse rejects a ratio outside (0, 1)
    proc = run_cli("netadapt", "--target-ratio", "1.5", env=_env())
    assert proc.returncode == 2 and "between 0 and 1" in proc.stderr
