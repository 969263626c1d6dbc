"""Faults with real processes and a real local Ray.

* A search (``cli.py search`` in its own session) is SIGKILLed, process group and Ray with it, once
  trials have finished, then resumed: it ends with exactly the requested trials, each trial that had
  finished before the kill keeps its result, and the controller - restored, not restarted - heard
  every trial exactly once.
* In the same run, samples fail on purpose through ``HWNAS_FAULT_INJECT`` (a raise, a NaN loss, an
  allocation the allocator refuses, a worker SIGKILLed mid-trial): each is recorded with its status
  and a short error, gives reward 0 once, and the other trials complete.
* A NetAdapt run killed after an iteration checkpoint resumes without repeating or losing iterations.
* ``--resume`` refuses, in one line, folders that are not runs of the command.
* The searcher's state is strict JSON that round-trips the controller exactly and is never unpickled.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import cli
from search import jsonstate
from search.controller import ControllerConfig
from search.searcher import read_state
from search.strategies.controller import ControllerSearcher
from search.task import NetworkTask
from search.trial import FAULT_ENV, TrialSettings
from space.builder import build_model
from train.weights import save_weights

from .cli_helpers import ROOT
from .test_netadapt_loop import seed_spec

TINY = "tiny-cpu"
TRIALS = 8
FAULTS = {1: "raise", 3: "nan", 4: "oom", 6: "exit"}  # sample index -> injected fault
SEARCH = ["search", "--target-ms", "1", "--trials", str(TRIALS), "--concurrency", "2", "--epochs", "1",
          "--device", TINY, "--latency-resolution", "32", "--data", "digits", "--data-limit", "64",
          "--eval-limit", "40", "--batch-size", "64", "--name", "k", "--json"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- processes ---------------------------------------------------------------------------------

def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the CLI, started with start_new_session, and all it spawned)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # after "pid (comm)": state, ppid, pgrp, session
            pids.append(int(d.name))
    return pids


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the CLI's whole session: its process group, and Ray's processes that made groups of their own."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group at once, so that nothing in it forks in between
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = _session_pids(proc.pid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.poll()  # reap the CLI itself
        time.sleep(0.05)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log.with_suffix(".out"), "w")  # files, not pipes: a full pipe would stall the run
    err = open(log.with_suffix(".err"), "w")
    try:
        return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, env=env, stdout=out,
                                stderr=err, start_new_session=True)
    finally:
        out.close()
        err.close()


def _tail(log: Path) -> str:
    p = log.with_suffix(".err")
    return p.read_text()[-3000:] if p.exists() else ""


def _wait_until(cond: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before the kill point:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no kill point within {timeout} s:\n{_tail(log)}")
        time.sleep(0.1)


def _run_to_end(args: list[str], env: dict[str, str], log: Path, timeout: float) -> subprocess.Popen:
    proc = _start(args, env, log)
    try:
        proc.wait(timeout=timeout)
    finally:
        _kill_session(proc)  # whatever Ray left behind
    assert proc.returncode == 0, _tail(log)
    return proc


def finished_and_handed_out(run: Path) -> bool:
    """A search run's searcher.json holds a finished trial and one handed out without a result yet: the
    moment when a stop has both kinds to write (waves of trials can otherwise end together, leaving
    nothing running). A handed-out trial that Tune has not started yet counts too."""
    st = read_state(run / "searcher.json") if (run / "searcher.json").exists() else None
    return bool(st) and len(st["records"]) >= 1 and len(st["live"]) >= 1


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    # RAY_ADDRESS=local: start a private Ray even if a `ray start` cluster runs on this machine.
    return {**env, "HWNAS_RESULTS": str(root), "OMP_NUM_THREADS": "1", "RAY_ADDRESS": "local", **extra}


def _results_root(base: Path, tiny_predictor) -> Path:
    root = base / "results"
    shutil.copytree(tiny_predictor.meta["device_dir"], root / "latency" / TINY)
    return root


# ---- the killed and resumed search -------------------------------------------------------------

@pytest.fixture(scope="module")
def killed_search(tmp_path_factory, tiny_predictor):
    base = tmp_path_factory.mktemp("killed_search")
    root = _results_root(base, tiny_predictor)
    run = root / "runs" / "k"
    faults = ",".join(f"{kind}:{i}" for i, kind in FAULTS.items())

    def two_finished() -> bool:  # one of them trained (and one, sample 1, raised)
        st = read_state(run / "searcher.json")
        return st is not None and len(st["records"]) >= 2 and any(r["status"] == "ok" for r in st["records"])

    env = _env(root, **{FAULT_ENV: faults})
    proc = _start(SEARCH, env, base / "first")
    try:
        _wait_until(two_finished, proc, base / "first", timeout=300)
    finally:
        _kill_session(proc)
    assert proc.returncode == -signal.SIGKILL
    assert _session_pids(proc.pid) == []  # no Ray worker, raylet or GCS of the killed run survived it
    before = read_state(run / "searcher.json")  # written atomically: complete even after SIGKILL
    stored = [jsonstate.read(p) for p in (run / "trials").glob("net_*.json")]
    cached = {doc["sample"]: doc for doc in stored}
    assert not (run / "trials.csv").exists()  # the run did not get to its end

    # The resumed run gets no HWNAS_FAULT_INJECT: the faults come back with the run's own settings.
    _run_to_end(["search", "--target-ms", "1", "--resume", "--name", "k", "--json"], _env(root),
                base / "resumed", timeout=400)
    return SimpleNamespace(
        run=run, before=before, cached=cached,
        # stdout is the one --json object, although Ray reported a dead worker meanwhile
        out=json.loads((base / "resumed.out").read_text()), log=(base / "resumed.err").read_text(),
        df=pd.read_csv(run / "trials.csv", keep_default_na=False, na_values=[""]),
        after=read_state(run / "searcher.json"), summary=json.loads((run / "summary.json").read_text()),
    )


def test_resumed_search_has_every_trial_exactly_once(killed_search):
    k = killed_search
    assert "resuming run" in k.log
    df = k.df
    assert k.out["trials"] == len(df) == TRIALS
    assert sorted(df["trial"]) == list(range(TRIALS)) and df["trial_id"].is_unique
    assert "unfinished" not in set(df["status"])
    assert df["tokens"].str.fullmatch(r"\d+(-\d+)+").all() and df["arch"].str.startswith("{").all()


def test_trials_finished_before_the_kill_keep_their_results(killed_search):
    k = killed_search
    finished = k.before["records"]
    assert len(finished) >= 2 and any(r["status"] == "ok" for r in finished)
    rows = k.df.set_index("trial")
    for r in finished:  # not run again: same trial, same figures
        row = rows.loc[r["sample"]]
        entry = k.before["suggested"][r["trial_id"]]
        assert row["tokens"] == "-".join(map(str, entry["tokens"])) and row["trial_id"] == r["trial_id"]
        assert row["status"] == r["status"] and row["reward"] == r["reward"]
        if r["status"] == "ok":
            # Not trained again: the stored result, to the last digit of its training time.
            assert row["train_seconds"] == k.cached[r["sample"]]["train_seconds"]
            assert row["accuracy"] == k.cached[r["sample"]]["accuracy"]


def test_controller_was_restored_and_heard_each_trial_once(killed_search):
    k = killed_search
    ctl, ctl_before = k.after["controller"], k.before["controller"]
    assert ctl["feedbacks"] == len(k.after["records"]) == TRIALS
    assert sorted(r["sample"] for r in k.after["records"]) == list(range(TRIALS))
    assert {r["trial_id"] for r in k.after["records"]} == set(k.df["trial_id"])
    assert ctl["updates"] == TRIALS // 2 and ctl["pending"] == [] and ctl["collected"] == []
    assert k.after["live"] == {} and k.after["replay"] == []
    assert k.summary["searcher"] == {"strategy": "controller", "trials": TRIALS, "samples_heard": TRIALS, "repeats": 0,
                                     "fallbacks": 0, "feedbacks": TRIALS, "updates": TRIALS // 2, "pending": 0}
    # Restored, not restarted: what the controller had learnt before the kill is the start of what it has now.
    n = len(k.before["records"])
    assert [(r["sample"], r["reward"]) for r in k.after["records"][:n]] == \
        [(r["sample"], r["reward"]) for r in k.before["records"]]
    assert ctl["history"][:len(ctl_before["history"])] == ctl_before["history"]
    # Rewards reach the controller in sample order, as later samples need them: it may have heard fewer.
    assert n >= 2 and ctl_before["feedbacks"] == k.before["samples_heard"] <= n
    # The rewards the controller heard are the ones trials.csv reports.
    heard = {r["sample"]: r["reward"] for r in k.after["records"]}
    assert all(heard[t] == rw for t, rw in zip(k.df["trial"], k.df["reward"]))


def test_failing_trials_are_recorded_and_the_run_goes_on(killed_search):
    df = killed_search.df.set_index("trial")
    expect = {1: ("error", "fault injected into sample 1"), 3: ("diverged", "TrainingDiverged: loss became nan"),
              4: ("oom", "can't allocate memory"), 6: ("error", "worker process has died")}
    for i, (status, text) in expect.items():
        row = df.loc[i]
        assert row["status"] == status and text in row["error"], (i, row["status"], row["error"])
        assert len(row["error"]) <= 200 and row["reward"] == 0
    ok = df.drop(index=list(FAULTS))
    assert set(ok["status"]) == {"ok"} and ok["error"].isna().all() and ok["accuracy"].between(0, 1).all()
    assert ok["reward"].tolist() == pytest.approx((ok["accuracy"] * (ok["latency_ms"] / 1.0) ** -0.15).tolist())
    s = killed_search.out
    assert s["completed"] == TRIALS - len(FAULTS) and s["failed"] == len(FAULTS)


def test_a_dead_worker_gives_reward_zero_exactly_once(killed_search):
    k = killed_search
    records = [r for r in k.after["records"] if r["sample"] == 6]
    assert len(records) == 1 and records[0]["reward"] == 0.0 and records[0]["status"] == "error"
    assert "\n" not in k.df.set_index("trial").loc[6, "error"]


# ---- NetAdapt killed between iterations ----------------------------------------------------------

def test_netadapt_killed_after_an_iteration_resumes_without_repeats(tmp_path, tiny_predictor):
    root = _results_root(tmp_path, tiny_predictor)
    spec = seed_spec()
    spec.save(root / "seed.json")
    torch.manual_seed(0)
    save_weights(build_model(spec), root / "seed.pt")
    # A target far away, small cuts and at most 3 iterations: 3 iterations whatever latencies this machine
    # measured for the tiny table (one cut can overshoot a near target); proposals fine-tuned in the process.
    from netadapt.proposals import smallest_network

    top, floor = tiny_predictor.predict(spec), tiny_predictor.predict(smallest_network(spec))
    args = ["netadapt", "--device", TINY, "--data", "digits", "--data-limit", "200", "--eval-limit", "100",
            "--steps", "2", "--final-epochs", "0.2", "--batch-size", "64", "--no-measure-iterations",
            "--target-ms", f"{top - 0.8 * (top - floor):.6f}", "--delta", "0.02", "--max-iterations", "3",
            "--workers", "0", "--name", "na", "--json"]
    run = root / "netadapt" / "na"

    def one_iteration() -> bool:
        try:
            return json.loads((run / "state.json").read_text())["iteration"] >= 1
        except (OSError, ValueError):
            return False

    proc = _start(args, _env(root), tmp_path / "first")
    try:
        _wait_until(one_iteration, proc, tmp_path / "first", timeout=240)
    finally:
        _kill_session(proc)
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((run / "state.json").read_text())
    done = state["iteration"]
    assert state["phase"] == "adapt" and not (run / "result.json").exists()
    hist_before = pd.read_csv(run / "history.csv")
    assert hist_before["iteration"].tolist()[:done] == list(range(1, done + 1))

    _run_to_end(["netadapt", "--resume", "--name", "na", "--json"], _env(root), tmp_path / "resumed", timeout=300)
    out = json.loads((tmp_path / "resumed.out").read_text())
    assert f"resuming {run} after iteration {done}" in (tmp_path / "resumed.err").read_text()
    n = out["iterations"]
    assert n > done and (n == 3 and out["stop_reason"] == "stopped after 3 iterations"
                         or out["stop_reason"] == "target met (predicted)" and out["final_predicted_ms"] <= out["target_ms"] + 1e-9)
    hist = pd.read_csv(run / "history.csv")
    assert hist["iteration"].tolist() == list(range(1, n + 1))  # each iteration once, none missing
    pd.testing.assert_frame_equal(hist.iloc[:done], hist_before.iloc[:done])  # finished ones untouched
    props = pd.read_csv(run / "proposals.csv")
    assert set(props["iteration"]) == set(range(1, n + 1))
    assert not props.duplicated(["iteration", "group"]).any()
    for i in range(n + 1):
        assert (run / "checkpoints" / f"iter_{i:03d}.json").exists() and (run / "checkpoints" / f"iter_{i:03d}.pt").exists()
    result = json.loads((run / "result.json").read_text())
    assert result["iterations"] == n and result["run_dir"] == str(run)
    # The summary has what an uninterrupted run reports.
    for key in ("seed_latency_ms", "final_latency_ms", "final_predicted_ms", "seed_accuracy", "final_accuracy",
                "target_met_predicted", "stop_reason", "history", "arch", "weights", "onnx"):
        assert key in out, key


# ---- run folders of another command, or of none -------------------------------------------------

def _cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _netadapt_folder(d: Path) -> Path:
    (d / "checkpoints").mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"iteration": 0, "phase": "adapt"}))
    (d / "config.json").write_text(json.dumps({"command": "netadapt", "target_ratio": 0.5}))
    (d / "invocation.json").write_text(json.dumps({"seed": "mobilenet_v3_small"}))
    (d / "checkpoints" / "iter_000.json").write_text("{}")
    return d


def _search_folder(d: Path) -> Path:
    (d / "tune").mkdir(parents=True)
    (d / "options.json").write_text(json.dumps({"command": "search", "target_ms": 1.0}))
    return d


SEARCH_RESUME = ("search", "--target-ms", "1", "--resume", "--name")
NETADAPT_RESUME = ("netadapt", "--device", TINY, "--resume", "--name")


@pytest.mark.parametrize("make,needles", [
    (lambda d: _netadapt_folder(d), ("is a NetAdapt run", "netadapt --resume --name x")),
    (lambda d: (d.mkdir(parents=True), (d / "notes.txt").write_text("hi")), ("not a search run folder",)),
    (lambda d: (_search_folder(d), (d / "options.json").write_text('{"command": "netadapt"}')),
     ("holds a netadapt run",)),
    (lambda d: (_search_folder(d), (d / "options.json").write_text("{half")), ("options.json is unreadable",)),
    (lambda d: (_search_folder(d), (d / "searcher.json").write_bytes(b"\x80\x04junk")), ("searcher.json", "unreadable")),
    (lambda d: (_search_folder(d), (d / "tune" / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(b"\x80")),
     ("older hwnas", "pickle")),
    (lambda d: (_search_folder(d), (d / "searcher.json").write_text('{"format": "hwnas-searcher/1"}')),
     ("older hwnas", "hwnas-searcher/1", "start a new run")),
])
def test_search_resume_refuses_what_is_not_a_search_run(capsys, make, needles):
    d = Path(os.environ["HWNAS_RESULTS"]) / "runs" / "x"
    make(d)
    before = _snapshot(d)
    _one_line(*_cli(capsys, *SEARCH_RESUME, "x"), *needles)
    assert _snapshot(d) == before  # nothing written, nothing removed


@pytest.mark.parametrize("make,needles", [
    (lambda d: _search_folder(d), ("is a search run", "search --resume --name x")),
    (lambda d: (_netadapt_folder(d), (d / "config.json").write_text('{"command": "search"}')),
     ("holds a search run",)),
    (lambda d: (_netadapt_folder(d), os.remove(d / "invocation.json")), ("has no invocation.json",)),
    (lambda d: (_netadapt_folder(d), (d / "config.json").write_text("[1, 2")), ("config.json is unreadable",)),
    (lambda d: (_netadapt_folder(d), os.remove(d / "checkpoints" / "iter_000.json")), ("no seed checkpoint",)),
    (lambda d: (d.mkdir(parents=True), (d / "notes.txt").write_text("hi")), ("no run to resume",)),
])
def test_netadapt_resume_refuses_what_is_not_a_netadapt_run(capsys, make, needles):
    d = Path(os.environ["HWNAS_RESULTS"]) / "netadapt" / "x"
    make(d)
    before = _snapshot(d)
    _one_line(*_cli(capsys, *NETADAPT_RESUME, "x"), *needles)
    assert _snapshot(d) == before


def test_a_bad_fault_spec_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "explode:2")
    _one_line(*_cli(capsys, "search", "--target-ms", "1", "--device", TINY, "--name", "f"), FAULT_ENV, "raise")
    assert not (Path(os.environ["HWNAS_RESULTS"]) / "runs" / "f").exists()


# ---- the searcher's checkpoint: JSON, exact, never unpickled ----------------------------------------

def _same(a, b, where: str = "state") -> None:
    """Exactly equal: tensors bit for bit with their dtype, numbers and containers by value and kind."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, where


