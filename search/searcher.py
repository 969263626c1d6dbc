"""The controller behind Ray Tune's :class:`~ray.tune.search.Searcher` interface.

``suggest`` draws tokens from the controller, canonicalises them, predicts the candidate's latency
at the deployment resolution and hands Tune the trial config; ``on_trial_complete`` turns the
trial's reward (0 for an errored trial or one without a result) into controller feedback. The
searcher's whole state - controller, which trial holds which sample, every finished record - is
written by ``save`` and read by ``restore``, which Tune calls around its experiment checkpoints, so
a resumed run neither loses nor repeats feedback.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from search.controller import Controller, ControllerConfig
from search.trial import TrialSettings, deploy_spec
from space.atomic import atomic_path
from space.searchspace import get_space


class ControllerSearcher(Searcher):
    """Tune searcher that samples architectures from an RNN :class:`Controller`."""

    def __init__(self, settings: TrialSettings, num_classes: int, in_channels: int, device: str = "local-cpu",
                 controller: ControllerConfig | None = None, predictor: Any = None,
                 metric: str = "reward", mode: str = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        self.settings = settings
        self.num_classes, self.in_channels = int(num_classes), int(in_channels)
        self.device = device
        space = get_space(settings.space)
        self.controller = Controller.for_space(space, controller, seed=settings.seed)
        # Pickled with the searcher (Tune keeps it in the run), so a resumed run scores latency alike.
        self._predictor = predictor
        self.live: dict[str, int] = {}          # trial id -> controller sample key
        self.records: list[dict[str, Any]] = []  # finished trials in completion order

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            from latency import load_predictor

            self._predictor = load_predictor(self.device, self.settings.space, self.settings.latency_resolution,
                                             build_if_missing=False, progress=False)
        return self._predictor

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        space = get_space(self.settings.space)
        sample = self.controller.sample()
        tokens = space.canonical(sample.tokens)
        spec = deploy_spec(self.settings.space, tokens, self.settings.latency_resolution, self.num_classes,
                           self.in_channels)
        self.live[trial_id] = sample.key
        return {"tokens": tokens, "latency_ms": float(self.predictor.predict(spec)),
                "settings": self.settings.to_dict(), "sample": sample.key}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        key = self.live.pop(trial_id, None)
        if key is None:
            return
        r = 0.0 if error or not result else float(result.get("reward", 0.0) or 0.0)
        if not math.isfinite(r):
            r = 0.0
        self.controller.feedback(key, r)
        self.records.append({"trial_id": trial_id, "sample": key, "reward": r,
                             "status": "error" if error or not result else result.get("status", "ok"),
                             "baseline": self.controller.baseline})

    # ---- state ----------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict(), "live": dict(self.live), "records": list(self.records),
                "settings": self.settings.to_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.live = dict(state["live"])
        self.records = list(state["records"])

    def save(self, checkpoint_path: str) -> None:
        p = Path(checkpoint_path)
        with atomic_path(p) as tmp, open(tmp, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
