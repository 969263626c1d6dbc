#!/usr/bin/env python3
"""Which proxy ranks networks of one latency as the final training does?

The third end-to-end run on CIFAR-10 (docs/benchmarks.md) lost to a width-scaled MobileNetV1 at equal
latency, and its search's proxy (4 epochs on 5,000 images) ranked the networks that decided it the
other way round from the final training (15 epochs on 20,000 images): it undervalued the wide ones.
This benchmark chooses the next run's proxy on networks that play no part in that run or in any
earlier one, and against the schedule that run's final stage uses:

- the networks: samples of ``mnasnet_cifar_wide`` (the space whose late stages reach 4x the
  skeleton's widths) whose latency at 32x32, measured with onnxruntime side by side with
  MobileNetV3-Large 1.0's (the end-to-end target network), lies within :data:`BAND` of it, so that
  they differ in what a search at that budget must tell apart, not in size. ``select`` fixes them
  once in ``networks.json`` (tokens, measured latencies, machine); every later sitting, on any
  machine, trains the same ones. (Measured rather than predicted: ratios timed side by side need no
  latency table, and when the networks were chosen a quick table of this space took over an hour.)
- the truth, ``final20k``: the end-to-end final recipe (15 epochs on 20,000 class-balanced training
  images, batch 64, AdamW, cosine, label smoothing, crop and flip), scored on 2,000 validation
  images from the rest of the training set. No test image is read.
- the candidate proxies, declared here before any of their figures existed: :data:`PROXIES`.

Every training is a unit kept as a JSON record in ``bench/records/proxy_capacity/<kind>/``; ``train``
skips what is there, and a ``final20k`` training keeps its state at every epoch's end under
``results/proxy_capacity/`` so that a stopped one goes on, on the same machine.

    python bench/proxy_capacity.py select                 # once: times candidates against the target
    python bench/proxy_capacity.py train --networks 0-15   # resumable; two processes: 0,2,4,... and 1,3,5,...
    python bench/proxy_capacity.py report [--json] [--plot docs/img/proxy_capacity.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import end_to_end as e2e  # noqa: E402  (a bench script, not a package)

e2e.repo_first()  # bench/ off the path again: bench/latency.py would shadow the latency package
pf = e2e._bench_module("proxy_fidelity")  # kinds, training and rank statistics of the first fidelity study

RECORDS = BENCH / "records" / "proxy_capacity"
WORK = e2e.ROOT / "results" / "proxy_capacity"
FORMAT = "hwnas-proxy-capacity/1"
SPACE = "mnasnet_cifar_wide"
NETWORK_SEED = 300_000  # candidate j is space.sample(NETWORK_SEED + j); the proxy fidelity study used 100,000+
BAND = (0.8, 1.2)  # measured latency over the target network's, both timed in one run
MACS_BAND = (0.25, 4.0)  # candidates outside it are not timed
N_NETWORKS = 16
TRUTH = "final20k"
# Declared before any figure: the search's proxy as it is (4 epochs, 5,000 images), and the same
# settings on four times the images for half and for all of the epochs (2x and 4x its cost).
PROXIES = ("cifar10-e4", "cifar10-e2-n20000", "cifar10-e4-n20000")


def truth_kind():
    from train.recipes import LONG_SCHEDULE

    recipe = LONG_SCHEDULE.with_changes(name=TRUTH, train_images=20000, eval_split="val")
    return pf.Kind(TRUTH, "cifar10", recipe)


def kind_named(name: str):
    return truth_kind() if name == TRUTH else pf.kind_named(name)


def networks_path(records: Path = RECORDS) -> Path:
    return records / "networks.json"


def read_networks(records: Path = RECORDS) -> list[dict[str, Any]]:
    from common.errors import UserError

    path = networks_path(records)
    if not path.exists():
        raise UserError(f"no {path}; run `python bench/proxy_capacity.py select` first (it fixes the networks)")
    return json.loads(path.read_text())["networks"]


def select(measure, n: int = N_NETWORKS, band: tuple[float, float] = BAND, seed: int = NETWORK_SEED,
           max_draws: int = 5000, batch: int = 8, macs_band: tuple[float, float] = MACS_BAND,
           progress=None, space: str = SPACE) -> dict[str, Any]:
    """The first ``n`` samples of ``space`` (in draw order from ``seed``) whose latency at 32x32 over
    the target network's lies within ``band``. ``measure`` times a list of specs side by side and
    returns their ms; each call holds the target network first and up to ``batch`` candidates, so that
    every ratio comes from one run. Candidates whose MACs lie outside ``macs_band`` times the target's
    are skipped untimed (far outside any band here; timing them would cost minutes). ``progress`` gets
    a line after each call."""
    from space.cost import cost
    from space.searchspace import get_space

    sp = get_space(space)
    target = e2e.reference_net(*e2e.TARGET_REFERENCE)
    target_macs = cost(target).macs
    chosen: list[dict[str, Any]] = []
    timed, anchors, j = 0, [], 0
    while j < max_draws:
        cands = []
        while len(cands) < batch and j < max_draws:
            tokens = sp.sample(seed + j)
            spec = e2e.searched_net(tokens, space)
            if macs_band[0] <= cost(spec).macs / target_macs <= macs_band[1]:
                cands.append((j, tokens, spec))
            j += 1
        if not cands:
            break
        ms = [float(m) for m in measure([target] + [c[2] for c in cands])]
        timed += len(cands)
        anchors.append(ms[0])
        if progress:
            progress(f"draws 0-{j - 1}: {timed} timed, target {ms[0]:.3f} ms, ratios "
                     + " ".join(f"{m / ms[0]:.2f}" for m in ms[1:]))
        for (draw, tokens, _), m in zip(cands, ms[1:]):
            if band[0] <= m / ms[0] <= band[1]:
                chosen.append({"index": len(chosen), "draw": draw, "tokens": "-".join(map(str, tokens)),
                               "ms": round(m, 4), "target_ms": round(ms[0], 4), "ratio": round(m / ms[0], 4)})
                if len(chosen) == n:
                    return {"draws": draw + 1, "timed": timed, "target_ms_median": float(np.median(anchors)),
                            "networks": chosen}
    raise ValueError(f"only {len(chosen)} of {j} draws lie within {band} of the target's latency")


def measure_side_by_side(specs: list) -> list[float]:
    """``specs`` timed together with onnxruntime (one thread), their blocks interleaved: 2 sessions."""
    from latency.measure import export_spec, time_models

    return [s.latency_ms for s in time_models([export_spec(s) for s in specs], sessions=2)]


def cmd_select(args: argparse.Namespace) -> int:
    from common.atomic import atomic_write_text

    path = networks_path(args.records)
    if path.exists():
        print(f"the networks are fixed already in {path}; delete it only to start a new study")
        return 0
    t0 = time.time()
    doc = select(measure_side_by_side, args.n, progress=lambda line: print(f"{time.strftime('%H:%M:%S')} {line}", flush=True))
    doc = {"format": FORMAT, "space": SPACE, "network_seed": NETWORK_SEED, "band": list(BAND), "macs_band": list(MACS_BAND),
           "target_network": list(e2e.TARGET_REFERENCE), **doc, "seconds": round(time.time() - t0, 1),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": pf.machine(), "code": pf.git_commit()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    print(f"{len(doc['networks'])} networks from {doc['draws']} draws ({doc['timed']} timed) within {BAND[0]}-{BAND[1]}x "
          f"the target's latency (median {doc['target_ms_median']:.3f} ms) -> {path}")
    return 0


def record_path(kind: str, i: int, records: Path = RECORDS) -> Path:
    return records / kind / f"net_{i:03d}.json"


def expected_seconds(kind, records: Path = RECORDS, network: int | None = None) -> float | None:
    """How long a training of ``kind`` takes: the median of its records, else the median seconds per
    image seen (epochs x training images) of every other record times its own; None without records.

    With ``network``, that network's own cost where the records show it: its time for another kind
    times the median ratio of the two kinds' times on the networks that have both, the median of
    that over the other kinds, since the networks differ up to 5x in cost at one latency."""
    own = [d["result"]["seconds"] for d in load_kind(kind.name, records).values()]
    if network is not None and (scaled := _scaled_from_other_kinds(kind.name, network, records)) is not None:
        return scaled
    if own:
        return float(np.median(own))
    per_image = [d["result"]["seconds"] / (d["recipe"]["epochs"] * d["data"]["train"])
                 for p in records.glob("*/net_*.json") for d in [json.loads(p.read_text())]]
    if not per_image:
        return None
    return float(np.median(per_image)) * kind.recipe.epochs * (kind.recipe.train_images or 0)


def _scaled_from_other_kinds(name: str, network: int, records: Path) -> float | None:
    secs = {p.name: {i: d["result"]["seconds"] for i, d in load_kind(p.name, records).items()}
            for p in records.iterdir() if p.is_dir()} if records.is_dir() else {}
    mine = secs.get(name, {})
    guesses = []  # one per other kind that this network and some network with both kinds have
    for other, theirs in secs.items():
        if other == name or network not in theirs:
            continue
        pairs = [mine[j] / theirs[j] for j in mine if j in theirs and j != network and theirs[j] > 0]
        if pairs:
            guesses.append(float(np.median(pairs)) * theirs[network])
    return float(np.median(guesses)) if guesses else None


def paced(need: float | None, ratios: list[float]) -> float | None:
    """``need`` (from :func:`expected_seconds`) times the median of this sitting's ratios of a finished
    training's seconds to what was expected of it: the records may come from a faster or a slower
    machine than this one."""
    if need is None or not ratios:
        return need
    return need * float(np.median(ratios))


def parse_deadline(text: str, now: float | None = None) -> float:
    """``HH:MM`` (UTC) as epoch seconds: today's, or tomorrow's when today's has passed by more than 12 hours."""
    import calendar

    from common.errors import UserError

    try:
        hh, mm = (int(x) for x in text.split(":"))
        if not (0 <= hh < 24 and 0 <= mm < 60):
            raise ValueError
    except ValueError:
        raise UserError(f"--deadline {text!r} must be a UTC time HH:MM, e.g. 06:50") from None
    now = time.time() if now is None else now
    day = time.gmtime(now)
    at = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, hh, mm, 0))
    return at + 86400 if at < now - 12 * 3600 else at


