"""What a NetAdapt run writes: history and proposal tables, run state, the progress plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from common.atomic import atomic_write_text, save_png

HISTORY_COLUMNS = (
    "iteration", "group", "channels_before", "channels_after", "filters_removed", "delta_ms", "correction",
    "constraint_ms", "predicted_ms", "measured_ms", "accuracy_before", "accuracy_after", "score_gap",
    "score_gap_se", "val_images", "passed_over", "proposals", "failed", "seconds",
)
PROPOSAL_COLUMNS = (
    "iteration", "group", "channels_before", "channels_after", "predicted_ms", "accuracy_before",
    "accuracy_after", "score", "status", "error", "seconds", "node",
)


def frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=list(columns))


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write_text(path, df.to_csv(index=False, float_format="%.12g"))


def read_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    df = pd.read_csv(path)
    return [{c: (None if pd.isna(r.get(c)) else r.get(c)) for c in columns} for r in df.to_dict("records")]


def write_json(obj: Any, path: Path) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def plot_progress(history: list[dict[str, Any]], seed_point: dict[str, float], target_ms: float,
                  path: Path, title: str = "NetAdapt") -> Path:
    """Validation accuracy against latency per iteration (predicted, and measured when known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = [seed_point["predicted_ms"]] + [float(r["predicted_ms"]) for r in history]
    acc = [seed_point["accuracy"]] + [float(r["accuracy_after"]) for r in history]
    meas = [seed_point.get("measured_ms")] + [r.get("measured_ms") for r in history]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(pred, acc, "o-", color="tab:blue", label="predicted latency")
    pts = [(m, a) for m, a in zip(meas, acc) if m is not None and m == m]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color="tab:orange", alpha=0.7,
                label="measured latency")
    for i, (x, y) in enumerate(zip(pred, acc)):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.axvline(target_ms, color="gray", ls=":", label=f"target {target_ms:.2f} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("validation accuracy (after fine-tune)")
    ax.set_title(f"{title}: iteration 0 = seed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
