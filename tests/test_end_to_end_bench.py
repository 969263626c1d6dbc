"""bench/end_to_end.py's own logic: the width search to a latency, the uniform width multiplier, the
speed-up at equal accuracy, the report from records, and its command line."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from .bench_scripts import bench_module


@pytest.fixture(scope="module")
def e2e():
    return bench_module("end_to_end")


def stepped(w: float) -> float:
    """A latency that grows with width in steps, as channels rounded to multiples of 8 make it."""
    ch = max(8, round(96 * w / 8) * 8)
    return 0.05 + 2e-4 * ch ** 1.8


def test_match_width_reaches_a_stepped_latency(e2e):
    calls = []

    def lat(w):
        calls.append(w)
        return stepped(w)

    for want in (0.3, 0.55, 0.8, 1.3):
        calls.clear()
        m = e2e.match_width(lat, stepped(want))
        assert m.within(), (want, m)
        assert abs(m.latency_ms / stepped(want) - 1) <= 0.03
        assert len(calls) <= 10
        assert m.points[m.width] == m.latency_ms


def test_match_width_outside_the_range_returns_the_nearest_end(e2e):
    m = e2e.match_width(lambda w: 1.0 + w, 10.0, hi=2.0)
    assert m.width == 2.0 and not m.within() and m.error == pytest.approx(3.0 / 10.0 - 1)
    m = e2e.match_width(lambda w: 1.0 + w, 0.5, lo=0.1)
    assert m.width == 0.1 and not m.within()


def test_match_width_on_a_measured_table(e2e, tiny_predictor):
    """The width search on a real (small) table's predictions of a reference network at 32x32."""

    def lat(w):
        return float(tiny_predictor.predict(e2e.reference_net("mobilenet_v3_small", w)))

    m = e2e.match_width(lat, lat(0.6))
    assert m.within()
    spec = e2e.reference_net("mobilenet_v3_small", m.width)
    # deployed as trained: 32x32, 10 classes, the stem at stride 1 and a 2x2 last map
    assert (spec.resolution, spec.num_classes, spec.stem.stride, spec.final_resolution) == (32, 10, 1, 2)


def test_uniform_width_scales_every_group_on_steps_of_8(e2e):
    import torch

    from space.builder import build_model
    from space.channels import proposal_groups
    from space.cost import cost
    from space.searchspace import get_space

    net = e2e.searched_net(get_space("mnasnet_cifar").sample(3))
    assert e2e.uniform_width(net, 1.0) == net
    half = e2e.uniform_width(net, 0.5)
    for g_net, g_half in zip(proposal_groups(net), proposal_groups(half)):
        c, h = g_net.channels(net), g_half.channels(half)
        assert h % 8 == 0 and h == max(8, round(c / 2 / 8) * 8)
    assert cost(half).macs < 0.5 * cost(net).macs
    out = build_model(half).eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 10)


def test_speedup_at_equal_accuracy(e2e):
    curve = [(1.0, 0.80), (0.6, 0.70)]
    r = e2e.speedup_at_equal_accuracy(curve, 0.6, 0.75)
    assert r["kind"] == "exact" and r["speedup"] == pytest.approx(math.sqrt(0.6) / 0.6)
    r = e2e.speedup_at_equal_accuracy(curve, 0.5, 0.85)
    assert r["kind"] == "at_least" and r["speedup"] == pytest.approx(2.0)
    r = e2e.speedup_at_equal_accuracy(curve, 0.6, 0.65)
    assert r["kind"] == "at_most" and r["speedup"] == pytest.approx(1.0) and r["monotone"]
    # A curve whose faster point scored higher (seed noise above the width's effect): the width multiplier
    # already reaches that accuracy at its faster point, never at the slower one's latency.
    wrong_way = [(0.70, 0.55), (0.57, 0.56)]
    r = e2e.speedup_at_equal_accuracy(wrong_way, 0.56, 0.555)
    assert r["kind"] == "at_most" and r["width_ms"] == 0.57 and not r["monotone"]
    r = e2e.speedup_at_equal_accuracy(wrong_way, 0.56, 0.565)
    assert r["kind"] == "at_least" and r["width_ms"] == 0.70 and not r["monotone"]


