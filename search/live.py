"""What a search shows while it runs: one line per finished trial on stderr, and the search's curves
for TensorBoard.

Each line says which trial it is out of the budget, its network in brief (layers, parameters,
MACs), its outcome (proxy accuracy, predicted latency, measured latency when measured, reward, or
its status and error), the best reward so far and an estimate of the time left. A run of 16
trials prints about 2 KB this way (``--json`` keeps stdout to its one object).

:class:`SearchCurves` writes, beside Tune's per-trial TensorBoard files, one TensorBoard run
``tune/search`` with every trial's reward, accuracy and latency against its sample index and the
best reward against the number of trials done (``tensorboard --logdir results/runs/<name>/tune``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from space.cost import cost


def network_summary(spec: Any) -> str:
    """``18 layers, 2.10M params, 102M MACs``."""
    c = cost(spec)
    return f"{len(spec.layers)} layers, {c.params / 1e6:.2f}M params, {c.macs / 1e6:.0f}M MACs"


def _ms(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def trial_line(done: int, total: int, record: dict[str, Any], entry: dict[str, Any], summary: str,
               best: dict[str, Any] | None, eta_s: float | None) -> str:
    """One line for a finished trial (``record``: its outcome; ``entry``: what the searcher handed out)."""
    head = f"[{done}/{total}] trial {record['sample']}: {summary}"
    if record["status"] == "ok":
        out = f"acc {float(record.get('accuracy', math.nan)):.3f}, {float(entry['latency_ms']):.2f} ms predicted"
        measured = _ms(record.get("measured_ms"))
        if measured is not None:
            out += f", {measured:.2f} ms measured"
        if "reward_at_stop" in record:  # ASHA stopped it; the strategy learned the projected reward
            out += f", stopped at {float(record.get('epochs', math.nan)):g} epochs, reward {record['reward_at_stop']:.4f}"
            out += f" (learned {record['reward']:.4f})"
        else:
            out += f", reward {record['reward']:.4f}"
    else:
        out = f"{record['status']} ({record.get('error') or 'no result'}), reward 0"
    tail = f"best {best['reward']:.4f} (trial {best['sample']})" if best else "best -"
    if eta_s is not None:
        tail += f", ETA {eta_s / 60:.1f} min" if eta_s >= 60 else f", ETA {eta_s:.0f} s"
    return f"{head} | {out} | {tail}"


class LiveLines(Callback):
    """Print :func:`trial_line` for each trial the searcher records as finished."""

    def __init__(self, searcher: Any, total: int, describe: Callable[[list[int]], str],
                 write: Callable[[str], None] | None = None) -> None:
        self.searcher = searcher
        self.total = int(total)
        self.describe = describe
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.start = time.monotonic()
        self.start_done = len(searcher.records)  # trials an earlier sitting finished
        self.shown: set[str] = {r["trial_id"] for r in searcher.records}

    def _show(self, trial: Any) -> None:
        # Every outcome recorded since the last line: the trial that just ended, and under ASHA a stopped
        # trial whose outcome was held until its projected reward could be estimated (search.stopping).
        for i, rec in enumerate(self.searcher.records):
            if rec["trial_id"] in self.shown:
                continue
            self.shown.add(rec["trial_id"])
            done = i + 1
            full = [r for r in self.searcher.records[:done] if r["status"] == "ok" and "reward_at_stop" not in r]
            best = max(full, key=lambda r: r["reward"]) if full else None
            here = done - self.start_done  # finished in this sitting: the pace to extrapolate
            eta = (time.monotonic() - self.start) / here * (self.total - done) if here > 0 and done < self.total else None
            entry = self.searcher.suggested.get(rec["trial_id"], {"latency_ms": math.nan, "tokens": []})
            self.write(trial_line(done, self.total, rec, entry, self.describe(entry["tokens"]), best, eta))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._show(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._show(trial)


class SearchCurves(Callback):
    """The search as curves in TensorBoard (needs tensorboardX, which Tune's own TensorBoard logging uses too;
    without it nothing is written)."""

    def __init__(self, searcher: Any, logdir: Any) -> None:
        self.searcher = searcher
        self.logdir = str(logdir)
        self.writer = None
        self.best = -math.inf
        self.written: set[str] = {r["trial_id"] for r in searcher.records}  # an earlier sitting wrote these

    def _write(self, trial: Any) -> None:
        # Every outcome recorded since the last call (under ASHA, held ones too; see LiveLines).
        new = [r for r in self.searcher.records if r["trial_id"] not in self.written]
        if not new:
            return
        if self.writer is None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(self.logdir)
            ok = [r["reward"] for r in self.searcher.records
                  if r["status"] == "ok" and "reward_at_stop" not in r and r not in new]
            self.best = max(ok, default=-math.inf)
        for rec in new:
            self.written.add(rec["trial_id"])
            step = int(rec["sample"])
            self.writer.add_scalar("trial/reward", rec.get("reward_at_stop", rec["reward"]), step)
            for key in ("accuracy", "latency_ms", "measured_ms"):
                v = _ms(rec.get(key))
                if v is not None and rec["status"] == "ok":
                    self.writer.add_scalar(f"trial/{key}", v, step)
            if rec["status"] == "ok" and "reward_at_stop" not in rec:
                self.best = max(self.best, rec["reward"])
        if math.isfinite(self.best):
            self.writer.add_scalar("search/best_reward", self.best, self.searcher.finished)
        self.writer.flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.writer is not None:
            self.writer.close()