def training_order(networks: list[int], kinds: dict[str, Any], records: Path = RECORDS,
                   longest_first: bool = False) -> list[tuple[int, str, Any]]:
    """(network, kind name, kind) in the order to train: each network's kinds in turn, or with
    ``longest_first`` the kinds expected to take longest first (so that a sitting starts its long
    trainings while it has the time for them), each kind's networks in order."""
    units = [(i, name, kind) for i in networks for name, kind in kinds.items()]
    if not longest_first:
        return units
    expected = {name: expected_seconds(kind, records) or 0.0 for name, kind in kinds.items()}
    return sorted(units, key=lambda u: -expected[u[1]])


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from common.errors import UserError

    try:
        kinds = {k: kind_named(k) for k in args.kinds}
    except ValueError as e:
        raise UserError(str(e)) from None
    nets = read_networks(args.records)
    wanted = pf.parse_range(args.networks)
    if bad := [i for i in wanted if not 0 <= i < len(nets)]:
        raise UserError(f"network {bad[0]} is not in {networks_path(args.records)} (0-{len(nets) - 1})")
    deadline = parse_deadline(args.deadline) if args.deadline else None
    torch.set_num_threads(1)
    pace: list[float] = []  # this sitting's seconds over what was expected, per finished training
    for i, name, kind in training_order(wanted, kinds, args.records, args.longest_first):
        path = record_path(name, i, args.records)
        if path.exists():
            continue
        # A training that would run past the deadline is not started (one cut off is lost with the
        # machine); cheaper units after it still are.
        expected = expected_seconds(kind, args.records, i)
        need = paced(expected, pace)
        if deadline is not None and need is not None and time.time() + need > deadline:
            at = f" (this sitting's pace: x{need / expected:.2f} the records')" if pace else ""
            print(f"{time.strftime('%H:%M:%S')} {name} net {i}: not started, about {need:.0f} s{at} would run past "
                  f"the deadline {args.deadline} UTC", flush=True)
            continue
        t0 = time.perf_counter()
        until = f", until about {time.strftime('%H:%M', time.gmtime(time.time() + need))} UTC" if need else ""
        print(f"{time.strftime('%H:%M:%S')} {name} net {i}: started, expected about {(need or 0) / 60:.0f} min{until}",
              flush=True)
        kept = args.work / name / f"net_{i:03d}.pt" if not kind.curve else None
        tokens = [int(t) for t in nets[i]["tokens"].split("-")]
        doc = {"format": FORMAT, "kind": name, "network": i,
               **pf.train_tokens(kind, tokens, SPACE, args.data, kept, e2e.progress_lines(f"{name} net {i}")),
               "script": "bench/proxy_capacity.py"}
        pf.write_record(path, doc)
        r = doc["result"]
        if expected:
            pace.append(r["seconds"] / expected)
        print(f"{time.strftime('%H:%M:%S')} {name} net {i}: accuracy {r['accuracy']:.4f} ({r['eval_split']}), "
              f"{r['seconds']:.0f} s training, {time.perf_counter() - t0:.0f} s in all, "
              f"load {doc['loadavg_1m'][0]:.1f}-{doc['loadavg_1m'][1]:.1f}", flush=True)
    return 0


