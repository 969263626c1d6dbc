#!/usr/bin/env python3
"""Does the search's proxy rank the end-to-end benchmark's final networks as their final training does?

The end-to-end benchmark (``bench/end_to_end.py``) trains its final networks on the long recipe and
scores them on the test images. Its searches chose networks by a much shorter proxy training. When
a width-scaled reference beats the searched network after the final training, either the space
holds nothing better at that latency or the proxy could not see the difference. This script trains
every final network of a finished run *as the search trained its trials* (the run's own
``options.json``: epochs, batch size, learning rate, training images, validation images, split
seed) and reports, per network, the proxy's validation accuracy beside the final test accuracy,
and the rank correlation between the two.

Kinds of proxy (``--kind``): ``search`` is the run's proxy as it was; ``images4x`` the same with
four times the training images (the same number of epochs, so four times the steps), one candidate
for a proxy that sees capacity. The validation images are the search's (never trained on by the
proxy nor by the final training); the test images are not read here.

    python bench/end_to_end_proxy.py train --records bench/records/end_to_end_v3 --kind search --seeds 3
    python bench/end_to_end_proxy.py report --records bench/records/end_to_end_v3 [--json]

Every training is kept as a JSON record under ``<records>/proxy_check/<kind>/`` and skipped when
present, so the script resumes. A choice of proxy read from these records is read off the final
networks' *test* accuracies: settle a proxy for a later run on other networks
(``bench/proxy_fidelity.py``) and use these figures as a diagnosis only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import end_to_end as e2e  # noqa: E402  (a bench script, not a package)

e2e.repo_first()

from common.errors import UserError  # noqa: E402

SCRIPT = "bench/end_to_end_proxy.py"
KINDS = {"search": 1, "images4x": 4}  # proxy kind -> training images as a multiple of the search's


def search_options(records: Path) -> dict[str, Any]:
    """The controller search's options as it ran (kept in the records' working state)."""
    p = e2e.state_dir(records) / "runs" / "e2e-controller" / "options.json"
    if not p.exists():
        raise UserError(f"{p} not found: give the --records folder of a finished end-to-end run")
    return json.loads(p.read_text())


def unit_name(kind: str, name: str, seed: int) -> str:
    """A training's record name, under ``<records>/proxy_check/<kind>/``."""
    return f"proxy_check/{kind}/{name}_s{seed}"


def train_units(records: Path, kind: str, seeds: int, data: str, shard: tuple[int, int]) -> None:
    import torch

    from space.builder import build_model
    from train.data import load_data
    from train.loop import Training

    opts, nets = search_options(records), e2e.final_networks(records)
    if not e2e.final_set_complete(records):
        raise UserError(f"{records}: the run's final networks are not all known yet; finish its width stage first")
    limit = int(opts["data_limit"]) * KINDS[kind]
    bundle = None
    torch.set_num_threads(1)  # as the search's trials trained
    for seed, name in e2e.final_units(list(nets), seeds, shard):
        unit = unit_name(kind, name, seed)
        if e2e.read_record(unit, records):
            continue
        bundle = bundle or load_data(data, seed=opts["split_seed"], limit=limit, eval_limit=opts["eval_limit"],
                                     train_resolution=e2e.RESOLUTION)
        t0, l0, c0 = time.time(), os.getloadavg()[0], time.process_time()
        torch.manual_seed(seed)
        model = build_model(e2e.load_spec(nets[name]))
        run = Training(model, bundle, epochs=float(opts["epochs"]), batch_size=int(opts["batch_size"]),
                       lr=float(opts["lr"]), seed=seed, augment=bool(opts["augment"]), bn_recalibration_batches=5)
        res = run.finish("val", opts["eval_limit"])
        doc = e2e.save(unit, {"network": name, "kind": kind, "seed": seed, "train_images": limit,
                              "epochs": float(opts["epochs"]), "batch_size": int(opts["batch_size"]),
                              "lr": float(opts["lr"]), "eval_images": opts["eval_limit"],
                              "split_seed": opts["split_seed"], "data": bundle.describe(),
                              "val_accuracy": float(res.accuracy), "steps": int(res.steps),
                              "cpu_seconds": round(time.process_time() - c0, 1)},
                       records, t0, l0, fmt="hwnas-end-to-end-proxy/1", script=SCRIPT)
        e2e.log(f"proxy {kind} {name} seed {seed}: val accuracy {res.accuracy:.4f} ({doc['seconds']:.0f} s)")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    import pandas as pd

    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def report(records: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"kinds": {}}
    for kind in KINDS:
        folder = records / "proxy_check" / kind
        by: dict[str, list[float]] = {}
        for p in sorted(folder.glob("*.json")) if folder.exists() else []:
            doc = json.loads(p.read_text())
            by.setdefault(doc["network"], []).append(doc["val_accuracy"])
        if not by:
            continue
        rows = []
        for name, accs in by.items():
            m, sd = e2e.mean_std(accs)
            fm, fsd = e2e.mean_std(e2e.final_accuracies(name, records))
            rows.append({"network": name, "proxy": m, "proxy_std": sd, "seeds": len(accs), "final": fm,
                         "final_std": fsd})
        rows.sort(key=lambda r: -r["final"] if r["final"] == r["final"] else 1.0)  # untrained ones (NaN) last
        names = [r["network"] for r in rows]
        out["kinds"][kind] = {
            "rows": rows,
            "spearman": spearman([r["proxy"] for r in rows], [r["final"] for r in rows]) if len(rows) > 2 else None,
            "final_order": names,
            "proxy_order": [r["network"] for r in sorted(rows, key=lambda r: -r["proxy"])],
        }
    return out


def pct(m: float, sd: float) -> str:
    """A mean and its spread in percent; no spread is claimed for one training (NaN)."""
    return f"{100 * m:.2f}" + (f" ± {100 * sd:.2f}" if sd == sd else "")


def markdown(rep: dict[str, Any]) -> str:
    lines = []
    for kind, k in rep["kinds"].items():
        lines += [f"proxy `{kind}` (Spearman with the final accuracy: {k['spearman']:.2f})" if k["spearman"] is not None
                  else f"proxy `{kind}`", "",
                  "| network | proxy val accuracy % (mean ± std) | seeds | final test accuracy % (mean ± std) |",
                  "|---|---|---|---|"]
        for r in k["rows"]:
            lines.append(f"| {r['network']} | {pct(r['proxy'], r['proxy_std'])} | {r['seeds']} "
                         f"| {pct(r['final'], r['final_std'])} |")
        lines.append("")
    return "\n".join(lines) if lines else "no proxy trainings recorded yet"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train the missing units (resumable)")
    tr.add_argument("--records", type=Path, required=True, help="a finished end-to-end run's records folder")
    tr.add_argument("--kind", choices=sorted(KINDS), default="search")
    tr.add_argument("--seeds", type=int, default=3)
    tr.add_argument("--data", default=e2e.DEFAULT_CIFAR, help="CIFAR-10 in ImageFolder layout (default: %(default)s)")
    tr.add_argument("--shard", default="0/1", metavar="K/N", help="train every N-th unit from the K-th (0-based)")
    rp = sub.add_parser("report", help="proxy against final accuracy, per network")
    rp.add_argument("--records", type=Path, required=True)
    rp.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "train":
            if a.seeds < 1:
                raise UserError(f"--seeds {a.seeds}: give 1 or more")
            train_units(a.records, a.kind, a.seeds, a.data, e2e.parse_shard(a.shard))
        else:
            rep = report(a.records)
            print(json.dumps(rep, indent=1) if a.json else markdown(rep))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
