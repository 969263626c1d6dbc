"""What a search run writes: the trials table, the accuracy/latency Pareto front, two plots, the seed.

All files are written to a temporary name and renamed into place, so a crash never leaves a
half-written table or a seed whose weights do not match its spec.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from space.archspec import ArchSpec
from space.atomic import atomic_path, atomic_write_text, save_png

TRIAL_COLUMNS = [
    "trial", "trial_id", "status", "tokens", "accuracy", "latency_ms", "measured_ms", "reward", "params", "macs",
    "train_seconds", "steps", "train_loss", "error", "node", "weights", "arch",
]


def trials_frame(rows: list[dict]) -> pd.DataFrame:
    """The trials table with its fixed columns, in suggestion order."""
    df = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    return df.sort_values("trial", kind="stable").reset_index(drop=True)


def pareto_front(df: pd.DataFrame) -> pd.DataFrame:
    """Successful trials not dominated in (higher accuracy, lower latency), sorted by latency."""
    ok = df[(df["status"] == "ok") & np.isfinite(df["accuracy"].astype(float))
            & np.isfinite(df["latency_ms"].astype(float))]
    ok = ok.sort_values(["latency_ms", "accuracy"], ascending=[True, False], kind="stable")
    keep, best_acc = [], -np.inf
    for idx, acc in zip(ok.index, ok["accuracy"].astype(float)):
        if acc > best_acc:  # sorted by latency: a point survives only if it beats every faster one
            keep.append(idx)
            best_acc = acc
    return ok.loc[keep].reset_index(drop=True)


def running_mean(rewards: list[float] | np.ndarray, decay: float) -> np.ndarray:
    """Exponential moving average, the same recursion as the controller's baseline."""
    out, m = [], None
    for r in rewards:
        m = float(r) if m is None else decay * m + (1 - decay) * float(r)
        out.append(m)
    return np.asarray(out)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def plot_rewards(df: pd.DataFrame, path: Path, decay: float, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    r = df["reward"].astype(float).fillna(0.0).to_numpy()
    x = df["trial"].to_numpy()
    ok = (df["status"] == "ok").to_numpy()
    ax.scatter(x[ok], r[ok], s=14, label="trial reward")
    if (~ok).any():
        ax.scatter(x[~ok], r[~ok], s=20, marker="x", color="red", label="failed (reward 0)")
    ax.plot(x, running_mean(r, decay), color="black", lw=1.5, label=f"running mean (EMA {decay})")
    ax.plot(x, np.maximum.accumulate(r) if len(r) else r, color="green", lw=1, ls="--", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("reward")
    ax.set_title(title or "search reward")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def plot_pareto(df: pd.DataFrame, front: pd.DataFrame, path: Path, target_ms: float) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ok = df[df["status"] == "ok"]
    sc = ax.scatter(ok["latency_ms"], ok["accuracy"], c=ok["trial"], cmap="viridis", s=16, label="trials")
    fig.colorbar(sc, ax=ax, label="trial")
    ax.plot(front["latency_ms"], front["accuracy"], "o-", color="red", mfc="none", label="Pareto front")
    ax.axvline(target_ms, color="gray", ls=":", label=f"target {target_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("proxy accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def copy_atomic(src: Path, dst: Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def write_seed(spec: ArchSpec, weights: Path | None, folders: list[Path]) -> list[Path]:
    """Write ``seed.json`` (a plain ArchSpec) and ``seed.pt`` (its state_dict) into each folder.

    The weights go first so that a reader who sees the new seed.json also finds its weights.
    """
    written = []
    doc = spec.to_json() + "\n"
    for folder in folders:
        if weights is not None:
            written.append(copy_atomic(weights, folder / "seed.pt"))
        written.append(atomic_write_text(folder / "seed.json", doc))
    return written