# ---- the report --------------------------------------------------------------------------------------

load_kind = pf.load_records  # a kind's records by network index


def accuracy(docs: dict[int, dict[str, Any]], nets: list[int]) -> list[float]:
    return [docs[i]["result"]["accuracy"] for i in nets]


def proxy_against_truth(proxy: dict[int, dict], truth: dict[int, dict]) -> dict[str, Any]:
    """Rank agreement of a proxy's accuracies with the truth's on the networks both trained; the truth's
    accuracy of the network the proxy ranks first, against the best; and how the two see size."""
    from scipy.stats import spearmanr

    nets = sorted(set(proxy) & set(truth))
    out: dict[str, Any] = {"networks": len(nets)}
    if len(nets) < 3:
        return out
    p, t = accuracy(proxy, nets), accuracy(truth, nets)
    params = [truth[i]["proxy_params"] for i in nets]
    pick = nets[int(np.argmax(p))]
    out.update({
        **pf.ranks(p, t), "kendall_90": pf.interval(pf.bootstrap_kendall([(p, t)])[:, 0]),
        "pick": pick, "pick_truth": truth[pick]["result"]["accuracy"], "best_truth": max(t),
        "pick_truth_rank": 1 + sum(x > truth[pick]["result"]["accuracy"] for x in t),
        "spearman_params": float(spearmanr(p, params).statistic),
        "proxy_accuracy": [min(p), float(np.median(p)), max(p)],
        "seconds_median": float(np.median([proxy[i]["result"]["seconds"] for i in nets])),
    })
    return out


