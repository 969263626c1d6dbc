"""The validation suite: fresh networks of every family (:mod:`latency.families`), measured here end to
end and scored family by family against the predictor and two baselines, beside the machine's own
repeatability on the same networks.

A suite draws a new seed every run (recorded in its report; ``seed`` repeats one) and leaves out every
network the device's predictor was fitted or checked on: its calibration networks, the networks whose
units were sampled into its table, and its build's self-check networks.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import numpy as np

from latency import families
from space.archspec import ArchSpec

SUITE_N = 60      # networks per family in a suite
VALIDATE_N = 100  # networks of one space in a plain validation


def fresh_seed() -> int:
    return secrets.randbelow(2**31)


def used_networks(meta: dict[str, Any], nets) -> set[str]:
    """Fingerprints (:func:`latency.families.fingerprint`) of every network a device's fit or
    self-check used: its calibration networks, and those its table's metadata records (the networks
    whose units were sampled, the self-check networks)."""
    used = {families.fingerprint(ArchSpec.from_json(s)) for s in nets["spec"]} if len(nets) else set()
    return used | set(meta.get("used_networks", []))


def draw_suite(names: list[str], n: int | dict[str, int], seed: int, exclude: set[str],
               resolution: int | None = None) -> dict[str, list[ArchSpec]]:
    """``n`` fresh networks per family (or ``n[family]``), none in ``exclude`` nor in two families
    (``resolution``: see :func:`latency.families.draw`)."""
    out: dict[str, list[ArchSpec]] = {}
    taken = set(exclude)
    for f in names:
        out[f] = families.draw(f, n[f] if isinstance(n, dict) else n, seed, taken, resolution, families.fingerprint)
        taken |= {families.fingerprint(s) for s in out[f]}
    return out


def repeatability(session_spread: np.ndarray) -> dict[str, float]:
    """How well this machine agrees with itself on these networks: the share whose sessions' own
    figures lie within 5% and 10% of each other, and the median spread between sessions."""
    s = np.asarray(session_spread, float)
    return {"sessions_within_5pct": float(np.mean(s <= 0.05)), "sessions_within_10pct": float(np.mean(s <= 0.10)),
            "session_spread_median": float(np.median(s))}


def score(pred, flops, specs: list[ArchSpec], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One family's figures: the predictor's, both baselines', and the repeatability of its networks."""
    from latency.validate import metrics

    measured = np.array([r["latency_ms"] for r in rows])
    return {**metrics(pred.predict_many(specs), measured),
            "baselines": {"flops": metrics(flops.predict(specs), measured),
                          "lut_sum": metrics(pred.unit_sum_many(specs), measured)},
            "repeatability": repeatability(np.array([r["session_spread"] for r in rows]))}


