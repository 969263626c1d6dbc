"""bench/latency.py's analysis of a suite's records (the figures split by the machine's repeatability) and
bench/latency_repeat.py's report and its records folder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pandas as pd
import pytest

from .cli_helpers import ROOT


@pytest.fixture(scope="module")
def bench():
    # Registered under another name: ``latency`` is the package's.
    spec = importlib.util.spec_from_file_location("bench_latency", ROOT / "bench" / "latency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _suite() -> pd.DataFrame:
    rows = [  # family, measured, predicted, session spread
        ("a", 1.00, 1.02, 0.01), ("a", 2.00, 2.30, 0.02), ("a", 1.00, 1.04, 0.30), ("a", 4.00, 3.00, 0.50),
        ("b", 1.00, 0.97, 0.05),
    ]
    return pd.DataFrame(rows, columns=["family", "measured_ms", "predicted_ms", "session_spread"])


def test_figures_split_by_whether_the_sessions_agreed(bench):
    rep = bench.by_repeatability(_suite())
    a = rep["a"]
    assert a["all"]["n"] == 4 and a["repeatable"]["n"] == 2 and a["not_repeatable"]["n"] == 2
    assert a["all"]["within_10pct"] == pytest.approx(0.5)  # +2%, +4% in; +15%, -25% out
    assert a["repeatable"]["within_5pct"] == pytest.approx(0.5) and a["repeatable"]["within_10pct"] == pytest.approx(0.5)
    assert a["repeatable"]["median_error"] == pytest.approx((0.02 + 0.15) / 2)
    assert a["not_repeatable"]["mape"] == pytest.approx(100 * (0.04 + 0.25) / 2)
    assert rep["b"]["not_repeatable"] == {"n": 0}
    assert rep["b"]["repeatable"]["median_error"] == pytest.approx(-0.03)


def test_analyse_prints_an_earlier_runs_split_and_refuses_a_folder_without_records(tmp_path):
    _suite().to_csv(tmp_path / "suite.csv", index=False)
    ok = subprocess.run([sys.executable, "bench/latency.py", "--analyse", str(tmp_path)], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "| a | all | 4 | 0.50 | 0.50 | 11.5 | +3.0% |" in ok.stdout
    bad = subprocess.run([sys.executable, "bench/latency.py", "--analyse", str(tmp_path / "nothing")], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no suite.csv" in bad.stderr


def test_repeat_refuses_to_mix_measure_settings_in_one_records_folder(tmp_path):
    row = {"method": "cli", "ms": {"mobilenet_v1": 8.0}, "cli_args": [], "start": "", "seconds": 1.0,
           "loadavg_1m": [0.5, 0.5]}
    (tmp_path / "processes.jsonl").write_text(json.dumps(row) + "\n")
    bad = subprocess.run([sys.executable, "bench/latency_repeat.py", "--methods", "cli", "--min-fast", "8",
                          "--records", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--min-fast" in bad.stderr, bad.stderr


def test_repeat_report_shares_off_the_median():
    spec = importlib.util.spec_from_file_location("bench_latency_repeat", ROOT / "bench" / "latency_repeat.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [{"method": "cli", "ms": {"a": a, "b": 2.0}, "loadavg_1m": [0.1, 0.2]} for a in (1.0, 1.0, 1.0, 1.05, 1.2)]
    r = mod.report(rows)["cli"]
    assert r["processes"] == 5 and r["models"] == 2
    assert r["share_off_3pct"] == pytest.approx(2 / 10) and r["share_off_10pct"] == pytest.approx(1 / 10)
    assert r["max_off"] == pytest.approx(0.2) and r["per_network"]["a"]["median_ms"] == pytest.approx(1.0)


@pytest.mark.parametrize("args, needle", [(["--families", "mnasnet,resnets"], "'resnets'"),
                                          (["--suite-fast-within", "0"], "--suite-fast-within"),
                                          (["--analyse", "x", "--families", "mnasnet"], "apply to a new run")])
def test_the_benchmark_refuses_a_bad_family_or_gate_before_building_anything(tmp_path, args, needle):
    bad = subprocess.run([sys.executable, "bench/latency.py", *args, "--results", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and needle in bad.stderr, bad.stderr
    assert list(tmp_path.iterdir()) == []  # nothing built or written