def paired(a: dict[int, dict], b: dict[int, dict], truth: dict[int, dict]) -> dict[str, Any] | None:
    """Kendall tau with the truth of proxy ``a`` minus that of ``b``, on the same networks and resamples."""
    nets = sorted(set(a) & set(b) & set(truth))
    if len(nets) < 4:
        return None
    return pf.paired_kendall(accuracy(a, nets), accuracy(b, nets), accuracy(truth, nets))


def summarize(records: Path = RECORDS, proxies: tuple[str, ...] = PROXIES) -> dict[str, Any]:
    from scipy.stats import spearmanr

    loaded = {k: load_kind(k, records) for k in (TRUTH, *proxies)}
    truth = loaded[TRUTH]
    nets = sorted(truth)
    out: dict[str, Any] = {"truth": TRUTH, "truth_networks": len(truth), "proxies": {}, "compare": {},
                           "trained": {k: len(docs) for k, docs in loaded.items()}}
    if len(nets) >= 3:
        t = accuracy(truth, nets)
        out["truth_accuracy"] = [min(t), float(np.median(t)), max(t)]
        out["truth_spearman_params"] = float(spearmanr(t, [truth[i]["proxy_params"] for i in nets]).statistic)
        out["truth_seconds_median"] = float(np.median([truth[i]["result"]["seconds"] for i in nets]))
    for k in proxies:
        out["proxies"][k] = proxy_against_truth(loaded[k], truth)
    for a in proxies:
        for b in proxies:
            if a < b and (res := paired(loaded[a], loaded[b], truth)):
                out["compare"][f"{a} - {b}"] = res
    return out


