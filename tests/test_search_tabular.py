"""The tabular benchmark of search strategies: its table space, its report, and bad tables refused in one line."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from common.errors import UserError
from search.reward import Reward
from search.tabular import TableSpace, TableTask, load_table

from .bench_scripts import bench_module
from .cli_helpers import ROOT


def _bench():
    return bench_module("search_tabular")


def write_table(path, n=(3, 4, 3), drop=()):
    """A table over ``n`` choices per decision: accuracy grows with the tokens' sum, latency with token 0."""
    lines = ["arch,tokens,acc,lat_ms"]
    for i, t in enumerate(itertools.product(*[range(k) for k in n])):
        if i in drop:
            continue
        acc = 50 + 5 * sum(t) + (i * 7919 % 13) / 13
        lines.append(f"a{i},{' '.join(map(str, t))},{acc:.3f},{1.0 + t[0] + 0.1 * t[-1]:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_table_space_offers_the_decisions_interface(tmp_path):
    table = load_table(write_table(tmp_path / "t.csv", drop=(5,)), "acc", "lat_ms")
    space = TableSpace(table)
    assert [d.n for d in space.decisions] == [3, 4, 3] and space.size == 36 and len(table.tokens) == 35
    assert table.accuracy.max() <= 1  # percent read as a fraction
    rng = np.random.default_rng(0)
    for _ in range(20):
        tokens = space.sample(rng)
        assert space.canonical(tokens) == tokens  # every row is its own network
    with pytest.raises(UserError):
        space.canonical([0, 4, 0])
    task = TableTask(table, Reward(2.0))
    missing = list(itertools.product(range(3), range(4), range(3)))[5]
    res = task.result(list(missing))  # no row: a network that failed
    assert res["status"] == "error" and res["reward"] == 0.0 and math.isnan(res["accuracy"])
    row = task.result([2, 3, 2])
    assert row["status"] == "ok" and row["reward"] == pytest.approx(Reward(2.0)(row["accuracy"], 3.2))


def test_benchmark_reports_every_strategy_with_distinct_networks(tmp_path):
    table = write_table(tmp_path / "t.csv")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "search_tabular.py"), "--table", str(table),
                           "--acc-column", "acc", "--latency-column", "lat_ms", "--target-ms", "2", "--trials", "5,20",
                           "--seeds", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    rewards = TableTask(load_table(table, "acc", "lat_ms"), Reward(2.0)).rewards
    assert out["optimum"] == pytest.approx(rewards.max(), abs=1e-4)
    assert out["top1_threshold"] == pytest.approx(rewards.max(), abs=1e-4)  # 36 rows: the best one
    assert set(out["strategies"]) == {"controller", "evolution", "random", "tpe"}
    for name, r in out["strategies"].items():
        assert set(r["best"]) == {"5", "20"} and r["best"]["5"] <= r["best"]["20"] <= out["optimum"] + 1e-9
        assert 0 <= r["top1"]["20"] <= 1
        if name != "tpe":  # the project's searchers never train a network twice
            assert r["distinct"] == {"5": 5, "20": 20}
        else:
            assert r["distinct"]["20"] <= 20


@pytest.mark.parametrize("content,args,needles", [
    ("arch,acc,lat_ms\na,50,1\n", [], ["no 'tokens' column"]),
    ("tokens,lat_ms\n0 1,1\n", [], ["no accuracy column 'acc'", "tokens, lat_ms"]),
    ("tokens,acc\n0 1,50\n", [], ["no latency column 'lat_ms'"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n0 1 2,60,1\n", [], ["line 3 has 3 tokens", "line 2 has 2"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n1 1,60,0\n", [], ["0 ms on line 3", "must be > 0"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n1 1,60,-2.5\n", [], ["-2.5 ms on line 3"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n1 1,fast,2\n", [], ["'fast' on line 3"]),
    ("tokens,acc,lat_ms\n0 x,50,1\n", [], ["not integers"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n0 1,60,2\n", [], ["lines 2 and 3 have the same tokens"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n", ["--strategies", "controller,sgd"], ["unknown strategy 'sgd'"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n", ["--target-ms", "0"], ["target"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n", ["--trials", "10,x"], ["--trials"]),
    ("tokens,acc,lat_ms\n0 1,50,1\n", ["--option", "controller.nope=1"], ["no setting 'nope'"]),
    (None, [], ["no such file"]),
])
def test_bad_tables_and_options_are_one_line_exit_2(tmp_path, capsys, content, args, needles):
    path = tmp_path / "t.csv"
    if content is not None:
        path.write_text(content)
    code = _bench().main(["--table", str(path), "--acc-column", "acc", "--latency-column", "lat_ms", *args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
