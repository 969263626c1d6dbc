"""The controller behind Ray Tune's :class:`~ray.tune.search.Searcher` interface.

``suggest`` draws tokens from the controller, canonicalises them, predicts the candidate's latency
at the deployment resolution and hands Tune the trial config; ``on_trial_complete`` turns the
trial's reward (0 for an errored trial or one without a result) into controller feedback.

State and resuming. The searcher's whole state - controller, which trial holds which sample, every
finished record - is JSON (:mod:`search.jsonstate`; no pickle, so reading a run folder never runs
code). Two copies exist:

* ``state_path`` (the run's ``searcher.json``), written atomically after *every* suggestion and
  every feedback, so it is never behind what the controller has seen;
* Tune's copy (``tune/searcher-state-<session>.json``), written by :meth:`save` when Tune
  checkpoints its experiment (every ~10 s), so it matches Tune's list of trials.

A run killed outright (SIGKILL, power loss) resumes from Tune's last checkpoint, which may be
seconds behind. :meth:`restore` therefore takes the newer ``searcher.json`` and compares it with
Tune's copy: a trial Tune still runs again was either heard already (its second completion is
ignored; the trial itself returns its stored result, see :func:`search.trial.run_candidate`) or
not (it is heard when it completes); a trial handed out after Tune's checkpoint, which Tune has
forgotten, is handed out again - same sample, tokens and stored result - for the next trial Tune
asks for. So each sample gets exactly one reward, and the controller's count of rewards equals the
number of trials the run completed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from common.errors import UserError
from search import jsonstate
from search.controller import Controller, ControllerConfig
from search.trial import TrialSettings, deploy_spec
from space.searchspace import get_space

STATE_FORMAT = "hwnas-searcher/1"


class ControllerSearcher(Searcher):
    """Tune searcher that samples architectures from an RNN :class:`Controller`."""

    # Tune names the copy it keeps with each experiment checkpoint after this (Searcher's default says .pkl).
    CKPT_FILE_TMPL = "searcher-state-{}.json"

    def __init__(self, settings: TrialSettings, num_classes: int, in_channels: int, device: str = "local-cpu",
                 controller: ControllerConfig | None = None, predictor: Any = None,
                 metric: str = "reward", mode: str = "max", state_path: str | os.PathLike | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.settings = settings
        self.num_classes, self.in_channels = int(num_classes), int(in_channels)
        self.device = device
        space = get_space(settings.space)
        self.controller = Controller.for_space(space, controller, seed=settings.seed)
        # Tune pickles this object into its own tuner.pkl (so a resumed run scores latency alike); the
        # predictor never goes into the JSON state.
        self._predictor = predictor
        self.state_path = str(state_path) if state_path else None
        self.live: dict[str, int] = {}          # trial id -> controller sample key, until its reward arrives
        self.records: list[dict[str, Any]] = []  # finished trials in completion order
        self.suggested: dict[str, dict[str, Any]] = {}  # trial id -> sample, tokens, latency_ms (suggestion order)
        self.replay: list[str] = []  # trials Tune forgot in a kill, to hand out again (see the module doc)
        self.events = 0              # state changes so far; the newer of two copies has more

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            from latency import load_predictor

            self._predictor = load_predictor(self.device, self.settings.space, self.settings.latency_resolution,
                                             build_if_missing=False, progress=False)
        return self._predictor

    def _config(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {"tokens": list(entry["tokens"]), "latency_ms": entry["latency_ms"],
                "settings": self.settings.to_dict(), "sample": entry["sample"]}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.replay:
            return self._hand_out_again(trial_id)
        space = get_space(self.settings.space)
        sample = self.controller.sample()
        tokens = space.canonical(sample.tokens)
        spec = deploy_spec(self.settings.space, tokens, self.settings.latency_resolution, self.num_classes,
                           self.in_channels)
        entry = {"sample": sample.key, "tokens": tokens, "latency_ms": float(self.predictor.predict(spec))}
        self.suggested[trial_id] = entry
        self.live[trial_id] = sample.key
        self._changed()
        return self._config(entry)

    def _hand_out_again(self, trial_id: str) -> dict[str, Any]:
        """Give ``trial_id`` the sample of the oldest trial Tune forgot; it takes over that trial's id."""
        old = self.replay.pop(0)
        entry = self.suggested.pop(old)
        self.suggested[trial_id] = entry
        if old in self.live:
            self.live[trial_id] = self.live.pop(old)
        for r in self.records:
            if r["trial_id"] == old:
                r["trial_id"] = trial_id
        self._changed()
        return self._config(entry)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        key = self.live.pop(trial_id, None)
        if key is None:
            return  # already heard (a finished trial Tune ran again after a kill) or not ours
        r = 0.0 if error or not result else float(result.get("reward", 0.0) or 0.0)
        if not math.isfinite(r):
            r = 0.0
        self.controller.feedback(key, r)
        self.records.append({"trial_id": trial_id, "sample": key, "reward": r,
                             "status": "error" if error or not result else result.get("status", "ok"),
                             "baseline": self.controller.baseline})
        self._changed()

    # ---- state ----------------------------------------------------------------------------------
    def _changed(self) -> None:
        self.events += 1
        if self.state_path:
            jsonstate.write(self.state_path, self.get_state())

    def get_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "events": self.events, "controller": self.controller.state_dict(),
                "live": dict(self.live), "records": [dict(r) for r in self.records],
                "suggested": {k: dict(v) for k, v in self.suggested.items()}, "replay": list(self.replay),
                "settings": self.settings.to_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a searcher state ({STATE_FORMAT})")
        self.controller.load_state_dict(state["controller"])
        self.live = dict(state["live"])
        self.records = [dict(r) for r in state["records"]]
        self.suggested = {k: dict(v) for k, v in state["suggested"].items()}
        self.replay = list(state["replay"])
        self.events = int(state["events"])

    def save(self, checkpoint_path: str) -> None:
        jsonstate.write(checkpoint_path, self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        tune_copy = read_state(checkpoint_path)
        own = read_state(self.state_path) if self.state_path and Path(self.state_path).exists() else None
        if own is None and tune_copy is None:
            raise UserError(f"searcher checkpoint {checkpoint_path} is unreadable and there is no searcher.json "
                            "beside the run; the run cannot be resumed, start a new one")
        if own is None or (tune_copy is not None and tune_copy["events"] > own["events"]):
            self.set_state(tune_copy)
            return
        self.set_state(own)
        if tune_copy is not None:
            # Trials Tune knew at its checkpoint; anything handed out later (and not yet handed out
            # again) was lost with the killed run's Tune state.
            known = set(tune_copy["suggested"]) - set(tune_copy["replay"])
            self.replay = [t for t in self.suggested if t not in known]


def read_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """A searcher state written by :meth:`ControllerSearcher.save`, or None when unreadable."""
    try:
        state = jsonstate.read(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return None
    return state
