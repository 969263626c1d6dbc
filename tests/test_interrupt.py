"""Ctrl-C on real processes: ``cli.py search`` and ``cli.py netadapt`` get SIGINT as a terminal sends it (to
the whole foreground process group) in the middle of a run.

* The first Ctrl-C stops the run cleanly: exit code 130, the command that continues it printed, the
  results so far written in the run folder, ``results/seed.json`` untouched.
* A second Ctrl-C stops it at once, and leaves every file whole.
* ``--resume --name RUN`` (nothing else) then completes the budget with every trial, or every
  iteration, exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from search.searcher import read_state
from search.trial import FAULT_ENV
from space.builder import build_model
from train.weights import save_weights

from .bench_scripts import bench_module
from .test_faults import (
    TINY,
    _env,
    _kill_session,
    _results_root,
    _run_to_end,
    _start,
    _tail,
    _wait_until,
    finished_and_handed_out,
)
from .test_netadapt_loop import seed_spec

TRIALS = 6
SEARCH = ["search", "--target-ms", "1", "--trials", str(TRIALS), "--concurrency", "2", "--epochs", "1",
          "--device", TINY, "--latency-resolution", "32", "--data", "digits", "--data-limit", "256",
          "--eval-limit", "40", "--batch-size", "16", "--name", "k"]
EARLIER_SEED = b'{"an": "earlier seed, which an unfinished search must leave alone"}\n'

pytestmark = pytest.mark.usefixtures("one_torch_thread")
workstate = bench_module("workstate")


def _ctrl_c(proc: subprocess.Popen, times: int = 1) -> float:
    """SIGINT to the process group, as a terminal's Ctrl-C; returns how long the process took to exit."""
    t0 = time.monotonic()
    for i in range(times):
        if i:
            time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=180)
    finally:
        _kill_session(proc)  # anything Ray left behind
    return time.monotonic() - t0


def _records(run: Path) -> int:
    st = read_state(run / "searcher.json")
    return len(st["records"]) if st else 0


@pytest.fixture(scope="module")
def interrupted_search(tmp_path_factory, tiny_predictor):
    base = tmp_path_factory.mktemp("interrupted_search")
    root = _results_root(base, tiny_predictor)
    (root / "seed.json").write_bytes(EARLIER_SEED)
    run = root / "runs" / "k"
    # Sample 1 waits 20 s before training: it is still running when sample 0 has finished, however
    # quick the tiny trials are (without it, both could end between the check and the Ctrl-C).
    env = _env(root, **{FAULT_ENV: "slow:1"})

    # 1. One Ctrl-C once a trial has finished while another runs.
    proc = _start(SEARCH, env, base / "first")
    _wait_until(lambda: finished_and_handed_out(run), proc, base / "first", timeout=300)
    first_s = _ctrl_c(proc)
    first = SimpleNamespace(rc=proc.returncode, seconds=first_s, err=(base / "first.err").read_text(),
                            out=(base / "first.out").read_text(),
                            df=pd.read_csv(run / "trials.csv", keep_default_na=False, na_values=[""]),
                            status=json.loads((run / "status.json").read_text()), seed=(root / "seed.json").read_bytes(),
                            state=read_state(run / "searcher.json"))

    # 2. Resumed, then two Ctrl-C in a row once one more trial has finished.
    done = _records(run)
    proc = _start(["search", "--resume", "--name", "k"], env, base / "second")
    _wait_until(lambda: _records(run) > done, proc, base / "second", timeout=300)
    second_s = _ctrl_c(proc, times=2)
    second = SimpleNamespace(rc=proc.returncode, seconds=second_s, err=(base / "second.err").read_text(),
                             state=read_state(run / "searcher.json"), seed=(root / "seed.json").read_bytes(),
                             status=json.loads((run / "status.json").read_text()))

    # 3. Resumed to the end on a fresh folder, from what the end-to-end benchmark keeps of this one
    # (bench/workstate.py): the options, the searcher's state and the latency table, no weights, no
    # Tune folders, no trials.csv.
    kept = base / "kept"
    workstate.keep(root, kept)
    root.rename(base / "gone")  # nothing of the first folder is there to fall back on
    root = base / "fresh" / "results"
    restored = {p.as_posix() for p in workstate.restore(kept, root)}
    run = root / "runs" / "k"
    env = _env(root)  # what is left runs at full speed: nothing more to interrupt
    _run_to_end(["search", "--resume", "--name", "k", "--json"], env, base / "third", timeout=400)
    return SimpleNamespace(
        run=run, root=root, first=first, second=second, err=(base / "third.err").read_text(),
        out=json.loads((base / "third.out").read_text()),
        df=pd.read_csv(run / "trials.csv", keep_default_na=False, na_values=[""]),
        state=read_state(run / "searcher.json"), summary=json.loads((run / "summary.json").read_text()),
        restored=restored,
    )


