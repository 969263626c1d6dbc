"""``cli.py runs`` lists the runs of the results folder from their files, and says what became of each;
``netadapt --seed`` takes a run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import UserError
from common.runstatus import current, mark

from .cli_helpers import run_main


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


@pytest.fixture
def results() -> Path:
    root = Path(os.environ["HWNAS_RESULTS"])
    argv = ["search", "--target-ms", "15", "--trials", "64", "--name", "big"]
    _write(root / "runs" / "big" / "options.json", {"command": "search", "trials": 64, "argv": argv})
    records = [{"trial_id": f"t{i}", "sample": i, "status": "ok", "reward": r} for i, r in enumerate((0.5, 0.75, 0.25))]
    records.append({"trial_id": "t3", "sample": 3, "status": "error", "reward": 0.0})
    _write(root / "runs" / "big" / "searcher.json", {"format": "hwnas-searcher/2", "records": records})
    _write(root / "runs" / "big" / "seed.json", {"name": "big/t1"})
    mark(root / "runs" / "big", "interrupted")
    _write(root / "seed.json", {"name": "big/t1"})
    # A run whose process died while running (SIGKILL, power loss): its file still says running.
    _write(root / "runs" / "gone" / "options.json", {"command": "search", "trials": 16})
    _write(root / "runs" / "gone" / "status.json", {"status": "running", "pid": _dead_pid(), "host": os.uname().nodename})
    _write(root / "netadapt" / "na" / "state.json", {"iteration": 3, "accuracy": 0.9, "predicted_ms": 4.0})
    _write(root / "netadapt" / "na" / "result.json", {"final_accuracy": 0.875, "final_latency_ms": 4.2})
    _write(root / "netadapt" / "na" / "invocation.json", {"seed": "results/runs/big", "argv": ["netadapt", "--seed", "x"]})
    _write(root / "netadapt" / "na" / "netadapt.json", {})
    mark(root / "netadapt" / "na", "finished")
    return root


def test_runs_lists_status_progress_best_seed_and_command(results):
    proc = run_main("runs", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["run"]: r for r in json.loads(proc.stdout)}
    big, gone, na = rows["big"], rows["gone"], rows["na"]
    assert (big["kind"], big["status"], big["done"], big["budget"], big["best_reward"], big["best_trial"]) == \
        ("search", "interrupted", 4, 64, 0.75, 1)
    assert not big["demonstration"] and big["seed"] == str(results / "runs" / "big" / "seed.json")
    assert big["command"] == "python cli.py search --target-ms 15 --trials 64 --name big"
    assert gone["status"] == "killed" and gone["done"] == 0 and gone["best_reward"] is None and gone["demonstration"]
    assert (na["kind"], na["status"], na["done"], na["accuracy"]) == ("netadapt", "finished", 3, 0.875)
    assert na["command"] == "python cli.py netadapt --seed x"

    table = run_main("runs").stdout.splitlines()
    assert table[0].split()[:4] == ["run", "status", "done", "best"]
    line = next(ln for ln in table if ln.startswith("search/big "))
    assert "interrupted" in line and "4/64 trials" in line and "reward 0.7500 (trial 1)" in line
    assert line.rstrip().endswith("python cli.py search --target-ms 15 --trials 64 --name big")
    assert f"= {results / 'seed.json'}" in line  # results/seed.json is this run's seed (outside the working folder: in full)
    assert "killed" in next(ln for ln in table if ln.startswith("search/gone "))
    assert "demonstration" in next(ln for ln in table if ln.startswith("search/gone "))


def test_runs_of_an_empty_results_folder():
    proc = run_main("runs")
    assert proc.returncode == 0 and proc.stdout.startswith("no runs under")


def test_a_running_run_is_not_resumed_by_a_second_process(results):
    from common.runstatus import refuse_if_running

    mark(results / "runs" / "big", "running")  # this process is alive
    assert current(results / "runs" / "big") == "running"
    with pytest.raises(UserError, match="is running"):
        refuse_if_running(results / "runs" / "big")
    refuse_if_running(results / "runs" / "gone")  # killed: resumable


def test_netadapt_seed_takes_a_run_folder(results):
    from netadapt.commands import _base_name, seed_file

    assert seed_file(str(results / "runs" / "big")) == str(results / "runs" / "big" / "seed.json")
    assert seed_file(str(results / "netadapt" / "na")) == str(results / "netadapt" / "na" / "netadapt.json")
    assert seed_file("mobilenet_v3_small") == "mobilenet_v3_small"
    assert _base_name(str(results / "runs" / "big")) == "big" and _base_name(str(results / "seed.json")) == "seed"
    with pytest.raises(UserError, match="is a folder with none of"):
        seed_file(str(results / "runs" / "gone"))
