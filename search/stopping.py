"""Early stopping with ASHA, and what the search strategy learns from a trial that was stopped.

ASHA (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning"; Ray Tune's
``AsyncHyperBandScheduler``) lets every trial report its validation reward at rungs of
``grace * rf**k`` epochs and stops a trial whose reward at a rung is below the top ``1/rf`` of the
rewards recorded there, so most of the training budget goes to the networks that look best early.

**The bias.** A stopped trial's last reward is that of a network trained for a fraction of the
budget. Handed to the strategy as it is, it compares a network trained 0.5 epochs with one trained
2: the stopped network looks far worse than it is (the gap between the epochs is larger than the
gap between networks), and the strategy learns to avoid whatever learns slowly at first, not
whatever ends worst.

**The correction** (:class:`StopCorrection`, a wrapper around any Tune ``Searcher``): for a trial
stopped at ``e`` epochs, the strategy receives the reward of its accuracy projected to the full
budget, ``acc(e) + median(acc_final - acc(e))`` over the trials that reported at ``e`` and then
finished (its latency term unchanged). The projection keeps the order ASHA saw at the rung and puts
stopped and finished trials on one scale. Its feedback waits until at least one trial that reported
at ``e`` has finished; when no trial is left running and none can give the estimate, it goes out
uncorrected. Full trials, failed ones and anything without a rung pass through unchanged.

The wrapper's state (points seen, feedback held, what each trial was fed) is JSON in the run's
``stopping.json``, rewritten after every change, so ``--resume`` continues it (:meth:`StopCorrection.resume`)
alongside the wrapped searcher's ``searcher.json``.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.search import Searcher

from search import jsonstate
from search.reward import Reward
from search.searcher import RECORD_KEYS

if TYPE_CHECKING:
    from ray.tune.schedulers import AsyncHyperBandScheduler

STATE_FORMAT = "hwnas-stop-correction/1"
STOPPING_STATE = "stopping.json"  # the wrapper's state in the run folder
EPS = 1e-6


def asha_rungs(grace_epochs: float, reduction_factor: float, epochs: float) -> list[float]:
    """The epochs at which a trial reports before its end: ``grace * rf**k`` below ``epochs``, the rungs
    of Tune's ``AsyncHyperBandScheduler`` with that grace period, reduction factor and ``max_t``."""
    out, at = [], float(grace_epochs)
    while at < epochs - EPS:
        out.append(at)
        at *= reduction_factor
    return out


