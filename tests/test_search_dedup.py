"""A real ``cli.py search`` where repeats are certain: the ``tiny`` space has 12 networks and the run may
train 16. Every network is trained once (trials.csv holds the 12, nothing twice), the run stops when
the space is used up, and the controller heard a reward for every sample it drew: one per trial and
one per repeated proposal, answered from the network's recorded result."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from search.searcher import read_state
from space.searchspace import get_space

from .cli_helpers import ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_tiny_space_table() -> None:
    """A real latency table of the tiny space at 32 px on this machine, in the test's results folder
    (all its units, no calibration networks: the plain sum; seconds)."""
    from latency.build import Plan, build
    from latency.testing import TINY_DEVICE

    build(TINY_DEVICE, "tiny", 32, "full", progress=False, plan=Plan(0, 0, 0, 0, families=()))


def test_search_of_a_tiny_space_trains_each_network_once_and_the_controller_hears_every_sample(tmp_path):
    results = Path(os.environ["HWNAS_RESULTS"])  # the test's own (conftest)
    build_tiny_space_table()
    env = {**os.environ, "HWNAS_RESULTS": str(results), "OMP_NUM_THREADS": "1", "RAY_ADDRESS": "local"}
    env.pop("HWNAS_FAULT_INJECT", None)
    args = ["search", "--space", "tiny", "--target-ms", "0.05", "--trials", "16", "--concurrency", "2", "--epochs", "1",
            "--device", "tiny-cpu", "--latency-resolution", "32", "--data", "digits", "--data-limit", "64",
            "--eval-limit", "40", "--batch-size", "64", "--name", "d", "--json"]
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    run = results / "runs" / "d"
    space = get_space("tiny")
    every = {"-".join(map(str, space.canonical(t))) for t in itertools.product(*[range(d.n) for d in space.decisions])}
    df = pd.read_csv(run / "trials.csv", dtype={"tokens": str})
    # The space was used up: 12 trials, not 16, each network once, all of them.
    assert out["finished"] == len(df) == space.size == len(every) == 12 and out["status"] == "finished"
    # One short line per finished trial on stderr (the budget's 16 would stay under 5 KB).
    lines = [line for line in proc.stderr.splitlines() if re.match(r"\[\d+/16\] trial \d+: ", line)]
    assert len(lines) == 12 and sum(len(line) + 1 for line in lines) < 5000 * 12 / 16, lines
    assert df["tokens"].is_unique and set(df["tokens"]) == every
    assert sorted(df["trial"]) == list(range(12)) and set(df["status"]) == {"ok"}
    assert len(list((run / "trials").glob("net_*.json"))) == 12
    state = read_state(run / "searcher.json")
    ctl = state["controller"]
    # Repeats happened (16 token lists name 12 networks, and the controller learns) and were answered:
    # one reward per trial plus one per repeated proposal, none left waiting.
    assert len(state["repeats"]) > 0
    assert ctl["feedbacks"] == len(state["records"]) + len(state["repeats"]) == ctl["next_key"]
    assert ctl["pending"] == [] and state["live"] == {} and state["waiting"] == {}
    rewards = dict(zip(df["tokens"], df["reward"]))
    assert all(r["reward"] == rewards[r["tokens"]] for r in state["repeats"])
    summary = json.loads((run / "summary.json").read_text())["searcher"]
    assert summary["trials"] == 12 and summary["repeats"] == len(state["repeats"])
    assert summary["feedbacks"] == ctl["feedbacks"]
