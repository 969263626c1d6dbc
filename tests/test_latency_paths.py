"""bench/latency_paths.py: the offsets between the ways a network is timed, and its refusals."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from .bench_scripts import bench_module
from .cli_helpers import ROOT


@pytest.fixture(scope="module")
def paths():
    return bench_module("latency_paths")


def _frame() -> pd.DataFrame:
    rows = []
    for r, drift in enumerate((1.0, 1.1)):  # the second round runs 10% slower on every path alike
        for net, base in enumerate((2.0, 4.0, 8.0)):
            rows.append({"round": r, "path": "build", "network": net, "family": "f", "latency_ms": base * drift,
                         "probe_ms": None})
            # The probe slowed by the same drift: over it, the suite's figures do not move between rounds.
            rows.append({"round": r, "path": "suite", "network": net, "family": "f",
                         "latency_ms": base * drift * (1.03 if net < 2 else 0.99), "probe_ms": 0.4 * drift})
    return pd.DataFrame(rows)


def test_report_divides_by_the_build_path_within_each_round(paths):
    rep = paths.report(_frame())
    assert rep.loc["build", "median_ratio"] == pytest.approx(1.0)
    # Drift between rounds cancels: each round's figures are compared with the same round's.
    assert rep.loc["suite", "median_ratio"] == pytest.approx(1.03)
    assert rep.loc["suite", "pairs"] == 6
    assert rep.loc["suite", "p10"] == pytest.approx(0.99)


def test_round_to_round_spread_shows_the_drift_and_what_the_probe_cancels(paths):
    spread = paths.round_to_round(_frame())["round_spread"]
    assert spread["build"] == pytest.approx(0.1)
    assert spread["suite"] == pytest.approx(0.1)
    over_probe = paths.round_to_round(_frame())["round_spread_over_probe"]
    assert over_probe["suite"] == pytest.approx(0.0) and pd.isna(over_probe["build"])


def test_refuses_paths_without_the_build_baseline(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "latency_paths.py"), "--paths", "suite,measure",
                          "--records", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "must include build" in out.stderr and "Traceback" not in out.stderr


def test_refuses_to_resume_records_of_other_networks(paths, tmp_path, monkeypatch, capsys):
    import json

    from latency import probe

    monkeypatch.setenv("HWNAS_RESULTS", str(tmp_path / "results"))
    probe.record(0.4, 1, "cpu", "cpu")  # a reference, so that the script gets as far as its records
    records = tmp_path / "records"
    records.mkdir()
    (records / "settings.json").write_text(json.dumps({"n": 1, "units": 2, "rounds": 2, "seed": 5,
                                                       "paths": ["build", "suite"]}))
    pd.DataFrame([{"round": 0, "path": "build", "family": "mnasnet", "network": 0, "name": "not-this-one",
                   "latency_ms": 1.0}]).to_csv(records / "paths.csv", index=False)
    assert paths.main(["--records", str(records), "--n", "3"]) == 2
    err = capsys.readouterr().err
    assert "settings.json applies, not the n given" in err
    assert "holds other networks" in err and err.strip().count("\n") == 1
