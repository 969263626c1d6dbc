#!/usr/bin/env python3
"""Which filters should a NetAdapt trim keep: the largest L2 norm (NetAdapt, Yang et al. 2018) or the
largest BatchNorm scale (network slimming, Liu et al. 2017)?

For each network and training seed: train the network on the data (digits at 8x8 by default, or a
CIFAR-10 folder at 32x32) as NetAdapt trains it (the proxy network with early strides at 1, see
``space.proxy``), then for every proposal group of it and every cut fraction,
trim the group to that fraction of its channels (multiples of 8) once per importance rule and score
the validation accuracy right after the trim and after ``--steps`` fine-tune steps (both rules on
the same batches). One row per (network, seed, group, fraction, rule) goes to
``--records``/rows.jsonl as it finishes, so that a stopped run resumes where it was; the summary
pairs the two rules on each (network, seed, group, fraction) and prints the mean difference, its
standard error and how often each rule wins, overall and per network.

The networks and seeds here are not the ones NetAdapt's headline runs report on (MobileNetV3-Small
on digits with split seed 0; the end-to-end CIFAR-10 benchmark's searched networks).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file is named like the package it benchmarks: put the repository, not bench/, first on the path.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RULES = ("l2", "bn")


def trained_seed(arch: str, width: float, data, seed: int, epochs: float, batch_size: int, work: Path):
    """The network trained from scratch (kept in ``work`` so that a resumed run does not train it again)."""
    import torch

    from netadapt.runner import model_for_data
    from space.references import reference
    from train.loop import train_model
    from train.weights import load_weights, save_weights

    spec = replace(reference(arch, width), num_classes=data.num_classes, in_channels=data.in_channels)
    path = work / f"{data.name}-{arch}-x{width:g}-seed{seed}.pt"
    torch.manual_seed(seed)
    model = model_for_data(spec, data)
    if path.exists():
        model.load_state_dict(load_weights(path))
    else:
        r = train_model(model, data, epochs=epochs, batch_size=batch_size, seed=seed, augment=True)
        print(f"[{arch} x{width:g} seed {seed}] trained: val accuracy {r.accuracy:.4f} ({r.seconds:.0f} s)",
              file=sys.stderr, flush=True)
        save_weights(model, path)
    return spec, {k: v.clone() for k, v in model.state_dict().items()}


def trim_and_score(spec, state, group, n: int, rule: str, data, steps: int, batch_size: int, lr: float, seed: int,
                   eval_limit: int | None) -> dict:
    from netadapt.runner import model_for_data
    from netadapt.surgery import shrink
    from train.loop import evaluate, train_model

    small, small_state, _ = shrink(spec, state, group, n, rule)
    model = model_for_data(small, data)
    model.load_state_dict(small_state)
    acc0 = evaluate(model, data, "val", limit=eval_limit)
    r = train_model(model, data, steps=steps, lr=lr, batch_size=batch_size, warmup=0.0, seed=seed, eval_split="val",
                    eval_limit=eval_limit, bn_recalibration_batches=5)
    return {"acc_trim": acc0, "acc_tuned": r.accuracy}


def summarize(rows: list[dict]) -> dict:
    import numpy as np

    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((r["data"], r["arch"], r["seed"], r["group"], r["fraction"]), {})[r["rule"]] = r
    pairs = [v for v in by_key.values() if set(v) == set(RULES)]
    out = {}
    subsets = [("all", pairs)]
    for field in ("arch", "seed"):  # per network, per seed
        subsets += [(f"{field} {v}", [p for p in pairs if p["l2"][field] == v]) for v in sorted({p["l2"][field] for p in pairs})]
    for subset_name, subset in subsets:
        for when in ("acc_trim", "acc_tuned"):
            d = np.array([p["bn"][when] - p["l2"][when] for p in subset])
            if not len(d):
                continue
            out[f"{subset_name}/{when}"] = {
                "pairs": len(d), "mean_bn_minus_l2": float(d.mean()),
                "se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan"),
                "bn_wins": int((d > 0).sum()), "l2_wins": int((d < 0).sum()), "ties": int((d == 0).sum())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits", help="digits (default) or an extracted CIFAR-10 ImageFolder")
    ap.add_argument("--archs", nargs="+", default=["mobilenet_v2:0.5", "mnasnet_a1:0.5"], metavar="NAME:WIDTH")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2, 3], help="split and training seeds")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.5], help="channels kept")
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--seed-epochs", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=10, help="fine-tune steps after each trim (NetAdapt's T)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--records", default=str(ROOT / "bench" / "records" / "netadapt_importance"))
    ap.add_argument("--work", default=str(ROOT / "results" / "bench_importance"), help="trained seeds (not committed)")
    ap.add_argument("--summary-only", action="store_true", help="print the summary of the records and stop")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    records = Path(args.records)
    rows_path = records / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()] if rows_path.exists() else []
    if not args.summary_only:
        import torch

        from netadapt.groups import CHANNEL_STEP, proposal_groups
        from train.data import load_data

        torch.set_num_threads(1)
        records.mkdir(parents=True, exist_ok=True)
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        done = {(r["data"], r["arch"], r["width"], r["seed"], r["group"], r["fraction"], r["rule"]) for r in rows}
        for seed in args.seeds:
            data = load_data(args.data, seed=seed, limit=args.train_limit, eval_limit=args.eval_limit)
            for item in args.archs:
                arch, _, w = item.partition(":")
                width = float(w or 1.0)
                spec, state = trained_seed(arch, width, data, seed, args.seed_epochs, args.batch_size, work)
                for g in proposal_groups(spec):
                    c = g.channels(spec)
                    for f in args.fractions:
                        n = max(CHANNEL_STEP, round(f * c / CHANNEL_STEP) * CHANNEL_STEP)
                        if n >= c:
                            continue
                        for rule in RULES:
                            if (data.name, arch, width, seed, g.name, f, rule) in done:
                                continue
                            t0 = time.perf_counter()
                            res = trim_and_score(spec, state, g, n, rule, data, args.steps, args.batch_size, args.lr,
                                                 seed, args.eval_limit)
                            row = {"data": data.name, "arch": arch, "width": width, "seed": seed, "group": g.name, "channels": c,
                                   "kept": n, "fraction": f, "rule": rule, **res, "steps": args.steps,
                                   "val_images": len(data.val), "train_images": len(data.train),
                                   "seconds": time.perf_counter() - t0}
                            with rows_path.open("a") as fh:
                                fh.write(json.dumps(row) + "\n")
                            rows.append(row)
                            print(f"[{arch} x{width:g} seed {seed}] {g.name} {c} -> {n} {rule}: {res['acc_trim']:.4f} "
                                  f"-> {res['acc_tuned']:.4f}", file=sys.stderr, flush=True)
    summary = summarize(rows)
    machine = {"machine": platform.machine(), "python": platform.python_version()}
    if args.json:
        print(json.dumps({"args": vars(args), "summary": summary, "machine": machine}, indent=2))
    else:
        print(f"{'subset / when':<28} {'pairs':>5} {'bn - l2':>9} {'SE':>7} {'bn wins':>7} {'l2 wins':>7} {'ties':>5}")
        for k, v in summary.items():
            print(f"{k:<28} {v['pairs']:>5} {v['mean_bn_minus_l2']:>+9.4f} {v['se']:>7.4f} {v['bn_wins']:>7} "
                  f"{v['l2_wins']:>7} {v['ties']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
