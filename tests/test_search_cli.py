"""``cli.py search`` refuses bad input with one line and exit code 2, before starting any work."""

from __future__ import annotations

import json

import pytest

import cli


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["search", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args,needle", [
    (["--target-ms", "0"], "target-ms"),
    (["--target-ms", "nan"], "target-ms"),
    (["--target-ms", "1e9"], "absurd"),
    (["--target-ms", "15", "--w", "0.3"], "<= 0"),
    (["--target-ms", "15", "--data", "/no/such/folder"], "/no/such/folder"),
    (["--target-ms", "15", "--device", "pixel-9", "--data-limit", "20"], "pixel-9"),
    (["--target-ms", "15", "--address", "127.0.0.1:1"], "--address"),
    (["--target-ms", "15", "--address", "nonsense"], "--address"),
    (["--target-ms", "15", "--resume", "--name", "nothing-here"], "--resume"),
    (["--target-ms", "15", "--name", "../escape"], "--name"),
    (["--target-ms", "15", "--dashboard-host", "my-laptop"], "--dashboard-host"),
    (["--target-ms", "15", "--dashboard-host", "0.0.0.0:8265"], "--dashboard-host"),
])
def test_bad_input_is_one_line_exit_2(capsys, args, needle):
    code, _, err = _cli(capsys, *args)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    from common.paths import results_dir

    runs = results_dir() / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no run folder: refused before any work


def test_help_lists_the_options(capsys):
    code, out, _ = _cli(capsys, "--help")
    assert code == 0
    for opt in ("--target-ms", "--trials", "--epochs", "--data", "--w", "--alpha", "--beta", "--seed",
                "--concurrency", "--device", "--address", "--resume", "--name", "--json", "--measure",
                "--dashboard-host"):
        assert opt in out
    # The help says that --dashboard-host does not apply to a cluster attached to with --address.
    assert "Does not apply with --address" in " ".join(out.split())
    from space.searchspace import SPACES

    assert all(name in out for name in SPACES), "--space's help names every search space"


def test_a_trial_trains_longer_by_default_on_data_other_than_the_digits(tmp_path):
    from search.commands import options_from_args
    from search.options import SearchOptions

    parser = cli.build_parser()

    def epochs(*args: str) -> float:
        return options_from_args(parser.parse_args(["search", "--target-ms", "15", *args]))[0].epochs

    assert epochs() == epochs("--data", "digits") == 2.0
    assert epochs("--data", "cifar10") == epochs("--data", str(tmp_path)) == 4.0
    assert epochs("--data", "cifar10", "--epochs", "1.5") == 1.5
    # The resolved length is what a run stores, so a resumed run keeps it whatever the default becomes.
    assert SearchOptions(data=str(tmp_path)).epochs == 4.0 and SearchOptions(data=None, epochs=3.0).epochs == 3.0


def test_dashboard_host_reaches_the_options_and_defaults_to_loopback():
    from search.commands import options_from_args

    parser = cli.build_parser()
    default, given = options_from_args(parser.parse_args(["search", "--target-ms", "15"]))
    assert default.dashboard_host == "127.0.0.1" and given == ("target_ms",)
    opened, given = options_from_args(parser.parse_args(["search", "--target-ms", "15", "--dashboard-host", "0.0.0.0"]))
    assert opened.dashboard_host == "0.0.0.0" and set(given) == {"target_ms", "dashboard_host"}
    opened.check()  # an IP address is accepted


