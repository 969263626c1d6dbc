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
                  path: Path, title: str = "NetAdapt", final: dict[str, float] | None = None,
                  final_epochs: float = 0.0, target_basis: str = "predicted") -> Path:
    """Validation accuracy against latency per iteration: the predicted latency of each kept network, and
    its latency measured with onnxruntime where measured, each point labelled with its iteration
    (0 = the seed); ``final`` adds the network after the long-term fine-tune (``predicted_ms``,
    ``measured_ms``, ``accuracy``); ``target_basis`` says which latency the target is on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = [seed_point["predicted_ms"]] + [float(r["predicted_ms"]) for r in history]
    acc = [seed_point["accuracy"]] + [float(r["accuracy_after"]) for r in history]
    meas = [seed_point.get("measured_ms")] + [r.get("measured_ms") for r in history]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    ax.plot(pred, acc, "o-", color="tab:blue", label="predicted latency")
    for i, (x, y) in enumerate(zip(pred, acc)):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7, color="tab:blue")
    pts = [(i, m, a) for i, (m, a) in enumerate(zip(meas, acc)) if m is not None and m == m]
    if pts:
        ax.plot([p[1] for p in pts], [p[2] for p in pts], "s--", color="tab:orange", alpha=0.8,
                label="measured latency (onnxruntime)")
        for i, x, y in pts:
            ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7, color="tab:orange")
    if final is not None:
        how = f"after the {final_epochs:g}-epoch fine-tune" if final_epochs else "final"
        ax.scatter([final["predicted_ms"]], [final["accuracy"]], marker="*", s=200, color="tab:blue",
                   edgecolor="black", zorder=5, label=f"{how}, predicted")
        if final.get("measured_ms") is not None:
            ax.scatter([final["measured_ms"]], [final["accuracy"]], marker="*", s=200, color="tab:orange",
                       edgecolor="black", zorder=5, label=f"{how}, measured")
    ax.axvline(target_ms, color="gray", ls=":", label=f"target {target_ms:.2f} ms ({target_basis})")
    ax.set_xlabel("latency (ms): predicted, and measured with onnxruntime")
    ax.set_ylabel("validation accuracy (after each fine-tune)")
    ax.set_title(f"{title}: points labelled by iteration, 0 = seed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def interrupted_rows(iteration: int, proposals: list[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``proposals.csv`` rows for the proposals of ``iteration`` that have no row yet: a stop cut them short."""
    done = {(r["iteration"], r["group"]) for r in rows}
    return [{"iteration": iteration, "group": p.group, "channels_before": p.channels_before,
             "channels_after": p.channels_after, "predicted_ms": p.predicted_ms, "status": "interrupted"}
            for p in proposals if (iteration, p.group) not in done]


def describe_run(run_dir: Path) -> dict:
    """What ``cli.py runs`` shows of a NetAdapt run, from its JSON files alone."""
    from common.runstatus import current, read_json

    state = read_json(run_dir / "state.json")
    result = read_json(run_dir / "result.json")
    invocation = read_json(run_dir / "invocation.json")
    argv = invocation.get("argv") or ["netadapt", "--seed", str(invocation.get("seed", "?"))]
    out = run_dir / "netadapt.json"
    return {"run": run_dir.name, "kind": "netadapt", "path": str(run_dir), "status": current(run_dir),
            "done": state.get("iteration"), "budget": None,
            "accuracy": result.get("final_accuracy", state.get("accuracy")),
            "latency_ms": result.get("final_latency_ms", state.get("predicted_ms")),
            "seed": str(out) if out.exists() else None, "command": "python cli.py " + " ".join(argv)}
