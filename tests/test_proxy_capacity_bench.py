"""bench/proxy_capacity.py: proxies against the final recipe, on wide-space networks of one latency."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from .bench_scripts import bench_module
from .test_end_to_end_bench import final_stage_inputs, write


@pytest.fixture(scope="module")
def e2e():
    return bench_module("end_to_end")


@pytest.fixture(scope="module")
def pc():
    return bench_module("proxy_capacity")


def macs_ms(specs):
    """A latency model by MACs (1 ms per 20M), standing in for a table in these tests."""
    from space.cost import cost

    return np.array([cost(s).macs / 20e6 for s in specs])


def test_select_keeps_the_first_draws_within_the_band_of_the_target(e2e, pc):
    from space.searchspace import get_space

    calls = []

    def measure(specs):
        calls.append(len(specs))
        return macs_ms(specs)

    doc = pc.select(measure, n=5, band=(0.9, 1.1), batch=4)
    target = float(macs_ms([e2e.reference_net(*e2e.TARGET_REFERENCE)])[0])
    assert doc["target_ms_median"] == pytest.approx(target) and len(doc["networks"]) == 5
    assert all(c <= 5 for c in calls) and doc["timed"] == sum(calls) - len(calls)  # the target first in every call
    sp = get_space(pc.SPACE)
    draws = [n["draw"] for n in doc["networks"]]
    assert draws == sorted(draws) and doc["draws"] == draws[-1] + 1
    for n in doc["networks"]:
        tokens = [int(t) for t in n["tokens"].split("-")]
        assert tokens == sp.sample(pc.NETWORK_SEED + n["draw"])
        ms = float(macs_ms([sp.decode(tokens, resolution=32, num_classes=10, in_channels=3)])[0])
        assert 0.9 <= ms / target <= 1.1 and n["ratio"] == pytest.approx(ms / target, abs=1e-4)
        assert n["target_ms"] == pytest.approx(target, abs=1e-4)
    # every draw skipped before the last lies outside the band
    skipped = sorted(set(range(doc["draws"])) - set(draws))
    ratios = macs_ms([sp.decode(sp.sample(pc.NETWORK_SEED + j), resolution=32, num_classes=10, in_channels=3)
                      for j in skipped]) / target
    assert ((ratios < 0.9) | (ratios > 1.1)).all()
    assert pc.select(macs_ms, n=5, band=(0.9, 1.1), batch=4) == doc  # the same networks every time
    with pytest.raises(ValueError, match="only 0 of 10 draws"):
        pc.select(macs_ms, n=1, band=(50.0, 60.0), max_draws=10)


def test_truth_is_the_final_recipe_on_validation_images(pc, e2e):
    kind = pc.kind_named(pc.TRUTH)
    final = e2e.final_recipe(e2e.Settings(final_images=20000, final_epochs=15.0))
    r = kind.recipe
    assert (r.epochs, r.train_images, r.batch_size, r.lr, r.weight_decay, r.augment, r.label_smoothing) == \
           (final.epochs, final.train_images, final.batch_size, final.lr, final.weight_decay, final.augment,
            final.label_smoothing)
    assert r.eval_split == "val" and r.eval_images == 2000  # no test image is read
    assert pc.kind_named("cifar10-e4-n20000").recipe.train_images == 20000
    assert set(pc.PROXIES) <= {pc.kind_named(k).name for k in pc.PROXIES}


def test_every_kind_scores_the_same_validation_images_and_the_proxy_trains_on_a_prefix(pc, e2e, tmp_path):
    import torch

    from train.recipes import load_recipe_data

    data, _ = final_stage_inputs(e2e, tmp_path)
    truth = load_recipe_data(str(data), pc.kind_named(pc.TRUTH).recipe.with_changes(train_images=60), seed=0)
    proxy = load_recipe_data(str(data), pc.kind_named("cifar10-e4").recipe.with_changes(train_images=20), seed=0)
    assert torch.equal(truth.val.x, proxy.val.x) and torch.equal(truth.val.y, proxy.val.y)
    assert torch.equal(truth.train.x[:20], proxy.train.x) and len(truth.train) == 60


def test_trains_each_unit_once_and_reports_rank_agreement(pc, e2e, tmp_path, capsys):
    data, _ = final_stage_inputs(e2e, tmp_path)
    rec = tmp_path / "rec"
    assert pc.main(["--records", str(rec), "train", "--kinds", "cifar10-e0.5", "--networks", "0",
                    "--data", str(data)]) == 2
    assert "select" in capsys.readouterr().err  # no networks fixed yet
    write(rec / "networks.json", {"networks": pc.select(macs_ms, n=3)["networks"]})
    assert pc.main(["--records", str(rec), "train", "--kinds", "cifar10-e0.5-n40", "--networks", "0-1",
                    "--data", str(data)]) == 0
    doc = json.loads((rec / "cifar10-e0.5-n40" / "net_001.json").read_text())
    assert doc["network"] == 1 and doc["space"] == pc.SPACE and doc["data"]["train"] <= 40
    assert doc["tokens"] == json.loads((rec / "networks.json").read_text())["networks"][1]["tokens"]
    assert doc["result"]["eval_split"] == "val" and 0.0 <= doc["result"]["accuracy"] <= 1.0
    before = {p: p.stat().st_mtime_ns for p in rec.rglob("net_*.json")}
    assert pc.main(["--records", str(rec), "train", "--kinds", "cifar10-e0.5-n40", "--networks", "0-1",
                    "--data", str(data)]) == 0
    assert {p: p.stat().st_mtime_ns for p in rec.rglob("net_*.json")} == before  # nothing trained twice
    # a deadline: a training expected to run past it is not started, and nothing is written
    now = time.strftime("%H:%M", time.gmtime())
    assert pc.main(["--records", str(rec), "train", "--kinds", "cifar10-e0.5-n40", "--networks", "2",
                    "--data", str(data), "--deadline", now]) == 0
    assert "not started" in capsys.readouterr().out and not (rec / "cifar10-e0.5-n40" / "net_002.json").exists()
    assert pc.main(["--records", str(rec), "train", "--networks", "2", "--data", str(data), "--deadline", "25:00"]) == 2
    assert "--deadline '25:00' must be a UTC time HH:MM" in capsys.readouterr().err
    kind = pc.kind_named("cifar10-e1-n80")  # no records of its own: scaled from the others' seconds per image
    per_image = np.median([d["result"]["seconds"] / (d["recipe"]["epochs"] * d["data"]["train"])
                           for d in pc.load_kind("cifar10-e0.5-n40", rec).values()])
    assert pc.expected_seconds(kind, rec) == pytest.approx(per_image * 80)
    assert pc.expected_seconds(kind, tmp_path / "none") is None
    # per network: its time for another kind times the two kinds' median ratio on the networks with both
    costs = tmp_path / "costs"
    for i, (a, b) in enumerate([(10.0, 30.0), (20.0, 50.0), (40.0, None)]):
        write(costs / "cheap" / f"net_{i:03d}.json", {"network": i, "result": {"seconds": a}})
        if b is not None:
            write(costs / "dear" / f"net_{i:03d}.json", {"network": i, "result": {"seconds": b}})
    dear = type("Kind", (), {"name": "dear"})()
    assert pc.expected_seconds(dear, costs, 2) == pytest.approx(40.0 * 2.75)  # median of 3.0 and 2.5
    write(costs / "other" / "net_000.json", {"network": 0, "result": {"seconds": 15.0}})
    write(costs / "other" / "net_002.json", {"network": 2, "result": {"seconds": 40.0}})
    assert pc.expected_seconds(dear, costs, 2) == pytest.approx(np.median([40.0 * 2.75, 40.0 * 2.0]))
    assert pc.expected_seconds(dear, costs) == pytest.approx(40.0)  # no network: the kind's median
    assert pc.expected_seconds(dear, costs, 7) == pytest.approx(40.0)  # a network with no records
    # this sitting's pace: twice and 1.8x as slow as the records so far -> the median, 1.9x
    assert pc.paced(100.0, []) == 100.0 and pc.paced(None, [2.0]) is None
    assert pc.paced(100.0, [2.0, 1.8]) == pytest.approx(190.0)
    t = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    assert pc.parse_deadline("23:00", t) == t + 46 * 60 + 40 and pc.parse_deadline("06:00", t) == t + 7 * 3600 + 46 * 60 + 40

    # the truth: the final recipe's 15 epochs (a few steps on this data), its state kept along the way
    assert pc.main(["--records", str(rec), "train", "--kinds", pc.TRUTH, "--networks", "2", "--data", str(data),
                    "--work", str(tmp_path / "work")]) == 0
    assert re.search(rf"\d\d:\d\d:\d\d {pc.TRUTH} net 2: started, expected about \d+ min, until about \d\d:\d\d UTC\n"
                     rf"\d\d:\d\d:\d\d {pc.TRUTH} net 2: accuracy", capsys.readouterr().out)
    doc = json.loads((rec / pc.TRUTH / "net_002.json").read_text())
    assert doc["recipe"]["name"] == pc.TRUTH and doc["recipe"]["epochs"] == 15 and doc["result"]["eval_split"] == "val"
    assert doc["result"]["steps"] == 15 * -(-doc["data"]["train"] // 64)
    assert not list((tmp_path / "work").rglob("*.pt"))  # the kept state goes once the result is in
    assert pc.main(["--records", str(rec), "train", "--kinds", "cifar10-e0.5", "--networks", "7",
                    "--data", str(data)]) == 2
    assert "network 7 is not in" in capsys.readouterr().err

    # the report: a proxy that orders the networks as the truth does, one that reverses them
    truth = {"result": {"accuracy": 0.0, "seconds": 10.0}, "proxy_params": 0}
    for i in range(6):
        write(rec / pc.TRUTH / f"net_{i:03d}.json", {**truth, "network": i, "proxy_params": 1000 * i,
                                                     "result": {"accuracy": 0.5 + 0.01 * i, "seconds": 10.0}})
        write(rec / "cifar10-e4" / f"net_{i:03d}.json", {**truth, "network": i,
                                                         "result": {"accuracy": 0.3 + 0.02 * i, "seconds": 2.0}})
        write(rec / "cifar10-e2-n20000" / f"net_{i:03d}.json", {**truth, "network": i,
                                                                "result": {"accuracy": 0.4 - 0.01 * i, "seconds": 3.0}})
    rep = pc.summarize(rec)
    good, bad = rep["proxies"]["cifar10-e4"], rep["proxies"]["cifar10-e2-n20000"]
    assert good["kendall"] == pytest.approx(1.0) and good["pick"] == 5 and good["pick_truth_rank"] == 1
    assert bad["kendall"] == pytest.approx(-1.0) and bad["pick"] == 0 and bad["pick_truth_rank"] == 6
    assert good["spearman_params"] == pytest.approx(1.0) and rep["truth_spearman_params"] == pytest.approx(1.0)
    assert rep["compare"]["cifar10-e2-n20000 - cifar10-e4"]["difference"] == pytest.approx(-2.0)
    assert rep["proxies"]["cifar10-e4-n20000"] == {"networks": 0}
    assert pc.main(["--records", str(rec), "report", "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "final20k: 6 networks" in out and "too few networks" in out


def test_training_order_is_per_network_or_longest_kind_first(pc, tmp_path):
    kinds = {n: pc.kind_named(n) for n in ("cifar10-e4", "cifar10-e4-n20000", pc.TRUTH)}
    assert [(i, n) for i, n, _ in pc.training_order([1, 3], kinds, tmp_path)] == [
        (1, "cifar10-e4"), (1, "cifar10-e4-n20000"), (1, pc.TRUTH), (3, "cifar10-e4"), (3, "cifar10-e4-n20000"), (3, pc.TRUTH)]
    # records: 0.01 s per image seen; the truth's own records say 3,000 s
    for name, seconds, epochs, images in (("cifar10-e4", 200.0, 4, 5000), (pc.TRUTH, 3000.0, 15, 20000)):
        (tmp_path / name).mkdir()
        doc = {"network": 0, "result": {"seconds": seconds}, "recipe": {"epochs": epochs}, "data": {"train": images}}
        (tmp_path / name / "net_000.json").write_text(json.dumps(doc))
    order = [(i, n) for i, n, _ in pc.training_order([1, 3], kinds, tmp_path, longest_first=True)]
    # the truth (3,000 s), then cifar10-e4-n20000 (0.01 s x 4 x 20,000 = 800 s), then cifar10-e4 (200 s)
    assert order == [(1, pc.TRUTH), (3, pc.TRUTH), (1, "cifar10-e4-n20000"), (3, "cifar10-e4-n20000"),
                     (1, "cifar10-e4"), (3, "cifar10-e4")]