def write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_report_from_records(e2e, tmp_path):
    """A report from hand-made records: rows, the targets' comparisons, compute and the plot."""
    from space.searchspace import get_space

    rec = tmp_path / "records"
    sp = get_space("mnasnet_cifar")
    net = e2e.spec_doc(e2e.searched_net(sp.sample(1)))
    write(rec / "target.json", {"target_ms": 1.0})
    for s in e2e.STRATEGIES:
        write(rec / f"search_{s}.json", {"network": net, "compute": {"train_seconds": 100.0}})
        write(rec / f"netadapt_{s}.json", {"network": net, "seconds": 50.0, "target_met": True, "iterations": 3})
    for n in e2e.REFERENCES + ("controller_seed",):
        write(rec / f"width_{n}.json", {"network": net, "width": 0.5, "seconds": 10.0})
    acc = {"controller+netadapt": (0.70, 0.72), "random+netadapt": (0.69, 0.69), "controller_seed": (0.74, 0.74),
           "controller_seed@width": (0.65, 0.67), "mobilenet_v3_large@width": (0.68, 0.68)}
    lat = {"controller+netadapt": 1.0, "controller_seed": 1.5, "controller_seed@width": 1.0}
    names = list(e2e.final_networks(rec))
    assert len(names) == 8
    write(rec / "latency.json", {"ms": {n: lat.get(n, 1.01) for n in names}})
    for n in names:
        for seed, a in enumerate(acc.get(n, (0.6, 0.6))):
            write(rec / "final" / f"{n}_s{seed}.json", {"result": {"accuracy": a}, "seconds": 200.0})
    rep = e2e.summarize(rec)
    rows = {r["network"]: r for r in rep["rows"]}
    assert rows["controller+netadapt"]["accuracy"] == pytest.approx(0.71)
    assert rows["controller+netadapt"]["accuracy_std"] == pytest.approx(math.sqrt(2e-4))
    assert rows["controller+netadapt"]["compute_s"] == pytest.approx(100 + 50 + 400)
    assert rows["mobilenet_v2@width"]["compute_s"] == pytest.approx(10 + 400)
    assert rows["controller_seed@width"]["compute_s"] == pytest.approx(100 + 10 + 400)  # its search's trials too
    assert rows["controller_seed@width"]["method"] == ("controller search's network (width 1.0: controller_seed), "
                                                       "width multiplier only")
    assert rep["vs_best_reference"]["reference"] == "mobilenet_v3_large@width"
    assert rep["vs_best_reference"]["points"] == pytest.approx(3.0)
    # ours 0.70/0.72 (std 0.0141), MobileNetV3-Large 0.68/0.68: SE of the difference 0.0141 / sqrt(2)
    assert rep["vs_best_reference"]["points_se"] == pytest.approx(100 * math.sqrt(2e-4 / 2))
    assert rep["vs_best_reference"]["met"] and rep["vs_best_reference"]["matched_within_3pct"]
    assert rep["vs_random"]["points"] == pytest.approx(2.0) and rep["vs_random"]["met"]
    write(rec / "latency.json", {"ms": {n: lat.get(n, 1.05 if n == "mobilenet_v1@width" else 1.01) for n in names}})
    assert not e2e.summarize(rec)["vs_best_reference"]["matched_within_3pct"]  # one reference 5% off ours
    write(rec / "latency.json", {"ms": {n: lat.get(n, 1.01) for n in names}})
    # NetAdapt's 0.71 at 1.0 ms; the width curve reaches 0.71 between 0.66 at 1.0 ms and 0.74 at 1.5 ms
    assert rep["netadapt_vs_width"]["kind"] == "exact"
    assert rep["netadapt_vs_width"]["speedup"] == pytest.approx(1.5 ** 0.625) and rep["netadapt_vs_width"]["monotone"]
    # and directly, at one latency: NetAdapt's 0.71 against the width multiplier's 0.66
    assert rep["netadapt_vs_width"]["vs_width"]["points"] == pytest.approx(5.0)
    assert rep["netadapt_vs_width"]["width_latency_vs_trimmed"] == pytest.approx(0.0)
    assert rep["netadapt_vs_width"]["seeds"] == [2, 2, 2] and not rep["netadapt_vs_width"]["partial"]
    assert rep["netadapt_target_met"] == {"controller": True, "random": True}
    assert e2e.markdown(rep).count("\n") == 1 + 8
    lines = e2e.progress(rec, tmp_path / "work")
    assert lines[0] == "table: to run" and lines[1] == "target: done"
    assert lines[2] == "search: controller done, random done" and lines[3] == "netadapt: controller done, random done"
    assert lines[4] == "width: 5 of 5 matched" and lines[5] == "latency: done"
    assert lines[6] == "final: 16 of 24 trainings (3 seeds per network)"  # two of three seeds written
    assert e2e.plot(rep, tmp_path / "plot.png").stat().st_size > 0
    assert not rep["vs_best_reference"]["partial"] and rep["vs_best_reference"]["seeds"] == [2, 2]
    write(rec / "settings.json", {"seeds": 3})  # the settings want 3 seeds: a comparison on 2 says it is partial
    assert e2e.summarize(rec)["vs_best_reference"]["partial"]
    for p in (rec / "final").glob("*_s1.json"):  # one seed each: no spread is claimed
        p.unlink()
    one = e2e.summarize(rec)
    assert all(r["seeds"] == 1 and math.isnan(r["accuracy_std"]) for r in one["rows"])
    assert math.isnan(one["vs_best_reference"]["points_se"]) and "±" not in e2e.markdown(one).split("\n", 2)[2]
    assert e2e.plot(one, tmp_path / "plot1.png").stat().st_size > 0