def asha_scheduler(grace_epochs: float, reduction_factor: float, epochs: float) -> AsyncHyperBandScheduler:
    """Tune's ASHA on the ``epochs`` each report carries (metric and mode come from the TuneConfig)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    return AsyncHyperBandScheduler(time_attr="epochs", max_t=epochs, grace_period=grace_epochs,
                                   reduction_factor=reduction_factor)


def _key(epochs: float) -> str:
    return f"{float(epochs):.6f}"


class StopCorrection(Searcher):
    """Wraps a ``Searcher``; feeds it, for each trial ASHA stopped, the reward projected to the full
    budget (see the module docstring). Everything else is passed through."""

    def __init__(self, searcher: Searcher, full_epochs: float, reward: Reward,
                 state_path: str | os.PathLike | None = None) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.full_epochs = float(full_epochs)
        self.reward = reward
        self.state_path = str(state_path) if state_path else None
        self.live: list[str] = []                     # handed out, not completed
        self.points: dict[str, dict[str, float]] = {}  # trial -> {epochs: accuracy} of its reports
        self.final: dict[str, float] = {}              # trial -> accuracy at the full budget
        self.held: dict[str, dict[str, Any]] = {}      # stopped trials waiting for an estimate
        self.fed: dict[str, dict[str, Any]] = {}       # trial -> what the strategy was told

    # ---- pass-through -------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # The driver and tests reach the wrapped searcher's own attributes (controller, records, ...).
        if name == "searcher":
            raise AttributeError(name)
        return getattr(self.searcher, name)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    @property
    def finished(self) -> int:
        """Trials with an outcome, those whose feedback is held included."""
        return self.searcher.finished + len(self.held)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.held and not self.live:
            self._release()  # nothing running can give the estimate any more (a resumed run): feed it as it is
            self._changed()
        cfg = self.searcher.suggest(trial_id)
        if cfg not in (None, Searcher.FINISHED) and trial_id not in self.live:
            self.live.append(trial_id)
            self._changed()
        return cfg

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "epochs" in result and _finite(result.get("accuracy")):
            self.points.setdefault(trial_id, {})[_key(result["epochs"])] = float(result["accuracy"])
            self._changed()
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self.live:
            self.live.remove(trial_id)
        stopped = (not error and result and result.get("status", "ok") == "ok" and "epochs" in result
                   and float(result["epochs"]) < self.full_epochs - EPS and _finite(result.get("accuracy")))
        if stopped:
            self.points.setdefault(trial_id, {})[_key(result["epochs"])] = float(result["accuracy"])
            self.held[trial_id] = {k: result[k] for k in (*RECORD_KEYS, "reward", "status")
                                   if k in result and k != "reward_at_stop"}
        else:
            if not error and result and result.get("status", "ok") == "ok" and _finite(result.get("accuracy")):
                self.final[trial_id] = float(result["accuracy"])
            reward = 0.0 if error or not result else float(result.get("reward", 0.0) or 0.0)
            self.fed[trial_id] = {"learned_reward": reward, "estimated_accuracy": None, "corrected": False}
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
        self._release()
        self._changed()

    # ---- the correction -----------------------------------------------------------------------------
    def gain(self, epochs: float) -> float | None:
        """Median accuracy gained from ``epochs`` to the full budget by the trials that did both, or None."""
        k = _key(epochs)
        gains = [acc - self.points[t][k] for t, acc in self.final.items() if k in self.points.get(t, {})]
        return statistics.median(gains) if gains else None

    def _release(self) -> None:
        for trial_id in list(self.held):
            held = self.held[trial_id]
            gain = self.gain(held["epochs"])
            if gain is None and self.live:
                continue  # a running trial may still give the estimate
            acc = float(held["accuracy"])
            est = min(1.0, max(0.0, acc + gain)) if gain is not None else acc
            learned = self.reward(est, float(held.get("latency_ms", math.nan)))
            self.fed[trial_id] = {"learned_reward": learned, "estimated_accuracy": est, "corrected": gain is not None}
            del self.held[trial_id]
            self.searcher.on_trial_complete(trial_id, result={**held, "reward": learned,
                                                              "reward_at_stop": held.get("reward")})

    # ---- state --------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "live": list(self.live), "points": self.points, "final": self.final,
                "held": self.held, "fed": self.fed}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a stop-correction state ({STATE_FORMAT})")
        self.live = list(state["live"])
        self.points = {k: dict(v) for k, v in state["points"].items()}
        self.final = dict(state["final"])
        self.held = {k: dict(v) for k, v in state["held"].items()}
        self.fed = {k: dict(v) for k, v in state["fed"].items()}

    def _changed(self) -> None:
        if self.state_path:
            jsonstate.write(self.state_path, self.get_state())

    def save(self, checkpoint_path: str) -> None:
        """Tune's experiment checkpoints get no copy: ``stopping.json`` and ``searcher.json`` are the state."""

    def resume(self) -> None:
        """Continue the wrapped searcher (:meth:`search.searcher.NetworkSearcher.resume`) and this wrapper from
        ``stopping.json``. No trial of an earlier sitting is running any more; a trial whose feedback was held
        stays held (its result is known) instead of being handed out again."""
        self.searcher.resume()
        own = read_state(self.state_path) if self.state_path and Path(self.state_path).exists() else None
        if own is None:
            return
        self.set_state(own)
        self.live = []
        if self.held:
            self.searcher.replay = [t for t in self.searcher.replay if t not in self.held]
            self.searcher._changed()
        self._changed()


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def read_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """The wrapper's state from ``stopping.json``, or None when missing or unreadable."""
    try:
        state = jsonstate.read(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) and state.get("format") == STATE_FORMAT else None
