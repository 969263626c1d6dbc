"""bench/end_to_end_proxy.py: the end-to-end run's final networks trained as the search trained its trials."""

from __future__ import annotations

import json

import pytest

from .bench_scripts import bench_module
from .test_end_to_end_bench import final_stage_inputs, write


@pytest.fixture(scope="module")
def e2e():
    return bench_module("end_to_end")


@pytest.fixture(scope="module")
def proxy(e2e):
    return bench_module("end_to_end_proxy")


def search_options(rec):
    doc = {"epochs": 0.5, "batch_size": 8, "lr": 3e-3, "data_limit": 40, "eval_limit": 10, "split_seed": 0,
           "augment": False}
    write(rec / "state" / "runs" / "e2e-controller" / "options.json", doc)


def test_trains_every_final_network_once_and_reports_against_the_final_accuracy(e2e, proxy, tmp_path):
    data, rec = final_stage_inputs(e2e, tmp_path)
    search_options(rec)
    names = list(e2e.final_networks(rec))
    assert proxy.main(["train", "--records", str(rec), "--seeds", "1", "--data", str(data), "--shard", "1/2"]) == 0
    assert proxy.main(["train", "--records", str(rec), "--seeds", "1", "--data", str(data), "--shard", "0/2"]) == 0
    folder = rec / "proxy_check" / "search"
    done = sorted(p.name for p in folder.glob("*.json"))
    assert done == sorted(f"{n}_s0.json" for n in names)
    doc = json.loads((folder / f"{names[0]}_s0.json").read_text())
    assert doc["train_images"] == 40 and doc["epochs"] == 0.5 and doc["batch_size"] == 8 and doc["eval_images"] == 10
    assert doc["data"]["train"] <= 40 and doc["data"]["val"] == 10 and 0.0 <= doc["val_accuracy"] <= 1.0
    assert doc["steps"] == -(-doc["data"]["train"] // 8) // 2  # half an epoch at batch 8
    first = {p: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    assert proxy.main(["train", "--records", str(rec), "--seeds", "1", "--data", str(data)]) == 0
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.json")} == first  # every unit on record: none again

    # the report pairs each network's proxy accuracy with its final one and ranks them
    for i, n in enumerate(names):
        write(rec / "final" / f"{n}_s0.json", {"result": {"accuracy": 0.5 + 0.01 * i}, "seconds": 1.0})
        write(folder / f"{n}_s0.json", {**doc, "network": n, "val_accuracy": 0.3 + 0.01 * i})
    write(folder / f"{names[0]}_s1.json", {**doc, "network": names[0], "val_accuracy": 0.30})
    k = proxy.report(rec)["kinds"]["search"]
    assert k["spearman"] == pytest.approx(1.0)
    assert k["final_order"] == k["proxy_order"] == names[::-1]
    low = next(r for r in k["rows"] if r["network"] == names[0])
    assert low["seeds"] == 2 and low["proxy"] == pytest.approx(0.30) and low["final"] == pytest.approx(0.5)
    write(folder / f"{names[0]}_s0.json", {**doc, "network": names[0], "val_accuracy": 0.9})  # now ranked first
    assert proxy.report(rec)["kinds"]["search"]["spearman"] < 1.0
    text = proxy.markdown(proxy.report(rec))
    assert text.count("\n| ") == 1 + 8 and f"| {names[1]} | 31.00 | 1 | 51.00 |" in text and "| 60.00 ± 42.43 | 2 | 50.00 |" in text


def test_bad_input_is_refused_in_one_line(e2e, proxy, tmp_path, capsys):
    data, rec = final_stage_inputs(e2e, tmp_path)
    assert proxy.main(["train", "--records", str(rec), "--data", str(data)]) == 2  # no search options on record
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "options.json not found" in err
    search_options(rec)
    assert proxy.main(["train", "--records", str(rec), "--data", str(data), "--seeds", "0"]) == 2
    assert "--seeds 0" in capsys.readouterr().err
    assert proxy.main(["train", "--records", str(rec), "--data", str(data), "--shard", "2/2"]) == 2
    assert not (rec / "proxy_check").exists()  # nothing written on refused input
    assert proxy.report(tmp_path / "empty") == {"kinds": {}}