def _strict_json(path: Path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _searcher(tmp_path, predictor, state_path=None, window: int = 4) -> ControllerSearcher:
    settings = TrialSettings(space="mnasnet", latency_resolution=32, target_ms=1.0)
    return ControllerSearcher(NetworkTask(settings, 10, 1, TINY, predictor), ControllerConfig(batch_size=2),
                              state_path=state_path, window=window)


def test_state_is_strict_json_and_round_trips_the_controller_exactly(tmp_path, tiny_predictor):
    own = tmp_path / "searcher.json"
    s = _searcher(tmp_path, tiny_predictor, own)
    for t in "abc":
        s.suggest(t)
    s.on_trial_complete("a", {"reward": 0.25, "status": "ok"})
    s.on_trial_complete("b", error=True)
    s.hear_all()
    assert s.controller.updates == 1
    s.controller.baseline = math.nan  # non-finite values stay strict JSON and come back as they were
    s._changed()
    doc = _strict_json(own)
    assert doc["format"] == "hwnas-searcher/3" and "predictor" not in own.read_text()
    s.save(str(tmp_path / "tune.json"))  # Tune's experiment checkpoints get no copy of it
    assert not (tmp_path / "tune.json").exists()
    t = _searcher(tmp_path, tiny_predictor, own)
    t.resume()
    _same(s.controller.state_dict(), t.controller.state_dict())
    assert t.live == s.live and t.records == s.records and t.suggested == s.suggested and t.replay == ["c"]
    s.controller.baseline = t.controller.baseline = 0.1
    assert t.suggest("x")["sample"] == s.suggested["c"]["sample"]  # c, handed out again first
    # Same state, same future: the next sample and the next update agree to the bit.
    assert s.suggest("d")["tokens"] == t.suggest("d")["tokens"]
    for x, c in ((s, "c"), (t, "x")):
        x.on_trial_complete(c, {"reward": 0.5})
        x.on_trial_complete("d", {"reward": 0.75})
        x.hear_all()
    _same(s.controller.state_dict(), t.controller.state_dict())
    assert s.controller.updates == 2 and s.controller.feedbacks == 4


def test_state_files_are_never_unpickled(tmp_path, tiny_predictor):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "searcher.json"
    evil.write_bytes(pickle.dumps(Payload()))
    from common.errors import UserError

    with pytest.raises(UserError, match="unreadable"):
        _searcher(tmp_path, tiny_predictor, evil).resume()
    assert not marker.exists()
    # A JSON tensor of a dtype outside the allowed list is refused too.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"__tensor__": "object", "shape": [1], "data": ""}))
    with pytest.raises(ValueError, match="not allowed"):
        jsonstate.read(bad)
    # The project's own code: no pickle but the CIFAR batches' restricted unpickler, torch.load weights-only,
    # and no Tune restore (which would unpickle Tune's tuner.pkl and experiment state).
    for path in [*ROOT.glob("*.py"), *ROOT.glob("*/*.py")]:
        if path.parts[-2] in ("tests", "results"):
            continue
        text = path.read_text()
        if path.relative_to(ROOT).as_posix() != "train/sources.py":
            assert not re.search(r"\bimport pickle\b|\bpickle\.load|cloudpickle", text), path
        assert not re.search(r"Tuner\.restore|restore_from_dir|get_pickled_error", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)


def test_a_kill_loses_no_reward_and_repeats_none(tmp_path, tiny_predictor):
    """What resume does with a state written just before a kill, step by step (the subprocess test cannot
    choose where its kill lands)."""
    own = tmp_path / "searcher.json"
    s = _searcher(tmp_path, tiny_predictor, own)
    cfg = {t: s.suggest(t) for t in "abcd"}
    s.on_trial_complete("a", {"reward": 0.5})    # heard
    s.on_trial_complete("c", {"reward": 0.125})  # finished, its reward waiting for b's (sample order); then SIGKILL

    t = _searcher(tmp_path, tiny_predictor, own)  # the resumed run's searcher
    t.resume()
    assert t.controller.feedbacks == 0 and t.replay == ["b", "d"] and [r["trial_id"] for r in t.records] == ["a", "c"]
    x, y = t.suggest("x"), t.suggest("y")  # the new sitting's first trials: b's and d's samples come back
    assert (x["sample"], x["tokens"]) == (cfg["b"]["sample"], cfg["b"]["tokens"])
    assert (y["sample"], y["tokens"]) == (cfg["d"]["sample"], cfg["d"]["tokens"])
    t.on_trial_complete("x", {"reward": 0.25})
    t.on_trial_complete("y", {"reward": 0.0625})
    t.hear_all()
    assert t.controller.feedbacks == 4 == len(t.records) and t.controller.pending == {}
    assert [h["mean_reward"] for h in t.controller.history] == [0.375, 0.09375]  # in sample order: (a, b), (c, d)
    assert [(r["trial_id"], r["sample"]) for r in t.records] == \
        [("a", cfg["a"]["sample"]), ("c", cfg["c"]["sample"]), ("x", cfg["b"]["sample"]), ("y", cfg["d"]["sample"])]
    assert read_state(own)["records"] == t.records  # and the run's searcher.json says so
    z = t.suggest("z")  # then fresh samples
    assert z["sample"] == cfg["d"]["sample"] + 1