def run_suite(device: str, names: list[str], n: int | dict[str, int], seed: int | None = None, threads: int = 1,
              provider: str = "cpu", plot: str | Path | None = None, progress: bool = True, passes: int | None = None,
              resolution: int | None = None, wait_s: float = 0.0, fast_within: float | None = None) -> dict[str, Any]:
    """Draw ``n`` fresh networks of each family in ``names`` (``seed``: a new one when None;
    ``resolution``: the space families' input size, default 224), measure them here, score them.
    ``wait_s`` > 0: each network measured as ``latency measure`` does, waiting up to that long for
    the machine's fast mode (:func:`latency.units.measure_networks`); ``fast_within``: the share above
    the probe's fast level at which a block still counts as fast (default 10%)."""
    import os

    import pandas as pd

    from common.atomic import atomic_write_text
    from common.cli_io import check_output_path
    from common.errors import UserError
    from latency.files import check_compatible, device_dir, load_networks, local_environment, units_path
    from latency.load import check_table, load_predictor
    from latency.measure import check_fast_within
    from latency.units import MEASURE_PASSES, measure_networks
    from latency.validate import FlopsLinear

    names = families.check_families(names)
    fast_within = check_fast_within(fast_within)
    if resolution is not None:
        off = [f for f in names if not families.movable(f)]
        if off:
            raise UserError(f"the {off[0]} family is drawn at its own resolutions; drop --resolution or that family")
    if plot:
        check_output_path(str(plot), "--plot")  # before minutes of measuring, not after
    meta = check_table(device, strict_version=True)
    check_compatible(units_path(device), meta, local_environment(device, threads, provider),
                     "validation measures here: run it where the table was measured, with its --threads and --provider")
    seed = fresh_seed() if seed is None else seed
    last = ((meta or {}).get("builds") or [{}])[-1]  # the calibration is the table's, whichever space it was built for
    pred = load_predictor(device, last.get("space", "mnasnet"), last.get("resolution", 224))
    nets, _ = load_networks(device)
    suite = draw_suite(names, n, seed, used_networks(meta or {}, nets), resolution)
    flat = [(f, s) for f, specs in suite.items() for s in specs]
    if progress:
        print(f"validation suite (seed {seed}): {', '.join(f'{len(v)} {f}' for f, v in suite.items())} networks, "
              f"none used in the fit", file=sys.stderr)
    load = [os.getloadavg()[0]]
    rows = measure_networks([s for _, s in flat], threads, provider, progress=progress, desc="measuring the suite",
                            passes=passes or MEASURE_PASSES, probe=True, wait_s=wait_s, fast_within=fast_within)
    load.append(os.getloadavg()[0])
    flops = FlopsLinear.fit([ArchSpec.from_json(s) for s in nets["spec"]], nets["latency_ms"].to_numpy(float))
    report: dict[str, Any] = {"device": device, "seed": seed, "n_per_family": n, "resolution": resolution,
                              "loadavg_1m": load, "wait_s": wait_s, "fast_within": fast_within,
                              # Networks none of whose blocks ran in the machine's fast mode (latency.probe):
                              # their figures are the fastest fifth of slow blocks.
                              "never_fast": sum(1 for r in rows if not r["fast_blocks"]),
                              "calibration": pred.calibration.kind, "calibration_networks": pred.calibration.n_networks,
                              "families": {}}
    i = 0
    for f, specs in suite.items():
        report["families"][f] = score(pred, flops, specs, rows[i:i + len(specs)])
        i += len(specs)
    measured = np.array([r["latency_ms"] for r in rows])
    specs = [s for _, s in flat]
    frame = pd.DataFrame({"family": [f for f, _ in flat], "name": [s.name for s in specs], "measured_ms": measured,
                          "predicted_ms": pred.predict_many(specs), "lut_sum_ms": pred.unit_sum_many(specs),
                          "flops_ms": flops.predict(specs), "spread": [r["spread"] for r in rows],
                          "session_spread": [r["session_spread"] for r in rows],
                          "fast_blocks": [r["fast_blocks"] for r in rows], "runs": [r["runs"] for r in rows],
                          # The probe's fast level beside each network's blocks: how the machine's own
                          # level moved over the suite (a drift the figures share).
                          "probe_ms": [r["probe_ms"] for r in rows], "fast_within": fast_within,
                          "spec": [s.to_json(indent=None) for s in specs]})
    out_dir = device_dir(device)
    report["csv"] = str(atomic_write_text(out_dir / f"validation-suite-{seed}.csv", frame.to_csv(index=False)))
    png = Path(plot) if plot else out_dir / f"validation-suite-{seed}.png"
    report["plot"] = str(family_scatter_png(png, frame, f"{device}: validation suite, seed {seed}"))
    return report


def family_scatter_png(path: str | Path, frame, title: str) -> Path:
    """One predicted-vs-measured panel per family with the +/-10% band, written atomically."""
    import matplotlib

    matplotlib.use("Agg")

    import matplotlib.pyplot as plt

    from common.atomic import save_png

    fams = list(dict.fromkeys(frame["family"]))
    fig, axes = plt.subplots(1, len(fams), figsize=(3.2 * len(fams), 3.4), squeeze=False)
    for ax, f in zip(axes[0], fams):
        sub = frame[frame["family"] == f]
        m = sub["measured_ms"].to_numpy(float)
        lo, hi = float(m.min()) * 0.85, float(m.max()) * 1.15
        xs = np.array([lo, hi])
        ax.plot(xs, xs, "k-", lw=1)
        ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.85", label="+/-10%")
        for col, label, mk in (("predicted_ms", "predictor", "o"), ("lut_sum_ms", "table sum", "x"),
                               ("flops_ms", "FLOPs-linear", "+")):
            ax.scatter(m, sub[col], s=10, marker=mk, label=label, alpha=0.7)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f, fontsize=9)
        ax.set_xlabel("measured (ms)", fontsize=8)
    axes[0][0].set_ylabel("predicted (ms)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, Path(path))
