"""What a search run writes: the trials table, the accuracy/latency Pareto front, two plots, the seed,
``summary.json``; :func:`write_results` makes them from the searcher's state (``searcher.json``: what
it handed out and every finished trial's outcome), the run's one record of its trials.

``results/seed.json``, where NetAdapt starts by default, is written only by a run that finished its
budget, and a demonstration run (under :data:`DEMO_MIN_TRIALS` trials) does not replace the seed of a
full search; the run folder always gets its own ``seed.json``.

All files are written to a temporary name and renamed into place, so a crash never leaves a
half-written table or a seed whose weights do not match its spec.
"""

from __future__ import annotations

import json
import math
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
from search.options import DEMO_MIN_TRIALS, SearchOptions
from search.reward import Reward
from space.archspec import ArchSpec

TRIAL_COLUMNS = [
    "trial", "trial_id", "status", "tokens", "accuracy", "latency_ms", "predicted_ms", "measured_ms", "reward",
    "params", "macs", "train_seconds", "steps", "epochs", "train_loss", "train_resolution", "final_map",
    "proxy_strides", "learned_reward", "test_accuracy", "error", "node", "weights", "arch",
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

    df = df[df["status"] != "interrupted"]  # no outcome yet
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


def plot_pareto(df: pd.DataFrame, front: pd.DataFrame, path: Path, target_ms: float, best: Any = None,
                latency: str = "latency (ms)") -> Path:
    """Proxy accuracy against latency (``latency`` says which: predicted or measured, at what input size),
    the Pareto front, the target, and the chosen seed (``best``, a trials-table row) marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ok = df[df["status"] == "ok"]
    sc = ax.scatter(ok["latency_ms"], ok["accuracy"], c=ok["trial"], cmap="viridis", s=16, label="trials")
    fig.colorbar(sc, ax=ax, label="trial")
    ax.plot(front["latency_ms"], front["accuracy"], "o-", color="red", mfc="none", label="Pareto front")
    if best is not None:
        ax.scatter([best["latency_ms"]], [best["accuracy"]], marker="*", s=220, color="gold", edgecolor="black",
                   zorder=5, label=f"seed: trial {int(best['trial'])} (best reward {float(best['reward']):.3f})")
    ax.axvline(target_ms, color="gray", ls=":", label=f"target {target_ms:g} ms")
    ax.set_xlabel(latency)
    ax.set_ylabel("proxy accuracy (validation split)")
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
        else:  # an older seed's weights must not pass for this one's
            (folder / "seed.pt").unlink(missing_ok=True)
        written.append(atomic_write_text(folder / "seed.json", doc))
    return written


@dataclass
class SearchSummary:
    run_dir: str
    trials: int           # the budget
    finished: int         # trials with an outcome (ok or failed)
    completed: int        # ... that trained (status ok)
    failed: int
    interrupted: int      # handed out but not finished when the sitting stopped; --resume runs them again
    status: str           # finished | interrupted (Ctrl-C, SIGTERM) | stopped (--time-budget)
    best: dict[str, Any] | None
    pareto: int
    seconds: float
    dashboard_url: str | None
    files: dict[str, str]
    stopped: int = 0      # trials ASHA stopped at a rung (status stopped in trials.csv)
    seed: str | None = None  # the seed.json NetAdapt should start from (None: no trial trained)
    seed_note: str = ""      # why results/seed.json was not written or replaced, when it was not
    demonstration: bool = False
    resume_command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_rows(state: dict[str, Any], full_epochs: float | None = None) -> list[dict[str, Any]]:
    """One row per trial the searcher handed out (``searcher.json``), with its outcome when it has one.

    A trial ASHA stopped (fewer ``epochs`` than ``full_epochs``) has status ``stopped``; its ``reward`` is
    the one it reached, ``learned_reward`` what the strategy learned from it (:mod:`search.stopping`)."""
    records = {r["trial_id"]: r for r in state.get("records", [])}
    rows = []
    for trial_id, entry in state.get("suggested", {}).items():
        rec = records.get(trial_id, {})
        status = rec.get("status", "interrupted")
        if status == "ok" and full_epochs is not None and float(rec.get("epochs", full_epochs)) < full_epochs - 1e-6:
            status = "stopped"
        scored = status in ("ok", "stopped")
        reward = rec.get("reward_at_stop", rec.get("reward", 0.0)) if scored else 0.0
        rows.append({
            "trial": int(entry["sample"]), "trial_id": trial_id, "status": status,
            "tokens": "-".join(str(int(t)) for t in entry["tokens"]),
            "accuracy": rec.get("accuracy", math.nan) if scored else math.nan,
            "latency_ms": rec.get("latency_ms", entry["latency_ms"]), "predicted_ms": entry["latency_ms"],
            "measured_ms": rec.get("measured_ms", math.nan), "reward": reward,
            "learned_reward": rec.get("reward", 0.0) if rec else math.nan, "test_accuracy": math.nan,
            "epochs": rec.get("epochs", math.nan),
            "params": rec.get("params", math.nan), "macs": rec.get("macs", math.nan),
            "train_seconds": rec.get("train_seconds", math.nan), "steps": rec.get("steps", 0),
            "train_loss": rec.get("train_loss", math.nan), "train_resolution": rec.get("train_resolution", math.nan),
            "final_map": rec.get("final_map", math.nan), "proxy_strides": rec.get("proxy_strides", ""),
            "error": rec.get("error", ""),
            "node": rec.get("node", ""), "weights": rec.get("weights", ""), "arch": "",
        })
    return rows


def resume_command(run_dir: Path) -> str:
    return f"python cli.py search --resume --name {run_dir.name}"


def _full_search_seed() -> str | None:
    """The run folder of a full (not demonstration) search whose seed ``results/seed.json`` is, if any."""
    try:
        name = ArchSpec.load(results_dir() / "seed.json").name
        run = name.rsplit("/", 1)[0]
        doc = json.loads((results_dir() / "runs" / run / "summary.json").read_text())
    except Exception:  # no seed, a seed of unknown origin, a run folder gone: nothing to keep
        return None
    return run if doc.get("status") == "finished" and not doc.get("demonstration", True) else None


def write_results(opts: SearchOptions, run_dir: Path, state: dict[str, Any], rw: Reward, url: str | None,
                  start: float, nc_ic: tuple[int, int], timings: dict[str, float], status: str,
                  score_test: Callable[[str, str], float] | None = None) -> SearchSummary:
    """Write the trials table, the Pareto front, the plots, the run's seed (and ``results/seed.json`` when
    the run finished its budget) and ``summary.json`` from the searcher's state.

    ``score_test(tokens, weights_path)`` scores a trained network on the test split: it is called once
    per run end for the best trial and each Pareto trial (``test_accuracy``; the others stay empty), so
    the accuracy reported for them is not the one they were selected by. Trials ASHA stopped
    (``status`` ``stopped``: fewer ``epochs`` than the run's) are neither best nor on the front.
    """
    from search.controller import ControllerConfig
    from search.trial import deploy_spec

    df = trials_frame(trial_rows(state, opts.epochs))
    df["arch"] = [json.dumps(deploy_spec(opts.space, [int(t) for t in toks.split("-")], opts.latency_resolution,
                                         *nc_ic).to_dict(), separators=(",", ":")) if toks else ""
                  for toks in df["tokens"]]
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
        files["pareto_plot"] = str(plot_pareto(df, front, run_dir / "pareto.png", rw.target_ms,
                                               best=df.loc[best_idx] if best_idx is not None else None,
                                               latency=_latency_label(opts)))
    finished = int(df["status"].ne("interrupted").sum())
    demo = opts.trials < DEMO_MIN_TRIALS
    best, seed, note = None, None, ""
    if best_idx is not None:
        b = df.loc[best_idx]
        spec = deploy_spec(opts.space, [int(t) for t in b["tokens"].split("-")], opts.latency_resolution, *nc_ic)
        spec = replace(spec, name=f"{run_dir.name}/{b['trial_id']}")
        weights = Path(b["weights"]) if b["weights"] and Path(b["weights"]).exists() else None
        folders = [run_dir]
        if status != "finished":
            note = (f"results/seed.json left as it was: the run has {finished} of its {opts.trials} trials; "
                    f"{resume_command(run_dir)} finishes it")
        elif demo and (full := _full_search_seed()):
            note = f"results/seed.json left as it was: it comes from the full search {full}, this run is a demonstration"
        else:
            folders.append(results_dir())
        write_seed(spec, weights, folders)
        seed = str(folders[-1] / "seed.json")
        files["run_seed"] = str(run_dir / "seed.json")
        if len(folders) > 1:
            files["seed"] = str(results_dir() / "seed.json")
            if weights is not None:
                files["seed_weights"] = str(results_dir() / "seed.pt")
        if status == "finished":
            _prune_weights(run_dir / "weights", keep=keep)
        best = {"arch": seed, "trial_id": b["trial_id"], "trial": int(b["trial"]), "tokens": b["tokens"],
                "accuracy": float(b["accuracy"]), "test_accuracy": _or_none(b["test_accuracy"]),
                "latency_ms": float(b["latency_ms"]), "reward": float(b["reward"]), "params": int(b["params"]), "macs": int(b["macs"]),
                "weights": str(Path(seed).with_suffix(".pt")) if weights is not None else None}
    summary = SearchSummary(
        run_dir=str(run_dir), trials=opts.trials, finished=finished, completed=int((df["status"] == "ok").sum()),
        failed=int(df["status"].isin(FAILED).sum()), interrupted=int((df["status"] == "interrupted").sum()),
        status=status, best=best, pareto=len(front), seconds=time.perf_counter() - start, dashboard_url=url,
        files=files, seed=seed, seed_note=note, demonstration=demo,
        resume_command=resume_command(run_dir) if status != "finished" else "",
        stopped=int((df["status"] == "stopped").sum()),
    )
    timings = {**timings, "slot_wait_s": round(float(state.get("waited_s", 0.0)), 1)}
    epochs = df["epochs"].astype(float)
    doc = {**summary.to_dict(), "reward": rw.describe(), "timings": timings, "searcher": searcher_counts(state),
           "scheduler": opts.scheduler, "epochs_trained": float(epochs[np.isfinite(epochs)].sum()),
           "epochs_if_all_full": float(len(df) * opts.epochs)}
    atomic_write_text(run_dir / "summary.json", json.dumps(doc, indent=2) + "\n")
    return summary


def _latency_label(opts: SearchOptions) -> str:
    how = "measured with onnxruntime" if opts.measure else f"predicted for {opts.device}"
    return f"latency at {opts.latency_resolution}x{opts.latency_resolution}, {how} (ms)"


FAILED = ("error", "diverged", "oom")


def _or_none(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def searcher_counts(state: dict[str, Any]) -> dict[str, Any] | None:
    """What the strategy heard (searcher.json): one reward per trial and one per repeated proposal; for the
    controller also its rewards, policy updates and samples still waiting."""
    if not state.get("strategy"):
        return None
    out = {"strategy": state["strategy"], "trials": len(state["records"]), "samples_heard": int(state["samples_heard"]),
           "repeats": len(state["repeats"]), "fallbacks": int(state["fallbacks"])}
    if state["strategy"] == "controller":
        c = state["controller"]
        out.update(feedbacks=int(c["feedbacks"]), updates=int(c["updates"]), pending=len(c["pending"]))
    return out


def _prune_weights(folder: Path, keep: set[str]) -> None:
    """Trained weights of trials off the Pareto front are not needed after the run (they add up)."""
    if not folder.is_dir():
        return
    keep_names = {Path(k).name for k in keep if k}
    for p in folder.glob("*.pt"):
        if p.name not in keep_names:
            p.unlink(missing_ok=True)