def test_first_ctrl_c_stops_cleanly_and_says_how_to_continue(interrupted_search):
    f = interrupted_search.first
    assert f.rc == 130, f.err[-3000:]
    assert "SIGINT: stopping the search" in f.err
    assert "continue with: python cli.py search --resume --name k" in f.out
    assert f.seed == EARLIER_SEED  # nothing outside the run folder changed
    # The results so far are written: finished trials with their figures, the running ones as interrupted.
    ok, cut = f.df[f.df["status"] == "ok"], f.df[f.df["status"] == "interrupted"]
    assert len(ok) >= 1 and len(cut) >= 1 and len(ok) + len(cut) == len(f.df) < TRIALS
    assert ok["accuracy"].between(0, 1).all() and (cut["reward"] == 0).all()
    assert f.status["status"] == "interrupted"
    assert (interrupted_search.run / "seed.json").exists()  # the run's own seed: its best so far
    # The interrupted trials are not heard by the controller: they run again on --resume.
    assert f.state["controller"]["feedbacks"] <= len(ok) and set(f.state["live"]) == set(cut["trial_id"])


def test_second_ctrl_c_stops_at_once_and_leaves_the_state_whole(interrupted_search):
    s = interrupted_search.second
    assert s.rc == 130, s.err[-3000:]
    assert "continue with: python cli.py search --resume --name k" in s.err
    assert s.state is not None and s.status["status"] == "interrupted"  # both files whole and readable
    assert s.seed == EARLIER_SEED
    assert s.seconds < 60


def test_resume_needs_nothing_else_and_runs_every_trial_once(interrupted_search):
    k = interrupted_search
    assert "resuming run" in k.err
    df = k.df
    assert k.out["status"] == "finished" and k.out["trials"] == len(df) == TRIALS
    assert sorted(df["trial"]) == list(range(TRIALS)) and df["trial_id"].is_unique
    assert set(df["status"]) == {"ok"}
    # Trials finished in an earlier sitting kept their results: same trial id, same accuracy.
    for r in k.first.state["records"]:
        row = df.set_index("trial").loc[r["sample"]]
        assert row["trial_id"] == r["trial_id"] and row["accuracy"] == r["accuracy"]
    ctl = k.state["controller"]
    assert ctl["feedbacks"] == len(k.state["records"]) == TRIALS and k.state["live"] == {}
    assert k.summary["status"] == "finished" and (k.root / "seed.json").read_bytes() != EARLIER_SEED
    assert json.loads((k.root / "seed.json").read_text())["name"].startswith("k/")


def test_the_fresh_folder_got_only_the_kept_state(interrupted_search):
    restored = interrupted_search.restored
    assert {"runs/k/options.json", "runs/k/searcher.json"} <= restored
    assert any(p.startswith(f"latency/{TINY}/") for p in restored)
    assert not any(p.endswith((".pt", "trials.csv")) or "/tune/" in p for p in restored)


def test_a_run_shows_one_short_line_per_trial(interrupted_search):
    err = interrupted_search.err  # the last sitting: the trials not finished before
    lines = [ln for ln in err.splitlines() if re.match(r"\[\d+/6\] trial \d+: ", ln)]
    left = TRIALS - len(interrupted_search.second.state["records"])
    assert len(lines) == left >= 1
    for ln in lines:
        assert re.search(r"\d+ layers, \d+\.\d\dM params, \d+M MACs \| acc \d\.\d{3}, \d+\.\d\d ms predicted, "
                         r"reward \d\.\d{4} \| best \d\.\d{4} \(trial \d+\)", ln), ln
        assert len(ln) < 200
    assert "== Status ==" not in err and "Trial name" not in err  # no reprinted table
    assert len(err.encode()) < 1500 + 200 * left, err


