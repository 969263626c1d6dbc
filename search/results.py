"""What a search run writes: the trials table, the accuracy/latency Pareto front, two plots, the seed,
``summary.json``; :func:`write_results` turns Tune's results (and the searcher's record of what it
handed out) into them.

All files are written to a temporary name and renamed into place, so a crash never leaves a
half-written table or a seed whose weights do not match its spec.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.atomic import atomic_path, atomic_write_text, save_png
from common.paths import results_dir
from search.options import SearchOptions
from search.reward import Reward
from space.archspec import ArchSpec

TRIAL_COLUMNS = [
    "trial", "trial_id", "status", "tokens", "accuracy", "latency_ms", "measured_ms", "reward", "params", "macs",
    "train_seconds", "steps", "epochs", "train_loss", "train_resolution", "final_map", "proxy_strides",
    "learned_reward", "test_accuracy", "error", "node", "weights", "arch",
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


@dataclass
class SearchSummary:
    run_dir: str
    trials: int
    completed: int
    failed: int
    best: dict[str, Any] | None
    pareto: int
    seconds: float
    dashboard_url: str | None
    files: dict[str, str]
    stopped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def write_results(opts: SearchOptions, run_dir: Path, results: Any, rw: Reward, url: str | None, start: float,
                   nc_ic: tuple[int, int], timings: dict[str, float],
                   score_test: Callable[[str, str], float] | None = None) -> SearchSummary:
    """Write the run's tables, plots, seed and summary from Tune's ``results``.

    ``score_test(tokens, weights_path)`` scores a trained network on the test split: it is called once
    per run end for the best trial and each Pareto trial (``test_accuracy``; the others stay empty), so
    the accuracy reported for them is not the one they were selected by. Trials ASHA stopped
    (``status`` ``stopped``: fewer ``epochs`` than the run's) are neither best nor on the front.
    """
    from search.controller import ControllerConfig
    from search.searcher import read_state
    from search.stopping import STOPPING_STATE
    from search.stopping import read_state as read_stopping
    from search.trial import deploy_spec

    # What the searcher handed out: a trial that failed before reporting (restored after a kill)
    # comes back from Tune without its config; its sample and tokens are still known here.
    handed_out = (read_state(run_dir / "searcher.json") or {}).get("suggested", {})
    # What the strategy learned from each trial when ASHA stopped some (search.stopping); else the reward.
    fed = (read_stopping(run_dir / STOPPING_STATE) or {}).get("fed", {})
    rows = []
    for res in results:
        m = res.metrics or {}
        trial_id = str(m.get("trial_id") or _trial_id_from_path(res.path))
        cfg = res.config or {}
        if "tokens" not in cfg and trial_id in handed_out:
            cfg = handed_out[trial_id]
        tokens = [int(t) for t in cfg.get("tokens", [])]
        if res.error is not None:
            status = "error"  # raised, or its worker died (Tune's FailureConfig(max_failures=0): no retry)
        elif "accuracy" not in m:
            status = "unfinished"  # interrupted before it reported; --resume runs it again
        else:
            status = m.get("status", "ok")
            if status == "ok" and float(m.get("epochs", opts.epochs)) < opts.epochs - 1e-6:
                status = "stopped"  # by ASHA, at a rung
        reward = m.get("reward", 0.0) if status in ("ok", "stopped") else 0.0
        rows.append({
            "trial": int(cfg.get("sample", _trial_index(trial_id))), "trial_id": trial_id, "status": status,
            "tokens": "-".join(map(str, tokens)),
            "accuracy": m.get("accuracy", math.nan), "latency_ms": m.get("latency_ms", cfg.get("latency_ms", math.nan)),
            "measured_ms": m.get("measured_ms", math.nan), "reward": reward,
            "learned_reward": fed.get(trial_id, {}).get("learned_reward", reward), "test_accuracy": math.nan,
            "epochs": m.get("epochs", math.nan),
            "params": m.get("params", math.nan), "macs": m.get("macs", math.nan),
            "train_seconds": m.get("train_seconds", math.nan), "steps": m.get("steps", 0),
            "train_loss": m.get("train_loss", math.nan), "train_resolution": m.get("train_resolution", math.nan),
            "final_map": m.get("final_map", math.nan), "proxy_strides": m.get("proxy_strides", ""),
            "error": m.get("error", "") if res.error is None else _error_line(res.error),
            "node": m.get("node", ""), "weights": m.get("weights", ""), "arch": "",
        })
    df = trials_frame(rows)
    archs = []
    for toks in df["tokens"]:
        if toks:
            spec = deploy_spec(opts.space, [int(t) for t in toks.split("-")], opts.latency_resolution, *nc_ic)
            archs.append(json.dumps(spec.to_dict(), separators=(",", ":")))
        else:
            archs.append("")
    df["arch"] = archs
    front = pareto_front(df)
    ok = df[df["status"] == "ok"]
    best_idx = ok["reward"].astype(float).idxmax() if len(ok) else None
    if score_test is not None:
        chosen = set(front["trial_id"]) | ({df.loc[best_idx, "trial_id"]} if best_idx is not None else set())
        for idx in df.index[df["trial_id"].isin(chosen)]:
            if df.loc[idx, "weights"] and Path(df.loc[idx, "weights"]).is_file():
                df.loc[idx, "test_accuracy"] = float(score_test(df.loc[idx, "tokens"], df.loc[idx, "weights"]))
        front = pareto_front(df)
    # Weights of trials off the Pareto front are deleted below; the table names only files that stay.
    keep = set(front["weights"]) | ({df.loc[best_idx, "weights"]} if best_idx is not None else set())
    df["weights"] = [w if w and w in keep and Path(w).is_file() else "" for w in df["weights"]]
    files = {
        "trials": str(write_csv(df, run_dir / "trials.csv")),
        "pareto": str(write_csv(front, run_dir / "pareto.csv")),
    }
    decay = ControllerConfig().baseline_decay
    if len(df):
        files["reward_plot"] = str(plot_rewards(df, run_dir / "reward.png", decay, f"{run_dir.name}: {rw.describe()}"))
        files["pareto_plot"] = str(plot_pareto(df, front, run_dir / "pareto.png", rw.target_ms))
    best = None
    if best_idx is not None:
        b = df.loc[best_idx]
        spec = deploy_spec(opts.space, [int(t) for t in b["tokens"].split("-")], opts.latency_resolution, *nc_ic)
        spec = replace(spec, name=f"{run_dir.name}/{b['trial_id']}")
        weights = Path(b["weights"]) if b["weights"] and Path(b["weights"]).exists() else None
        write_seed(spec, weights, [run_dir, results_dir()])
        files.update({"seed": str(results_dir() / "seed.json"), "run_seed": str(run_dir / "seed.json")})
        if weights is not None:
            files["seed_weights"] = str(results_dir() / "seed.pt")
        _prune_weights(run_dir / "weights", keep=keep)
        best = {"arch": str(results_dir() / "seed.json"), "trial_id": b["trial_id"], "tokens": b["tokens"],
                "accuracy": float(b["accuracy"]), "test_accuracy": _or_none(b["test_accuracy"]),
                "latency_ms": float(b["latency_ms"]), "reward": float(b["reward"]),
                "params": int(b["params"]), "macs": int(b["macs"]),
                "weights": str(results_dir() / "seed.pt") if weights is not None else None}
    summary = SearchSummary(
        run_dir=str(run_dir), trials=len(df), completed=int((df["status"] == "ok").sum()),
        failed=int(df["status"].isin(FAILED).sum()), best=best, pareto=len(front),
        seconds=time.perf_counter() - start, dashboard_url=url, files=files,
        stopped=int((df["status"] == "stopped").sum()),
    )
    epochs = df["epochs"].astype(float)
    doc = {**summary.to_dict(), "reward": rw.describe(), "timings": timings, "searcher": searcher_counts(run_dir),
           "scheduler": opts.scheduler, "epochs_trained": float(epochs[np.isfinite(epochs)].sum()),
           "epochs_if_all_full": float(len(df) * opts.epochs)}
    atomic_write_text(run_dir / "summary.json", json.dumps(doc, indent=2) + "\n")
    return summary


FAILED = ("error", "diverged", "oom")


def _or_none(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _error_line(error: Any) -> str:
    """One short line of a Tune trial error: the exception the trial raised (``Type: message``), or for a
    worker that died, e.g. ``RayActorError: The actor is dead because its worker process has died.``"""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    exc = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:", line)]
    if exc:
        return exc[-1][:200]
    last = lines[-1] if lines else ""
    first_sentence = last.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {first_sentence}."[:200]


def searcher_counts(run_dir: Path) -> dict[str, Any] | None:
    """What the strategy heard (searcher.json): one reward per trial and one per repeated proposal; for the
    controller also its rewards, policy updates and samples still waiting."""
    from search.searcher import read_state

    state = read_state(run_dir / "searcher.json")
    if state is None:
        return None
    out = {"strategy": state["strategy"], "trials": len(state["records"]), "repeats": len(state["repeats"]),
           "fallbacks": int(state["fallbacks"])}
    if state["strategy"] == "controller":
        c = state["controller"]
        out.update(feedbacks=int(c["feedbacks"]), updates=int(c["updates"]), pending=len(c["pending"]))
    return out


def _trial_index(trial_id: str) -> int:
    m = re.search(r"_(\d+)$", trial_id)
    return int(m.group(1)) if m else 0


def _trial_id_from_path(path: str | None) -> str:
    m = re.search(r"trial_([0-9a-f]+)", Path(path or "").name)
    return m.group(1) if m else "?"


def _prune_weights(folder: Path, keep: set[str]) -> None:
    """Trained weights of trials off the Pareto front are not needed after the run (they add up)."""
    if not folder.is_dir():
        return
    keep_names = {Path(k).name for k in keep if k}
    for p in folder.glob("*.pt"):
        if p.name not in keep_names:
            p.unlink(missing_ok=True)