def test_command_line_refuses_bad_input(e2e, tmp_path, capsys):
    args = ["run", "--records", str(tmp_path / "rec"), "--work", str(tmp_path / "work"), "--data", str(tmp_path)]
    assert e2e.main(args + ["--trials", "0"]) == 2
    assert "--trials 0 must be a positive number" in capsys.readouterr().err
    assert e2e.main(args + ["--stages", "table,bogus"]) == 2
    assert "unknown stage 'bogus'" in capsys.readouterr().err
    assert e2e.main(args[:-1] + [str(tmp_path / "missing")]) == 2
    # a stage with nothing to do yet records the settings; other settings are refused, not mixed
    assert e2e.main(args + ["--stages", "latency"]) == 0
    assert json.loads((tmp_path / "rec" / "settings.json").read_text())["trials"] == e2e.Settings().trials
    assert e2e.main(args + ["--stages", "latency", "--final-epochs", "3"]) == 2
    assert "made with --final-epochs 15.0, not 3.0" in capsys.readouterr().err
    assert e2e.main(args + ["--search-scheduler", "hyperband"]) == 2
    assert "--search-scheduler 'hyperband' must be one of fifo, asha" in capsys.readouterr().err
    assert e2e.main(args + ["--search-alpha", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--search-alpha 0.5 must be a finite number <= 0" in err and err.count("\n") == 1
    from search.reward import DEFAULT_W, PRESETS

    assert (e2e.Settings().search_alpha, e2e.Settings().search_beta) == (DEFAULT_W, DEFAULT_W)
    e2e.Settings(search_alpha=PRESETS["hard"][0], search_beta=PRESETS["hard"][1]).check()  # 0 and -1 are allowed
    # Records older than a setting were made at its default: they stay usable, and other values are refused.
    saved = json.loads((tmp_path / "rec" / "settings.json").read_text())
    del saved["search_scheduler"], saved["search_alpha"], saved["search_beta"]
    (tmp_path / "rec" / "settings.json").write_text(json.dumps(saved))
    assert e2e.main(args + ["--stages", "latency"]) == 0
    assert e2e.main(args + ["--stages", "latency", "--search-scheduler", "asha"]) == 2
    assert "made with --search-scheduler fifo, not asha" in capsys.readouterr().err
    assert e2e.main(args + ["--stages", "latency", "--search-alpha", "0", "--search-beta", "-1"]) == 2
    assert "made with --search-alpha -0.15, not 0.0" in capsys.readouterr().err
    # The searches' seed: 0 by default and in older records, never negative; another seed is another run.
    assert e2e.Settings().search_seed == 0
    assert e2e.main(args + ["--stages", "latency", "--search-seed", "-1"]) == 2
    assert "--search-seed -1 must be a number >= 0" in capsys.readouterr().err
    assert e2e.main(args + ["--stages", "latency", "--search-seed", "1"]) == 2
    assert "made with --search-seed 0, not 1" in capsys.readouterr().err
    # The space: mnasnet_cifar in older records; only a space whose 32x32 network is the one trained.
    del saved["space"]
    (tmp_path / "rec" / "settings.json").write_text(json.dumps(saved))
    assert e2e.main(args + ["--stages", "latency"]) == 0
    assert e2e.main(args + ["--stages", "latency", "--space", "mnasnet_cifar_wide"]) == 2
    assert "made with --space mnasnet_cifar, not mnasnet_cifar_wide" in capsys.readouterr().err
    for bad in ("mnasnet", "nope"):
        assert e2e.main(args + ["--stages", "latency", "--space", bad]) == 2
        err = capsys.readouterr().err
        assert f"--space {bad!r}" in err and "mnasnet_cifar, mnasnet_cifar_wide" in err and err.count("\n") == 1
    e2e.Settings(space="mnasnet_cifar_wide").check()


def test_warnings_reach_the_log_as_one_line(e2e, tmp_path, monkeypatch, capsys):
    import warnings

    # whatever another test left installed, start from a format that is not the one line (restored after)
    monkeypatch.setattr(warnings, "showwarning", lambda *a, **k: print("two\nlines", file=sys.stderr))
    args = ["run", "--records", str(tmp_path / "rec"), "--work", str(tmp_path / "work"), "--data", str(tmp_path)]
    assert e2e.main(args + ["--stages", "latency"]) == 0
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("the table failed its self-check", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "warning: the table failed its self-check\n"


def test_final_shards_split_the_units_disjointly_and_cover_them(e2e):
    names = ["controller+netadapt", "random+netadapt", "mobilenet_v2@width"]
    whole = e2e.final_units(names, 3)
    assert whole[:3] == [(0, n) for n in names]  # every first seed before any second
    shards = [e2e.final_units(names, 3, (k, 2)) for k in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(whole) and not set(shards[0]) & set(shards[1])
    assert [len(x) for x in shards] == [5, 4]
    assert e2e.parse_shard("1/2") == (1, 2)


@pytest.mark.parametrize("bad", ["2/2", "x", "1/0", "-1/2"])
def test_a_bad_shard_is_refused_in_one_line(e2e, tmp_path, capsys, bad):
    args = ["run", "--records", str(tmp_path / "rec"), "--work", str(tmp_path / "work"), "--data", str(tmp_path)]
    assert e2e.main(args + ["--stages", "final", f"--shard={bad}"]) == 2
    assert "must be K/N with 0 <= K < N" in capsys.readouterr().err


def test_the_width_comparison_reads_the_search_netadapt_trimmed(e2e, tmp_path):
    """NetAdapt against the width multiplier alone needs a network NetAdapt cut: the controller's if it
    was trimmed, else random search's, else the controller's trimmed by a NetAdapt run of its own."""
    from space.searchspace import get_space

    rec = tmp_path / "records"
    net = e2e.spec_doc(e2e.searched_net(get_space("mnasnet_cifar").sample(1)))
    for s in e2e.STRATEGIES:
        write(rec / f"search_{s}.json", {"network": net, "compute": {"train_seconds": 100.0}})
    for n in e2e.REFERENCES:
        write(rec / f"width_{n}.json", {"network": net, "width": 0.5, "seconds": 10.0})
    assert e2e.width_comparison(rec) is None and not e2e.final_set_complete(rec)
    assert e2e.progress(rec, tmp_path / "work")[3:5] == ["netadapt: controller to run, random to run",
                                                         "width: 4 of 4 or more matched"]
    within = {"network": net, "iterations": 0, "target_met": True, "seconds": 5.0, "measured_ms": 0.7}
    write(rec / "netadapt_controller.json", within)
    assert e2e.width_comparison(rec) is None and not e2e.trim_needed(rec)  # random's NetAdapt may still trim
    write(rec / "netadapt_random.json", {**within, "iterations": 4, "seconds": 50.0})
    c = e2e.width_comparison(rec)
    assert (c.seed, c.trimmed, c.unit) == ("random_seed", "random+netadapt", "netadapt_random")
    nets = e2e.final_networks(rec)
    assert "random_seed" in nets and "controller_seed" not in nets and not e2e.final_set_complete(rec)
    assert nets["controller+netadapt"]["method"] == "controller search (within the target as found)"
    write(rec / "width_random_seed.json", {"network": net, "width": 0.9, "seconds": 10.0})
    assert e2e.final_set_complete(rec) and len(e2e.final_networks(rec)) == 2 + 4 + 2

    # A cut of less than MIN_COMPARISON_CUT of its seed's latency (a seed just above the target) is no
    # comparison: a width match would land on the seed itself. The controller's NetAdapt run is due instead.
    write(rec / "netadapt_random.json", {**within, "iterations": 1, "seconds": 50.0, "speedup_measured": 1.05})
    assert e2e.cut(e2e.read_record("netadapt_random", rec)) and e2e.trim_needed(rec)
    write(rec / "netadapt_random.json", {**within, "iterations": 3, "seconds": 50.0, "speedup_measured": 1.25})
    assert e2e.width_comparison(rec).search == "random" and not e2e.trim_needed(rec)

    # Both within the target as found: the comparison waits for NetAdapt's own run of the controller's network.
    write(rec / "netadapt_random.json", within)
    assert e2e.trim_needed(rec) and e2e.width_comparison(rec) is None and not e2e.final_set_complete(rec)
    lines = e2e.progress(rec, tmp_path / "work")
    assert lines[3].endswith(f"trim to run (the controller's network to {e2e.TRIM_RATIO}x its latency)")
    assert lines[4] == "width: 4 of 4 or more matched"  # the trimmed network's seed is still to match
    write(rec / "netadapt_trim.json", {**within, "iterations": 6, "seconds": 70.0})
    c = e2e.width_comparison(rec)
    assert (c.seed, c.trimmed, c.search, c.unit) == ("controller_seed", "controller+trim", "controller", "netadapt_trim")
    assert not e2e.final_set_complete(rec)  # the seed's width match is still missing
    write(rec / "width_controller_seed.json", {"network": net, "width": 0.9, "seconds": 10.0})
    assert e2e.final_set_complete(rec)
    # the controller's searched network is in the set once: NetAdapt kept it as found (controller+netadapt)
    assert e2e.seed_trained_as(rec, c) == "controller+netadapt"
    assert sorted(e2e.final_networks(rec)) == sorted(
        ["controller+netadapt", "random+netadapt", "controller+trim", "controller_seed@width"]
        + [f"{n}@width" for n in e2e.REFERENCES])
    assert e2e.compute_seconds("controller+trim", rec) == pytest.approx(100 + 70)
    rep = e2e.summarize(rec)
    assert rep["netadapt_vs_width_on"] == "controller+trim" and "netadapt_vs_width" not in rep  # nothing trained yet
    assert rep["netadapt_target_met"] == {"controller": True, "random": True, "trim": True}
    # with the trainings and latencies on record, the width curve starts at controller+netadapt's row
    names = list(e2e.final_networks(rec))
    write(rec / "latency.json", {"ms": {n: {"controller+netadapt": 1.5, "controller+trim": 1.2}.get(n, 1.0) for n in names}})
    acc = {"controller+netadapt": 0.74, "controller+trim": 0.70, "controller_seed@width": 0.66}
    for n in names:
        write(rec / "final" / f"{n}_s0.json", {"result": {"accuracy": acc.get(n, 0.6)}, "seconds": 1.0})
    rep = e2e.summarize(rec)
    assert rep["netadapt_vs_width"]["kind"] == "exact"  # 0.70 lies between 0.66 at 1.0 ms and 0.74 at 1.5 ms
    assert rep["netadapt_vs_width"]["speedup"] == pytest.approx(1.5 ** 0.5 / 1.2)


def final_stage_inputs(e2e, folder: Path, controller_seed: bool = True) -> tuple[Path, Path]:
    """A small ImageFolder (10 classes, 8 training and 1 test image each) and records of every final
    network but, unless ``controller_seed``, the width-scaled controller seed: (data, records)."""
    import numpy as np
    from PIL import Image

    data = folder / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 1)):
        for c in range(10):
            (data / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)).save(data / split / f"c{c}" / f"{i}.png")
    rec = folder / "records"
    tiny = e2e.spec_doc(e2e.reference_net("mobilenet_v3_small", 0.25))
    for s in e2e.STRATEGIES:
        write(rec / f"netadapt_{s}.json", {"network": tiny, "iterations": 0, "target_met": True})
    write(rec / "netadapt_trim.json", {"network": tiny, "iterations": 1, "target_met": True})
    for n in e2e.REFERENCES:
        write(rec / f"width_{n}.json", {"network": tiny, "width": 0.5})
    if controller_seed:
        write(rec / "width_controller_seed.json", {"network": tiny, "width": 0.9})
    return data, rec


def test_final_stage_trains_each_unit_once_across_shards(e2e, tmp_path):
    data, rec = final_stage_inputs(e2e, tmp_path, controller_seed=False)
    tiny = e2e.spec_doc(e2e.reference_net("mobilenet_v3_small", 0.25))
    settings = e2e.Settings(final_images=20, final_epochs=0.05, seeds=2)
    e2e.stage_final(e2e.Ctx(settings, rec, str(data), tmp_path / "work", (0, 2)))
    assert not (rec / "final").exists()  # a shard waits while networks are still joining the set
    write(rec / "width_controller_seed.json", {"network": tiny, "width": 0.9})
    names = list(e2e.final_networks(rec))
    assert len(names) == 8 and e2e.final_set_complete(rec)
    for k in (1, 0):
        e2e.stage_final(e2e.Ctx(settings, rec, str(data), tmp_path / "work", (k, 2)))
    done = sorted(p.name for p in (rec / "final").glob("*.json"))
    assert done == sorted(f"{n}_s{seed}.json" for n in names for seed in range(2))
    first = {p: p.stat().st_mtime_ns for p in (rec / "final").glob("*.json")}
    doc = json.loads((rec / "final" / "random+netadapt_s1.json").read_text())
    assert doc["seed"] == 1 and doc["recipe"]["epochs"] == 0.05 and 0.0 <= doc["result"]["accuracy"] <= 1.0
    e2e.stage_final(e2e.Ctx(settings, rec, str(data), tmp_path / "work"))  # every unit is on record: nothing to do
    assert {p: p.stat().st_mtime_ns for p in (rec / "final").glob("*.json")} == first


def test_a_final_training_cut_off_part_way_goes_on_from_its_last_epoch(e2e, tmp_path, monkeypatch, capsys):
    """A sitting that ends within a final training loses at most the epoch under way: the next goes on
    from the state kept at the last epoch's end and ends where one uninterrupted training ends."""
    from train.loop import Training

    settings = e2e.Settings(final_images=20, final_epochs=3, seeds=1)  # 20 images: one step an epoch
    data, rec = final_stage_inputs(e2e, tmp_path / "through")
    e2e.stage_final(e2e.Ctx(settings, rec, str(data), tmp_path / "through" / "work"))
    through = {p.name: json.loads(p.read_text()) for p in (rec / "final").glob("*.json")}
    assert len(through) == 8 and all(d["resumed"] == {"step": 0, "seconds": 0.0} for d in through.values())

    data, rec = final_stage_inputs(e2e, tmp_path / "cut")
    work, advance = tmp_path / "cut" / "work", Training.advance

    class SittingEnds(Exception):
        pass

    def cut_off(self, until=None):  # the sitting ends within the third epoch of the first training
        advance(self, until)
        if self.step == 2:
            raise SittingEnds

    monkeypatch.setattr(Training, "advance", cut_off)
    with pytest.raises(SittingEnds):
        e2e.stage_final(e2e.Ctx(settings, rec, str(data), work))
    monkeypatch.setattr(Training, "advance", advance)
    first = e2e.final_units(list(e2e.final_networks(rec)), 1)[0][1]
    kept = work / "final" / f"{first}_s0.pt"
    assert kept.exists() and not (rec / "final").exists()
    assert e2e.progress(rec, work)[-1].endswith(f"trainings (3 seeds per network); under way: {first} seed 0 at epoch 1 of 3")
    capsys.readouterr()
    e2e.stage_final(e2e.Ctx(settings, rec, str(data), work))
    assert f"final {first} seed 0: goes on from step 1/3" in capsys.readouterr().err
    cut = {p.name: json.loads(p.read_text()) for p in (rec / "final").glob("*.json")}
    assert cut.keys() == through.keys() and not kept.exists()
    assert cut[f"{first}_s0.json"]["resumed"]["step"] == 1
    for name, doc in through.items():
        got = cut[name]["result"]
        assert (got["accuracy"], got["loss"], got["steps"]) == (doc["result"]["accuracy"], doc["result"]["loss"], 3)

    # a kept state of no use (another recipe's, or unreadable) is set aside: the training starts over
    (rec / "final" / f"{first}_s0.json").unlink()
    kept.write_bytes(b"not a state")
    e2e.stage_final(e2e.Ctx(settings, rec, str(data), work))
    assert f"final {first} seed 0: starts over" in capsys.readouterr().err
    again = json.loads((rec / "final" / f"{first}_s0.json").read_text())
    assert again["resumed"]["step"] == 0 and again["result"]["loss"] == through[f"{first}_s0.json"]["result"]["loss"]


def test_width_and_latency_stages_time_networks_side_by_side(e2e, tmp_path, monkeypatch):
    """The width stage matches each reference to our network timed beside it, and the latency stage times
    every final network and the target together: real networks, real onnxruntime timings."""
    from latency import probe
    from latency.runner import fast_mean

    monkeypatch.setattr(e2e, "SIDE_BY_SIDE_SESSIONS", 2)  # the benchmark's 5 only steady the figures

    probe.record(fast_mean(probe.time_probe(1.0)))  # so that no 60 s reference is timed first
    rec = tmp_path / "records"
    ours = e2e.spec_doc(e2e.reference_net("mobilenet_v3_small", 0.5))
    write(rec / "target.json", {"target_ms": 1.0, "network": e2e.spec_doc(e2e.reference_net("mobilenet_v3_small", 1.0))})
    for s in e2e.STRATEGIES:
        write(rec / f"search_{s}.json", {"network": ours, "compute": {"train_seconds": 1.0}})
        write(rec / f"netadapt_{s}.json", {"network": ours, "iterations": 0, "seconds": 1.0})
    write(rec / "netadapt_trim.json", {"network": ours, "iterations": 2, "seconds": 1.0})
    for n in ("mobilenet_v3_large", "mobilenet_v2"):  # on record already: not matched again (keeps the test short)
        write(rec / f"width_{n}.json", {"network": ours, "width": 0.5, "seconds": 1.0})
    ctx = e2e.Ctx(e2e.Settings(), rec, str(tmp_path))
    e2e.stage_width(ctx)
    for n in ("mobilenet_v3_small", "mobilenet_v1", "controller_seed"):
        w = json.loads((rec / f"width_{n}.json").read_text())
        anchor = json.loads((rec / ("anchor.json" if n in e2e.REFERENCES else "anchor_trim.json")).read_text())["latency_ms"]
        assert w["matched_to"] == ("netadapt_controller" if n in e2e.REFERENCES else "netadapt_trim")
        theirs, mine = w["side_by_side_ms"][str(w["width"])]
        # each width is put on the anchor's scale by its ratio to our network timed beside it
        assert w["latency_ms"] == pytest.approx(anchor * mine / theirs)
        assert w["error"] == pytest.approx(mine / theirs - 1)
    assert e2e.final_set_complete(rec)
    e2e.stage_latency(ctx)
    lat = json.loads((rec / "latency.json").read_text())
    names = set(e2e.final_networks(rec))
    assert set(lat["ms"]) == names | {e2e.TARGET} and lat["side_by_side"]
    assert lat["vs_ours"][e2e.OURS] == 0 and lat["vs_target"][e2e.TARGET] == 0
    assert all(len(v) == e2e.LATENCY_ROUNDS for v in lat["all_ms"].values())
    assert len(lat["slowdown"]) == e2e.LATENCY_ROUNDS and all(x > 0 for x in lat["slowdown"])  # a probe reference exists
    # the figures in ms: medians over the rounds run in the fast mode (all rounds when none was)
    fast = lat["ms_rounds"]
    assert fast and fast == ([i for i, x in enumerate(lat["slowdown"]) if x <= 1.1] or list(range(e2e.LATENCY_ROUNDS)))
    assert lat["ms"][e2e.OURS] == pytest.approx(statistics.median(lat["all_ms"][e2e.OURS][i] for i in fast))
    # the target is MobileNetV3-Small at twice ours's width: clearly slower side by side
    assert lat["vs_ours"][e2e.TARGET] > 0.1 and lat["vs_target"][e2e.OURS] < -0.1
    rep = e2e.summarize(rec)
    assert rep["target_side_by_side"]["controller+netadapt"] == lat["vs_target"][e2e.OURS]
    rows = {r["network"]: r for r in rep["rows"]}
    assert rows["mobilenet_v3_small@width"]["latency_vs_ours"] == lat["vs_ours"]["mobilenet_v3_small@width"]


def test_a_table_that_failed_its_self_check_stops_the_benchmark_and_is_moved_aside(e2e, tmp_path, monkeypatch):
    from common.errors import UserError
    from latency.files import device_dir

    monkeypatch.setenv("HWNAS_RESULTS", str(tmp_path))
    table = device_dir(e2e.DEVICE)
    table.mkdir(parents=True)
    (table / "units.csv").write_text("x\n")
    passed = {"n": 10, "passed": True, "within_10pct": 1.0, "mape": 3.0, "seed": 1,
              "worst": {"family": "mnasnet_cifar", "error": -0.08}}
    e2e.refuse_failed_table(passed)
    e2e.refuse_failed_table(None)  # a build without a self-check: nothing to judge it by
    assert (table / "units.csv").exists()
    failed = {**passed, "passed": False, "within_10pct": 0.0, "mape": 25.4, "worst": {"family": "mnasnet_cifar", "error": -0.31}}
    with pytest.raises(UserError, match=r"failed its self-check: 10 fresh networks .* 0% within \+/-10%"):
        e2e.refuse_failed_table(failed)
    assert not table.exists()
    aside = [p for p in table.parent.iterdir() if p.name.startswith(f"{table.name}.failed-")]
    assert len(aside) == 1 and (aside[0] / "units.csv").read_text() == "x\n"


def test_retarget_replaces_a_target_that_measures_otherwise_and_keeps_the_first(e2e, tmp_path, monkeypatch):
    from common.errors import UserError
    from latency import probe

    records, work = tmp_path / "records", tmp_path / "work"
    records.mkdir()
    monkeypatch.setenv("HWNAS_RESULTS", str(work))
    probe.record(100.0)  # a reference every block meets: no minute of probing, no waiting for the fast mode
    net = e2e.spec_doc(e2e.reference_net("mobilenet_v3_small", 0.5))
    first = {"reference": "mobilenet_v3_small", "width": 0.5, "target_ms": 1000.0, "network": net}
    e2e.write_record(e2e.record_path("target", records), first)
    check = e2e.retarget(records, work, processes=1)
    assert check["replaced"] and len(check["remeasured_ms"]) == 1 and 0 < check["median_ms"] < 100
    assert e2e.read_record("target_first", records)["target_ms"] == 1000.0
    assert e2e.target_ms(records) == check["median_ms"]  # NetAdapt now aims at the new figure
    # the check is made once: a second one would overwrite target_first.json with the replaced record
    with pytest.raises(UserError, match="already checked"):
        e2e.retarget(records, work, processes=1)
    assert e2e.read_record("target_first", records)["target_ms"] == 1000.0
    other = tmp_path / "other"
    other.mkdir()
    e2e.write_record(e2e.record_path("target", other), first)
    kept = e2e.retarget(other, work, processes=1, tolerance=1e9)
    assert not kept["replaced"] and e2e.target_ms(other) == 1000.0 and e2e.read_record("target_first", other) is None
    e2e.write_record(e2e.record_path("netadapt_random", records), {"unit": "netadapt_random"})
    with pytest.raises(UserError, match="NetAdapt already ran"):
        e2e.retarget(records, work, processes=1)


def test_workstate_keeps_what_a_resume_reads_and_restores_only_what_is_missing(tmp_path, capsys):
    ws = bench_module("workstate")
    work, state = tmp_path / "work", tmp_path / "state"
    files = {
        "latency/local-cpu/units.csv": "a,b\n1,2\n", "latency/local-cpu/units.json": "{}",
        "latency/local-cpu.failed-20261130T0016Z/units.csv": "old", "latency/local-cpu/.units.json.x1.json": "half",
        "latency/probe.json": "{}", "runs/s/options.json": "{}", "runs/s/searcher.json": '{"n": 1}',
        "runs/s/stopping.json": "{}", "runs/s/trials/net_1-0-2.json": "{}",
        "runs/s/trials.csv": "x", "runs/s/weights/t1.pt": "w", "runs/s/tune/sitting-1/x.json": "{}",
        "netadapt/n/state.json": '{"iteration": 2}', "netadapt/n/history.csv": "i\n1\n",
        "netadapt/n/checkpoints/iter_000.json": "{}", "netadapt/n/checkpoints/iter_000.pt": "w0",
        "netadapt/n/checkpoints/iter_002.json": "{}", "netadapt/n/checkpoints/iter_002.pt": "w2",
        "netadapt/n/checkpoints/iter_003.pt": "w3",  # saved, but state.json does not name it yet
    }
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    big = work / "latency" / "local-cpu" / "huge.json"
    with big.open("wb") as f:
        f.truncate(ws.MAX_BYTES + 1)
    with (work / "netadapt/n/checkpoints/iter_002.pt").open("ab") as f:  # weights are kept whatever their size
        f.truncate(ws.MAX_BYTES + 1)
    copied = {p.as_posix() for p in ws.keep(work, state)}
    assert copied == {"latency/local-cpu/units.csv", "latency/local-cpu/units.json", "latency/probe.json",
                      "runs/s/options.json", "runs/s/searcher.json", "runs/s/stopping.json",
                      "runs/s/trials/net_1-0-2.json", "netadapt/n/state.json", "netadapt/n/history.csv",
                      "netadapt/n/checkpoints/iter_000.json", "netadapt/n/checkpoints/iter_002.json",
                      "netadapt/n/checkpoints/iter_000.pt", "netadapt/n/checkpoints/iter_002.pt"}
    assert ws.keep(work, state) == []  # nothing changed: nothing copied
    # The state moves on to iteration 3: its weights replace iteration 2's; a changed file is copied again.
    (work / "netadapt/n/state.json").write_text('{"iteration": 3}')
    (work / "runs/s/searcher.json").write_text('{"n": 2}')
    assert {p.as_posix() for p in ws.keep(work, state)} == {"netadapt/n/state.json", "netadapt/n/checkpoints/iter_003.pt",
                                                            "runs/s/searcher.json"}
    assert not (state / "netadapt/n/checkpoints/iter_002.pt").exists()
    assert (state / "netadapt/n/checkpoints/iter_000.pt").exists()  # the seed's weights stay
    # A finished run: its final weights too.
    (work / "netadapt/n/result.json").write_text("{}")
    (work / "netadapt/n/netadapt.pt").write_text("final")
    assert {p.as_posix() for p in ws.keep(work, state)} == {"netadapt/n/result.json", "netadapt/n/netadapt.pt"}
    assert not list(state.rglob(".*"))
    # Restore fills a fresh folder, and never overwrites what a folder already holds (saying so).
    fresh = tmp_path / "fresh"
    (fresh / "runs/s").mkdir(parents=True)
    (fresh / "runs/s/searcher.json").write_text('{"n": 3}')
    back = {p.as_posix() for p in ws.restore(state, fresh)}
    assert "runs/s/searcher.json" not in back and "runs/s/options.json" in back and len(back) == 14
    assert (fresh / "runs/s/searcher.json").read_text() == '{"n": 3}'
    assert "1 working files differ" in capsys.readouterr().err
    assert (fresh / "netadapt/n/checkpoints/iter_003.pt").read_text() == "w3"
    assert ws.restore(tmp_path / "nothing", fresh) == []


def test_workstate_keeps_the_weights_the_kept_state_names_when_an_iteration_ends_mid_keep(tmp_path, monkeypatch):
    ws = bench_module("workstate")
    work, state = tmp_path / "work", tmp_path / "state"
    run = work / "netadapt" / "n"
    (run / "checkpoints").mkdir(parents=True)
    for name, text in (("state.json", '{"iteration": 3}'), ("checkpoints/iter_000.pt", "w0"),
                       ("checkpoints/iter_003.pt", "w3")):
        (run / name).write_text(text)
    chosen = ws.selected

    def iteration_ends_after_choosing(w):  # NetAdapt saves iteration 4 right after the weights were chosen
        out = chosen(w)
        (run / "checkpoints/iter_004.pt").write_text("w4")
        (run / "state.json").write_text('{"iteration": 4}')
        return out

    monkeypatch.setattr(ws, "selected", iteration_ends_after_choosing)
    ws.keep(work, state)
    kept = state / "netadapt" / "n"
    assert json.loads((kept / "state.json").read_text())["iteration"] == 4
    assert (kept / "checkpoints/iter_004.pt").read_text() == "w4"  # a resume from the kept state finds it


def test_workstate_keeper_keeps_on_a_timer_and_on_stop(tmp_path):
    import time

    ws = bench_module("workstate")
    work, state = tmp_path / "work", tmp_path / "state"
    (work / "runs/s").mkdir(parents=True)
    (work / "runs/s/options.json").write_text("{}")
    keeper = ws.Keeper(work, state, every_s=0.05).start()
    deadline = time.monotonic() + 10
    while not (state / "runs/s/options.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (state / "runs/s/options.json").exists()  # kept by the timer, before any stop
    (work / "runs/s/searcher.json").write_text("{}")
    keeper.stop()
    assert (state / "runs/s/searcher.json").exists()


def test_a_final_training_logs_each_fifth_of_its_steps_and_not_its_end(e2e, capsys):
    from train.loop import Progress

    progress = e2e.progress_lines("final net seed 0")
    for step in list(range(50, 1001, 50)):  # the training loop calls it every 50 steps and at the last
        progress(Progress(step, 1000, 1.5, 1e-3, step * 0.6))
    lines = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == [
        f"  final net seed 0: step {s}/1000, loss 1.500, {s * 0.01:.1f} min" for s in (200, 400, 600, 800)]
