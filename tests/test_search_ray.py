"""The search on a real local Ray: trials run, results are written, the dashboard (with Ray's token)
shows the run's trials, a failed trial gives reward 0, and --resume neither loses nor repeats trials."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from common.paths import results_dir  # noqa: E402
from common.ray_cluster import dashboard_headers, init_ray  # noqa: E402
from search.options import SearchOptions  # noqa: E402
from search.run import run_search  # noqa: E402
from space.archspec import ArchSpec  # noqa: E402


@pytest.fixture(scope="module")
def dashboard():
    # The search's default --dashboard-host, bound for real: the URL below must be on loopback.
    url = init_ray(None, dashboard_host=SearchOptions().dashboard_host)
    yield url
    ray.shutdown()


def _opts(**kw) -> SearchOptions:
    # Tiny: 64 digits images (one step per epoch), latency at 32 px from the tiny predictor.
    base = dict(target_ms=1.0, trials=3, epochs=1.0, concurrency=2, device="tiny-cpu", latency_resolution=32,
                data="digits", data_limit=64, eval_limit=40, batch_size=64, name="t", progress=False)
    return SearchOptions(**{**base, **kw})


def _get(url: str, headers: dict) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


@pytest.fixture(scope="module")
def first_run(dashboard, tiny_predictor, tmp_path_factory):
    """One search of 3 trials, watched on the dashboard while it ran: what the two tests below read. Its own
    results folder, since a module's fixture outlives each test's."""
    headers = dashboard_headers()
    seen: set[str] = set()
    actor_ids: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            status, body = _get(f"{dashboard}/api/v0/actors?limit=1000&detail=true", headers)
            if status == 200:
                for a in json.loads(body)["data"]["result"]["result"]:
                    name = a.get("repr_name") or ""
                    if name.startswith("hwnas-trial-"):
                        seen.add(name.removeprefix("hwnas-trial-"))
                        actor_ids.add(a["actor_id"])
            time.sleep(0.5)

    results = tmp_path_factory.mktemp("first_run") / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HWNAS_RESULTS", str(results))
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            summary = run_search(_opts(), predictor=tiny_predictor)
        finally:
            done.set()
            t.join(timeout=15)
    df = pd.read_csv(results / "runs" / "t" / "trials.csv")
    return {"results": results, "summary": summary, "df": df, "seen": seen, "actor_ids": actor_ids,
            "dashboard": dashboard, "headers": headers}


def test_search_runs_and_dashboard_shows_its_trials(dashboard, first_run, tiny_predictor, monkeypatch):
    assert dashboard and dashboard.startswith("http://127.0.0.1:")
    headers = first_run["headers"]
    assert "authorization" in {k.lower() for k in headers}, "Ray's token authentication should be on"
    assert _get(f"{dashboard}/api/v0/actors", {})[0] in (401, 403)  # no token: refused
    monkeypatch.setenv("HWNAS_RESULTS", str(first_run["results"]))
    summary, seen = first_run["summary"], first_run["seen"]

    run, df = results_dir() / "runs" / "t", first_run["df"]
    assert len(df) == summary.trials == 3 and set(df["status"]) == {"ok"}
    assert summary.dashboard_url == dashboard
    assert df["node"].nunique() == 1 and df["node"].iloc[0] == ray.get_runtime_context().get_node_id()
    assert seen and seen <= set(df["trial_id"]), (seen, list(df["trial_id"]))
    assert df["accuracy"].between(0, 1).all() and (df["latency_ms"] > 0).all()
    row = df.iloc[0]
    spec = ArchSpec.from_json(row["arch"])
    assert spec.resolution == 32 and spec.num_classes == 10
    assert row["latency_ms"] == pytest.approx(tiny_predictor.predict(spec))
    assert row["reward"] == pytest.approx(row["accuracy"] * (row["latency_ms"] / 1.0) ** -0.15)
    for f in ("pareto.csv", "reward.png", "pareto.png", "seed.json", "seed.pt", "summary.json"):
        assert (run / f).stat().st_size > 0, f
    # The best network and its weights are where NetAdapt looks, and the weights fit the spec.
    import torch

    from space.builder import build_model

    seed = ArchSpec.load(results_dir() / "seed.json")
    assert summary.best["reward"] == pytest.approx(df["reward"].max())
    build_model(seed).load_state_dict(torch.load(results_dir() / "seed.pt", weights_only=True))
    pareto = pd.read_csv(run / "pareto.csv")
    assert pareto["latency_ms"].is_monotonic_increasing and pareto["accuracy"].is_monotonic_increasing
    # What was trained: the proxy network at the data's 8 px; the best and the Pareto networks scored once on
    # the test split, the others not.
    assert set(df["train_resolution"]) == {8} and set(df["final_map"]) == {2} and set(df["epochs"]) == {1.0}
    ids = df["trial_id"].astype(str)  # an all-digit trial id reads back as a number
    scored = set(pareto["trial_id"].astype(str)) | {summary.best["trial_id"]}
    assert df[ids.isin(scored)]["test_accuracy"].between(0, 1).all() and ids.isin(scored).sum() == len(scored)
    assert df[~ids.isin(scored)]["test_accuracy"].isna().all()
    assert pareto["test_accuracy"].between(0, 1).all() and 0 <= summary.best["test_accuracy"] <= 1
    assert (df["learned_reward"] == df["reward"]).all()  # no early stopping: the strategy learned the rewards

    # --resume of a finished run repeats nothing and keeps every trial.
    again = run_search(SearchOptions(target_ms=1.0, resume=True, name="t", progress=False), predictor=tiny_predictor)
    df2 = pd.read_csv(run / "trials.csv")
    assert again.trials == 3 and sorted(df2["trial_id"]) == sorted(df["trial_id"])


def test_asha_stops_poor_trials_and_the_strategy_hears_each_once(dashboard, tiny_predictor):
    # One trial at a time, so that ASHA's decisions are reproducible; 4 steps an epoch, rungs at 0.5 and 1.
    summary = run_search(_opts(name="asha", trials=6, concurrency=1, epochs=2.0, batch_size=16, scheduler="asha",
                               grace_epochs=0.5, reduction_factor=2.0), predictor=tiny_predictor)
    run = results_dir() / "runs" / "asha"
    df = pd.read_csv(run / "trials.csv")
    assert len(df) == summary.trials == 6 and set(df["status"]) <= {"ok", "stopped"}
    stopped, full = df[df["status"] == "stopped"], df[df["status"] == "ok"]
    assert len(stopped) == summary.stopped >= 1 and len(full) == summary.completed >= 1
    assert set(stopped["epochs"]) <= {0.5, 1.0} and set(full["epochs"]) == {2.0}
    assert (full["learned_reward"] == full["reward"]).all() and stopped["weights"].isna().all()
    assert summary.best["trial_id"] in set(full["trial_id"].astype(str))
    doc = json.loads((run / "summary.json").read_text())
    assert doc["searcher"]["feedbacks"] == 6 and doc["epochs_if_all_full"] == 12.0
    assert doc["epochs_trained"] == pytest.approx(df["epochs"].sum()) and doc["epochs_trained"] < 12.0
    # A stopped trial taught the strategy its reward projected with a finished trial's gain, when one had the rung:
    # the latency term unchanged, so the learned reward is the reward at the stop scaled by the accuracies.
    fed = json.loads((run / "stopping.json").read_text())["fed"]
    assert set(fed) == set(df["trial_id"].astype(str))
    for row in df.itertuples():
        f = fed[str(row.trial_id)]
        assert f["learned_reward"] == pytest.approx(row.learned_reward)
        if row.status == "ok":
            assert f["estimated_accuracy"] is None and not f["corrected"] and f["learned_reward"] == pytest.approx(row.reward)
        else:
            est = f["estimated_accuracy"]
            assert est is not None and (f["corrected"] or est == pytest.approx(row.accuracy))
            assert f["learned_reward"] == pytest.approx(row.reward * est / row.accuracy)


def test_each_trial_result_is_in_its_actor_log_on_the_dashboard(first_run):
    """Actors -> an hwnas-trial actor -> its log: the line each trial prints (of the module's first run)."""
    r = first_run
    logs, answers = "", []
    for _ in range(20):  # the log agent may need a moment after the actor ends
        answers = [_get(f"{r['dashboard']}/api/v0/logs/file?actor_id={a}&suffix=out", r["headers"])
                   for a in r["actor_ids"]]
        logs = "".join(body for _, body in answers)
        if "status ok" in logs:
            break
        time.sleep(0.5)
    if all(code == 500 for code, _ in answers) and not logs:
        # Ray's dashboard agent listens on a fixed port (52365); with another Ray already running on this
        # machine, this Ray's agent cannot bind it and the dashboard has no logs to show.
        pytest.skip("this Ray's dashboard agent is not serving logs (its port is taken by another Ray here)")
    shown = re.findall(r"hwnas-trial-(\w+) sample (\d+): status ok, accuracy (\d\.\d{3})", logs)
    assert shown, logs[-2000:]
    by_id = r["df"].set_index("trial_id")
    for trial_id, sample, acc in shown:
        assert int(sample) == by_id.loc[trial_id, "trial"] and float(acc) == round(by_id.loc[trial_id, "accuracy"], 3)


def test_failed_trials_are_recorded_and_search_goes_on(dashboard, tiny_predictor):
    # A learning rate this large makes the loss non-finite: every trial "diverges" and scores 0.
    summary = run_search(_opts(name="bad", trials=2, epochs=4.0, lr=1e30), predictor=tiny_predictor)
    df = pd.read_csv(results_dir() / "runs" / "bad" / "trials.csv")
    assert len(df) == 2 and summary.completed == 0
    assert set(df["status"]) == {"diverged"} and (df["reward"] == 0).all()


def test_the_same_seed_gives_the_same_architectures_and_accuracies(dashboard, tiny_predictor):
    # Two trials at a time on two reused actors: which trial ends first, and which actor trains which
    # network after which, differ between the runs; what they find must not.
    runs = []
    for name in ("same-1", "same-2"):
        run_search(_opts(name=name, trials=6, seed=3, batch_size=16), predictor=tiny_predictor)
        runs.append(pd.read_csv(results_dir() / "runs" / name / "trials.csv"))
    one, two = runs
    assert set(one["status"]) == {"ok"} and len(one) == 6
    assert list(one["tokens"]) == list(two["tokens"])
    assert list(one["accuracy"]) == list(two["accuracy"])  # exactly, not only to the printed precision
    assert list(one["reward"]) == list(two["reward"])
    assert one["tokens"].nunique() > 1 and one["accuracy"].nunique() > 1  # not trivially equal


def test_interrupted_search_resumes_without_losing_or_repeating(dashboard, tiny_predictor):
    import os
    import signal

    from search.searcher import read_state

    from .test_faults import finished_and_handed_out

    run = results_dir() / "runs" / "stop"
    stopped = threading.Event()

    def interrupt_after_first_result():
        deadline = time.time() + 240
        while time.time() < deadline and not stopped.is_set():
            if finished_and_handed_out(run):
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl+C does: the sitting stops cleanly
                stopped.set()
                return
            time.sleep(0.2)

    t = threading.Thread(target=interrupt_after_first_result, daemon=True)
    t.start()
    # Reused actors make tiny trials quick: enough of them that the stop lands mid-run.
    first = run_search(_opts(name="stop", trials=8, concurrency=1, epochs=3.0), predictor=tiny_predictor)
    t.join(timeout=5)
    assert stopped.is_set() and 1 <= first.completed < 8 and first.status == "interrupted"
    assert first.interrupted >= 1 and first.resume_command == "python cli.py search --resume --name stop"
    assert not (results_dir() / "seed.json").exists() and (run / "seed.json").exists()  # the run's own seed only
    done_before = pd.read_csv(run / "trials.csv")
    done_before = done_before[done_before["status"] == "ok"]

    again = run_search(SearchOptions(target_ms=1.0, resume=True, name="stop", progress=False),
                       predictor=tiny_predictor)
    df = pd.read_csv(run / "trials.csv")
    assert again.trials == 8 and again.completed == 8 and df["trial_id"].is_unique and again.status == "finished"
    assert (results_dir() / "seed.json").exists()  # the budget is done: the seed goes where NetAdapt looks
    kept = df.set_index("trial_id").loc[done_before["trial_id"]]
    assert list(kept["accuracy"]) == list(done_before["accuracy"])  # finished trials were not re-run
    # The controller heard each trial exactly once.
    records = read_state(run / "searcher.json")["records"]
    assert sorted(r["trial_id"] for r in records) == sorted(df["trial_id"])