# ---- NetAdapt -----------------------------------------------------------------------------------

def _netadapt_args(root: Path, tiny_predictor) -> list[str]:
    spec = seed_spec()
    spec.save(root / "seed.json")
    torch.manual_seed(0)
    save_weights(build_model(spec), root / "seed.pt")
    from netadapt.proposals import smallest_network

    top, floor = tiny_predictor.predict(spec), tiny_predictor.predict(smallest_network(spec))
    return ["netadapt", "--device", TINY, "--data", "digits", "--data-limit", "200", "--eval-limit", "100",
            "--steps", "2", "--final-epochs", "0.2", "--batch-size", "64", "--no-measure-iterations",
            "--target-ms", f"{top - 0.8 * (top - floor):.6f}", "--delta", "0.02", "--max-iterations", "3",
            "--workers", "2", "--name", "na", "--json"]


def _iteration(run: Path) -> int:
    try:
        return json.loads((run / "state.json").read_text())["iteration"]
    except (OSError, ValueError):
        return -1


def test_netadapt_ctrl_c_then_resume(tmp_path, tiny_predictor):
    root = _results_root(tmp_path, tiny_predictor)
    args = _netadapt_args(root, tiny_predictor)
    seed_before = (root / "seed.json").read_bytes()
    run = root / "netadapt" / "na"
    proc = _start(args, _env(root), tmp_path / "first")
    _wait_until(lambda: _iteration(run) >= 1, proc, tmp_path / "first", timeout=240)
    _ctrl_c(proc)
    err = (tmp_path / "first.err").read_text()
    assert proc.returncode == 130, _tail(tmp_path / "first")
    done = _iteration(run)
    assert f"NetAdapt interrupted after iteration {done}" in err
    assert "continue with: python cli.py netadapt --resume --name na" in err
    out = json.loads((tmp_path / "first.out").read_text())
    assert out["status"] == "interrupted" and out["resume_command"] == "python cli.py netadapt --resume --name na"
    assert not (run / "result.json").exists() and (root / "seed.json").read_bytes() == seed_before
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    hist = pd.read_csv(run / "history.csv")
    assert hist["iteration"].tolist() == list(range(1, done + 1))

    # Resumed on a fresh folder from what the end-to-end benchmark keeps (bench/workstate.py): the run's
    # JSON files and the weights of the seed and the newest checkpoint only.
    kept = tmp_path / "kept"
    workstate.keep(root, kept)
    weights = sorted(p.name for p in kept.rglob("*.pt"))
    assert weights == sorted({"iter_000.pt", f"iter_{done:03d}.pt"}), weights
    root.rename(tmp_path / "gone")  # nothing of the first folder is there to fall back on
    root = tmp_path / "fresh" / "results"
    run = root / "netadapt" / "na"
    workstate.restore(kept, root)
    _run_to_end(["netadapt", "--resume", "--name", "na", "--json"], _env(root), tmp_path / "resumed", timeout=300)
    result = json.loads((tmp_path / "resumed.out").read_text())
    n = result["iterations"]
    hist = pd.read_csv(run / "history.csv")
    assert n >= done and hist["iteration"].tolist() == list(range(1, n + 1))  # each iteration once
    props = pd.read_csv(run / "proposals.csv")
    assert not props.duplicated(["iteration", "group"]).any() and "interrupted" not in set(props["status"])
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


def test_netadapt_second_ctrl_c_stops_at_once(tmp_path, tiny_predictor):
    root = _results_root(tmp_path, tiny_predictor)
    run = root / "netadapt" / "na"
    proc = _start(_netadapt_args(root, tiny_predictor), _env(root), tmp_path / "first")
    _wait_until(lambda: _iteration(run) >= 0, proc, tmp_path / "first", timeout=240)
    seconds = _ctrl_c(proc, times=2)
    assert proc.returncode == 130 and seconds < 60, _tail(tmp_path / "first")
    assert "continue with: python cli.py netadapt --resume --name na" in (tmp_path / "first.err").read_text()
    json.loads((run / "state.json").read_text())  # whole
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
