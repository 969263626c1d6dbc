"""Validation: how well each predictor tracks end-to-end measurements of networks it never saw.

Three predictors are scored on the same held-out networks: (a) a FLOPs-linear fit
``ms = a * MACs + b`` fitted on the calibration networks, (b) the plain per-unit sum (lookup table
+ per-op model, no calibration; what ProxylessNAS/FBNet-style tables give) and (c) the full
calibrated predictor.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import save_png
from space.archspec import ArchSpec

VALIDATION_SEED = 9_000_000  # a seed stream of its own, apart from the calibration networks'


def metrics(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    """Share within +/-5% and +/-10%, MAPE (%), RMSE (ms), Spearman and Kendall rank correlation."""
    from scipy.stats import kendalltau, spearmanr

    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    rel = (pred - meas) / meas
    n = len(meas)
    rank_ok = n >= 3 and np.ptp(pred) > 0 and np.ptp(meas) > 0
    return {
        "n": int(n),
        "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "mape": float(np.mean(np.abs(rel)) * 100),
        "rmse": float(math.sqrt(np.mean((pred - meas) ** 2))),
        "spearman": float(spearmanr(pred, meas)[0]) if rank_ok else float("nan"),
        "kendall": float(kendalltau(pred, meas)[0]) if rank_ok else float("nan"),
    }


@dataclass
class FlopsLinear:
    """Baseline (a): latency linear in MACs, fitted on the calibration networks."""

    a: float
    b: float

    @classmethod
    def fit(cls, specs: list[ArchSpec], ms: np.ndarray) -> FlopsLinear:
        from space.cost import cost

        macs = np.array([cost(s).macs for s in specs], float)
        A = np.stack([macs, np.ones_like(macs)], axis=1) / ms[:, None]
        (a, b), *_ = np.linalg.lstsq(A, np.ones_like(ms), rcond=None)
        return cls(float(a), float(b))

    def predict(self, specs: list[ArchSpec]) -> np.ndarray:
        from space.cost import cost

        return np.array([self.a * cost(s).macs + self.b for s in specs], float)


def heldout_specs(space_name: str, resolution: int, n: int, exclude: set[str], seed: int = VALIDATION_SEED,
                  num_classes: int = 1000) -> list[ArchSpec]:
    """``n`` distinct networks of the space none of which is in ``exclude`` (spec JSON strings)."""
    from space.searchspace import get_space

    space = get_space(space_name)
    rng = np.random.default_rng(seed + resolution)
    out: dict[str, ArchSpec] = {}
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        spec = space.decode(space.sample(rng), resolution=resolution, num_classes=num_classes)
        if spec.to_json(indent=None) not in exclude:
            out.setdefault(spec.name, spec)
    return list(out.values())


def validate(device: str = "local-cpu", space: str = "mnasnet", resolution: int = 224, n: int = 100,
             seed: int = VALIDATION_SEED, threads: int = 1, provider: str = "cpu", plot: str | Path | None = None,
             progress: bool = True, runs: int | None = None, passes: int | None = None) -> dict[str, Any]:
    """Measure ``n`` unseen networks end to end (each keeps its quietest of ``passes`` passes over
    the list) and score the three predictors on them."""
    import pandas as pd

    from latency.files import check_compatible, device_dir, load_networks, local_environment, units_path
    from latency.load import check_table, load_predictor
    from latency.units import MEASURE_PASSES, NET_RUNS, NET_WARMUP, measure_networks
    from space.searchspace import get_space

    # Everything is checked before the predictor is refitted (which writes) and minutes of measuring.
    get_space(space)
    meta = check_table(device, space, resolution, strict_version=True)
    check_compatible(units_path(device), meta, local_environment(device, threads, provider),
                     "validation measures here: run it where the table was measured, with its --threads and --provider")
    pred = load_predictor(device, space, resolution)
    nets, _ = load_networks(device)
    calib = nets[nets["resolution"] == resolution] if len(nets) else nets
    if not len(calib):
        calib = nets
    exclude = set(nets["spec"]) if len(nets) else set()
    specs = heldout_specs(space, resolution, n, exclude, seed)
    if progress:
        print(f"validating the {device} predictor on {len(specs)} held-out networks "
              f"({space}, {resolution}x{resolution}); {len(calib)} calibration networks excluded", file=sys.stderr)
    rows = measure_networks(specs, threads, provider, NET_WARMUP, runs or NET_RUNS, progress=progress,
                            desc="measuring held-out networks", passes=passes or MEASURE_PASSES)
    measured = np.array([r["median_ms"] for r in rows])
    full = pred.predict_many(specs)
    lut = pred.unit_sum_many(specs)
    cal_specs = [ArchSpec.from_json(s) for s in calib["spec"]]
    flops = FlopsLinear.fit(cal_specs, calib["median_ms"].to_numpy(float)).predict(specs) if len(cal_specs) >= 2 \
        else np.full(len(specs), np.nan)
    report = {
        "device": device, "space": space, "resolution": resolution, "n": len(specs),
        "calibration_networks": int(len(calib)), "calibration": pred.calibration.kind, **metrics(full, measured),
        "baselines": {"flops": metrics(flops, measured), "lut_sum": metrics(lut, measured)},
    }
    out_dir = device_dir(device)
    frame = pd.DataFrame({"name": [s.name for s in specs], "measured_ms": measured, "predicted_ms": full,
                          "lut_sum_ms": lut, "flops_ms": flops,
                          "spread": [r["spread"] for r in rows], "spec": [s.to_json(indent=None) for s in specs]})
    from common.atomic import atomic_write_text

    csv_path = atomic_write_text(out_dir / f"validation-{space}-r{resolution}.csv", frame.to_csv(index=False))
    png = Path(plot) if plot else out_dir / f"validation-{space}-r{resolution}.png"
    scatter_png(png, measured, {"predictor": full, "table sum": lut, "FLOPs-linear": flops},
                f"{device}: {len(specs)} held-out {space} networks at {resolution}")
    report["csv"], report["plot"] = str(csv_path), str(png)
    return report


def scatter_png(path: str | Path, measured: np.ndarray, preds: dict[str, np.ndarray], title: str) -> Path:
    """Predicted-vs-measured scatter with the +/-10% band, written atomically."""
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo = float(np.nanmin([measured.min(), *[np.nanmin(v) for v in preds.values()]])) * 0.9
    hi = float(np.nanmax([measured.max(), *[np.nanmax(v) for v in preds.values()]])) * 1.1
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.85", label="+/-10%")
    for (label, v), m in zip(preds.items(), ("o", "x", "+")):
        ax.scatter(measured, v, s=14, marker=m, label=label, alpha=0.8)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, p)