def test_non_loopback_dashboard_host_warns_with_the_token_location(monkeypatch):
    from common.ray_cluster import dashboard_warning

    for host in ("127.0.0.1", "127.0.0.2", "::1"):
        assert dashboard_warning(host) is None
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        w = dashboard_warning(host)
        assert w and "\n" not in w and w.startswith(f"warning: --dashboard-host {host}:")
        assert "reachable from the network" in w and "token authentication stays on" in w
        assert "~/.ray/auth_token" in w
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/etc/ray/token")
    assert "/etc/ray/token" in dashboard_warning("0.0.0.0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert "OFF" in dashboard_warning("0.0.0.0")


def _stored_run(name: str = "x", **opts):
    import json
    import os
    from pathlib import Path

    d = Path(os.environ["HWNAS_RESULTS"]) / "runs" / name
    d.mkdir(parents=True)
    doc = {"command": "search", "target_ms": 15.0, "trials": 8, "epochs": 2.0, "seed": 0, "concurrency": 2,
           "batch_size": 32, "device": "local-cpu", **opts}
    (d / "options.json").write_text(json.dumps(doc))
    return d


@pytest.mark.parametrize("args,needles", [
    (["--epochs", "3"], ["--epochs 3 differs from this run's 2"]),
    (["--target-ms", "12"], ["--target-ms 12 differs from this run's 15"]),
    (["--seed", "1"], ["--seed 1 differs from this run's 0"]),
    (["--batch-size", "64"], ["--batch-size 64 differs from this run's 32"]),
    (["--data", "cifar10"], ["--data cifar10 differs from this run's (not set)"]),
    (["--controller", "reinforce"], ["--controller reinforce differs"]),
    (["--trials", "4"], ["--trials 4 differs from this run's 8", "only a larger --trials"]),
])
def test_resume_refuses_an_option_that_differs_from_the_runs_own(capsys, args, needles):
    d = _stored_run()
    before = (d / "options.json").read_bytes()
    code, _, err = _cli(capsys, "--resume", "--name", "x", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --resume: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert (d / "options.json").read_bytes() == before and sorted(p.name for p in d.iterdir()) == ["options.json"]


def test_resume_takes_a_larger_budget_and_how_this_sitting_runs():
    from search.options import SearchOptions
    from search.rundir import restore_options

    d = _stored_run(time_budget_s=60.0, address=None)
    same = restore_options(SearchOptions(resume=True, name="x", target_ms=15.0, epochs=2.0), d,
                           given=("target_ms", "epochs"))
    assert (same.trials, same.epochs, same.target_ms, same.time_budget_s) == (8, 2.0, 15.0, None)
    more = restore_options(SearchOptions(resume=True, name="x", trials=20, time_budget_s=600.0,
                                         dashboard_host="0.0.0.0"), d, given=("trials", "time_budget_s", "dashboard_host"))
    assert (more.trials, more.time_budget_s, more.dashboard_host, more.batch_size) == (20, 600.0, "0.0.0.0", 32)
    assert more.resume and more.name == "x"


def test_mlflow_without_mlflow_is_one_line(capsys):
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here: --mlflow is taken")
    code, _, err = _cli(capsys, "--target-ms", "15", "--mlflow", "sqlite:///mlflow.db")
    assert code == 2 and "pip install mlflow" in err and len(err.strip().splitlines()) == 1


def test_a_best_network_far_under_the_target_gets_a_note_on_spending_the_budget(tmp_path):
    from search.commands import unused_budget_note

    run = tmp_path / "run"
    run.mkdir()
    (run / "options.json").write_text(json.dumps({"target_ms": 10.0, "alpha": None}))
    note = unused_budget_note({"latency_ms": 6.0}, str(run))
    assert "60% of the 10 ms target" in note and "--alpha 0 --beta -1" in note
    assert unused_budget_note({"latency_ms": 8.5}, str(run)) is None  # within 80% of the target
    assert unused_budget_note(None, str(run)) is None
    assert unused_budget_note({"latency_ms": 6.0}, str(tmp_path / "missing")) is None


def test_under_the_hard_constraint_the_note_says_what_the_search_found_near_the_target(tmp_path):
    from search.commands import unused_budget_note

    run = tmp_path / "run"
    run.mkdir()
    (run / "options.json").write_text(json.dumps({"target_ms": 10.0, "alpha": 0}))
    best = {"latency_ms": 6.0, "accuracy": 0.49}
    assert unused_budget_note(best, str(run)) is None  # no trials.csv yet: nothing to say
    header = "trial,status,accuracy,latency_ms\n"
    # 7.9 ms lies under 80% of the target, 10.5 ms over it, and a failed trial has no accuracy
    (run / "trials.csv").write_text(header + "0,ok,0.49,6.0\n1,stopped,0.41,7.9\n2,ok,0.47,10.5\n3,error,,9.0\n")
    note = unused_budget_note(best, str(run))
    assert "60% of the 10 ms target under the hard constraint" in note and "sampled no network" in note
    (run / "trials.csv").write_text(header + "0,ok,0.49,6.0\n1,stopped,0.35,8.0\n2,ok,0.45,9.9\n")
    note = unused_budget_note(best, str(run))
    assert "the 2 sampled networks" in note and "at most 0.450" in note and "against its 0.490" in note
    assert "did not pay for their time" in note
    (run / "trials.csv").write_text(header + "0,ok,0.49,6.0\n1,stopped,0.52,9.0\n2,ok,0.40,8.5\n")
    note = unused_budget_note(best, str(run))
    assert "at most 0.520" in note and "the highest at a rung where ASHA stopped it" in note
    assert "did not pay" not in note
    (run / "trials.csv").write_text(header + "0,ok,0.49,6.0\n1,ok,0.45,9.9\n")  # one network: said in the singular
    note = unused_budget_note(best, str(run))
    assert "the one sampled network between 80% of the target and the target reached 0.450 proxy" in note
    assert "the larger network did not pay for its time" in note
    assert unused_budget_note({"latency_ms": 8.5, "accuracy": 0.49}, str(run)) is None  # within 80% of the target