def plot(records: Path, path: Path, proxies: tuple[str, ...] = PROXIES) -> Path:
    """One panel per proxy: its accuracy against the truth's, a point per network sized by parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = load_kind(TRUTH, records)
    fig, axes = plt.subplots(1, len(proxies), figsize=(4.2 * len(proxies), 4), squeeze=False)
    for ax, k in zip(axes[0], proxies):
        proxy = load_kind(k, records)
        nets = sorted(set(proxy) & set(truth))
        x, y = accuracy(proxy, nets), accuracy(truth, nets)
        size = [20 + 8 * truth[i]["proxy_params"] / 1e6 for i in nets]
        ax.scatter([100 * v for v in x], [100 * v for v in y], s=size, alpha=0.7)
        for i, a, b in zip(nets, x, y):
            ax.annotate(str(i), (100 * a, 100 * b), fontsize=7, xytext=(3, 3), textcoords="offset points")
        tau = f", Kendall tau {pf.ranks(x, y)['kendall']:.2f}" if len(nets) > 2 else ""
        ax.set_title(f"{k} ({len(nets)} networks{tau})", fontsize=9)
        ax.set_xlabel(f"{k} validation accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{TRUTH} validation accuracy (%)")
    fig.suptitle("proxies against the final recipe, networks within 0.8-1.2x the target's latency "
                 "(point area: parameters)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cmd_report(args: argparse.Namespace) -> int:
    rep = summarize(args.records)
    if args.plot:
        print(f"plot: {plot(args.records, args.plot)}", file=sys.stderr)
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    print("trained: " + ", ".join(f"{k} {n}" for k, n in rep["trained"].items()))
    if "truth_accuracy" in rep:
        lo, med, hi = rep["truth_accuracy"]
        print(f"{TRUTH}: {rep['truth_networks']} networks, validation accuracy {lo:.3f} / {med:.3f} / {hi:.3f} "
              f"(min / median / max), Spearman with parameters {rep['truth_spearman_params']:+.2f}, "
              f"median {rep['truth_seconds_median']:.0f} s")
    print(f"{'proxy':<20} {'n':>3} {'tau':>6} {'90% interval':>14} {'rho':>6} {'pick':>14} {'rho params':>10} {'s/net':>6}")
    for k, f in rep["proxies"].items():
        if "kendall" not in f:
            print(f"{k:<20} {f['networks']:>3}  (too few networks with both)")
            continue
        lo, hi = f["kendall_90"]
        pick = f"{f['pick_truth']:.3f} (#{f['pick_truth_rank']})"
        print(f"{k:<20} {f['networks']:>3} {f['kendall']:6.2f} {f'{lo:.2f} to {hi:.2f}':>14} {f['spearman']:6.2f} "
              f"{pick:>14} {f['spearman_params']:+10.2f} {f['seconds_median']:6.0f}")
    for k, c in rep["compare"].items():
        lo, hi = c["difference_90"]
        print(f"tau, {k}: {c['difference']:+.2f} on {c['networks']} networks (90% interval {lo:+.2f} to {hi:+.2f}; "
              f"above zero in {c['share_above_zero']:.0%} of resamples)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from common.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=Path, default=RECORDS, help=f"records folder (default {RECORDS})")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("select", help="fix the networks of the study (once)")
    s.add_argument("--n", type=int, default=N_NETWORKS)
    s.set_defaults(func=cmd_select)
    t = sub.add_parser("train", help="train the missing units (resumable)")
    t.add_argument("--kinds", nargs="+", default=[*PROXIES, TRUTH], help="in the order each network trains them")
    t.add_argument("--networks", default=f"0-{N_NETWORKS - 1}", help="indices into networks.json, e.g. 0-15 or 0,2,4")
    t.add_argument("--data", default=e2e.DEFAULT_CIFAR, help="extracted CIFAR-10 ImageFolder (train/ and test/)")
    t.add_argument("--work", type=Path, default=WORK, help=f"where trainings keep their state (default {WORK})")
    t.add_argument("--deadline", default=None, metavar="HH:MM",
                   help="UTC time by which the sitting ends: a training expected to run past it is not started")
    t.add_argument("--longest-first", action="store_true",
                   help="train the kinds expected to take longest first (default: each network's kinds in turn)")
    t.set_defaults(func=cmd_train)
    r = sub.add_parser("report", help="the proxies against the truth, from the records")
    r.add_argument("--json", action="store_true")
    r.add_argument("--plot", type=Path, default=None, help="write the proxy-against-truth scatter here")
    r.set_defaults(func=cmd_report)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
