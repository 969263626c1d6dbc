"""The real search's task for a searcher (:class:`search.searcher.SearchTask`): the space by name, and for
each network the latency of the candidate as deployed, predicted without torch."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from search.trial import TrialSettings, deploy_spec
from space.searchspace import SearchSpace, get_space


class NetworkTask:
    """Networks of ``settings.space`` for data of ``num_classes`` classes and ``in_channels`` channels."""

    def __init__(self, settings: TrialSettings, num_classes: int, in_channels: int, device: str = "local-cpu",
                 predictor: Any = None) -> None:
        self.settings = settings
        self.num_classes, self.in_channels = int(num_classes), int(in_channels)
        self.device = device
        self._predictor = predictor

    @cached_property
    def space(self) -> SearchSpace:
        return get_space(self.settings.space)

    @property
    def predictor(self) -> Any:
        if self._predictor is None:
            from latency import load_predictor

            self._predictor = load_predictor(self.device, self.settings.space, self.settings.latency_resolution,
                                             build_if_missing=False, progress=False)
        return self._predictor

    def candidate(self, tokens: list[int]) -> dict[str, Any]:
        s = self.settings
        spec = deploy_spec(s.space, tokens, s.latency_resolution, self.num_classes, self.in_channels)
        return {"latency_ms": float(self.predictor.predict(spec))}

    def shared(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict()}
