#!/usr/bin/env python3
"""Rank fidelity of proxy evaluations: do cheap proxy trainings rank networks as a long one does?

Networks are sampled from the ``mnasnet`` space (network ``i`` is ``space.sample(NETWORK_SEED + i)``),
and each is trained in several ways ("kinds", see ``KINDS``): the long schedule on CIFAR-10
(:data:`train.recipes.LONG_SCHEDULE`, the reference), the default proxy on the embedded digits, the
same proxy settings on CIFAR-10 at 1 and 2 epochs, and a proxy run reporting validation accuracy
along the way, from which ASHA's decisions are replayed. Every training is one *unit*; each
finished unit is kept as a JSON record under ``bench/records/proxy_fidelity/<kind>/`` saying how
it was produced (recipe, data, seed, machine, load, code), so the benchmark resumes where it
stopped, in a later sitting and a fresh checkout alike.

    python bench/proxy_fidelity.py train --kinds long --networks 0-23 [--data /work/cifar10]
    python bench/proxy_fidelity.py report [--json]

Long runs belong in the background, pinned to one core:
``nohup nice -n 10 taskset -c 0 python bench/proxy_fidelity.py train ... >> LOG 2>&1 &``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORDS = ROOT / "bench" / "records" / "proxy_fidelity"
DEFAULT_CIFAR = os.environ.get("HWNAS_CIFAR10", "/work/cifar10")
SPACE = "mnasnet"
NETWORK_SEED = 100_000  # network i of the benchmark is space.sample(NETWORK_SEED + i)
RECORD_FORMAT = "hwnas-proxy-fidelity/1"
SPLIT_SEED = 0  # every kind splits its data with seed 0; a kind's seed is its training seed


@dataclass(frozen=True)
class Kind:
    """One way of training every network: the data source and the recipe."""

    name: str
    data: str  # "digits" or "cifar10"
    recipe: Any  # train.recipes.Recipe
    seed: int = 0


def kinds() -> dict[str, Kind]:
    """The kinds the report uses."""
    from train.recipes import LONG_SCHEDULE

    return {k.name: k for k in (
        Kind("long", "cifar10", LONG_SCHEDULE),
    )}


PROXY_BASE = dict(epochs=2.0, batch_size=32, lr=3e-3, bn_recalibration_batches=5)


def kind_named(name: str) -> Kind:
    """A kind from ``kinds()``, or a proxy variant spelled ``DATA[-rRES][-eEPOCHS][-sSEED][-vVAL%][-nTRAIN]``
    (e.g. ``digits-r8-e2-s1-v25``: digits at 8 px, 2 epochs, training seed 1, 25% of the data for
    validation) on top of the proxy settings ``PROXY_BASE``."""
    from train.recipes import Recipe

    table = kinds()
    if name in table:
        return table[name]
    data, *parts = name.split("-")
    if data not in ("digits", "cifar10") or not all(p[:1] in "resvn" and p[1:] for p in parts):
        raise ValueError(f"unknown kind {name!r}; use {', '.join(table)} or DATA[-rRES][-eEPOCHS][-sSEED][-vVAL%][-nTRAIN]")
    fields = dict(PROXY_BASE)
    seed = 0
    for p in parts:
        key, value = p[0], p[1:]
        if key == "r":
            fields["resolution"] = int(value)
        elif key == "e":
            fields["epochs"] = float(value)
        elif key == "v":
            fields["val_fraction"] = int(value) / 100
        elif key == "n":
            fields["train_images"] = int(value)
        else:
            seed = int(value)
    return Kind(name, data, Recipe(name=name, **fields), seed)


def network_tokens(i: int) -> list[int]:
    from space.searchspace import get_space

    return get_space(SPACE).sample(NETWORK_SEED + i)


def parse_range(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def record_path(kind: str, i: int) -> Path:
    return RECORDS / kind / f"net_{i:03d}.json"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    import torch

    from latency.runner import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


_DATA: dict[tuple, Any] = {}


def data_for(kind: Kind, cifar: str):
    from train.recipes import load_recipe_data

    source = cifar if kind.data == "cifar10" else kind.data
    r = kind.recipe
    key = (source, r.train_images, r.eval_images, r.resolution, r.val_fraction)
    if key not in _DATA:
        _DATA.clear()  # one data set in memory at a time
        _DATA[key] = load_recipe_data(source, r, seed=SPLIT_SEED)
    return _DATA[key]


def train_unit(kind: Kind, i: int, cifar: str) -> dict[str, Any]:
    """Train network ``i`` the ``kind`` way and return its record."""
    from space.builder import build_model
    from space.cost import cost
    from space.proxy import proxy_spec
    from space.searchspace import get_space
    from train.recipes import train_with_recipe

    data = data_for(kind, cifar)
    tokens = network_tokens(i)
    spec = get_space(SPACE).decode(tokens, **data.spec_kwargs())
    trained, plan = proxy_spec(spec, data.resolution)
    load0, start = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    result = {**train_with_recipe(build_model(trained), data, kind.recipe, seed=kind.seed).to_dict(),
              "proxy": plan.to_dict()}
    return {
        "format": RECORD_FORMAT, "kind": kind.name, "network": i, "space": SPACE,
        "tokens": "-".join(map(str, tokens)), "seed": kind.seed, "split_seed": SPLIT_SEED,
        "data": {**data.describe(), "source": kind.data}, "recipe": kind.recipe.to_dict(),
        "proxy_params": cost(trained).params, "proxy_macs": cost(trained).macs,
        "result": result, "started": start, "loadavg_1m": [load0, os.getloadavg()[0]],
        "machine": machine(), "code": git_commit(), "script": "bench/proxy_fidelity.py",
    }


def write_record(path: Path, doc: dict[str, Any]) -> None:
    from space.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    try:
        table = {k: kind_named(k) for k in args.kinds}
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    for i in parse_range(args.networks):
        for name in args.kinds:
            path = record_path(name, i)
            if path.exists():
                continue
            t0 = time.perf_counter()
            doc = train_unit(table[name], i, args.data)
            write_record(path, doc)
            r = doc["result"]
            print(f"{time.strftime('%H:%M:%S')} {name} net {i}: accuracy {r['accuracy']:.4f} "
                  f"({r['eval_split']}), {r['seconds']:.0f} s training, {time.perf_counter() - t0:.0f} s in all, "
                  f"load {doc['loadavg_1m'][0]:.1f}-{doc['loadavg_1m'][1]:.1f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the missing units (resumable)")
    t.add_argument("--kinds", nargs="+", default=["long"])
    t.add_argument("--networks", default="0-23", help="network indices, e.g. 0-23 or 0-5,9")
    t.add_argument("--data", default=DEFAULT_CIFAR, help="extracted CIFAR-10 ImageFolder (train/ and test/)")
    t.set_defaults(func=cmd_train)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
