"""The RNN controller (:mod:`search.controller`) as a search strategy: it proposes what its policy
samples, drawn around the networks the run has handed out (a canonical network is never drawn
twice; another token list for the same network can be, and is answered from the record), and
learns by policy gradient from every reward, repeats included."""

from __future__ import annotations

import os
from typing import Any

from search.controller import Controller, ControllerConfig
from search.searcher import NetworkSearcher, SearchTask, network_key
from search.taken import Taken


class ControllerSearcher(NetworkSearcher):
    name = "controller"

    def __init__(self, task: SearchTask, config: ControllerConfig | None = None, seed: int = 0,
                 state_path: str | os.PathLike | None = None, window: int | None = None) -> None:
        super().__init__(task, seed=seed, state_path=state_path, window=window)
        self.controller = Controller.for_space(self.space, config, seed=self.seed)
        self._taken_set: Taken | None = None
        self._keys: set[str] = set()

    def propose(self) -> tuple[Any, list[int]]:
        taken, keys = self._handed_out()
        # Local moves must reach another network: re-drawing a decision that the space ignores in
        # that context (e.g. a skip where no layer can take one) would repeat the elite itself.
        s = self.controller.sample(taken, fresh=lambda t: network_key(self.space.canonical(t)) not in keys)
        return s.key, s.tokens

    def _handed_out(self) -> tuple[Taken, set[str]]:
        """The networks handed out so far, as the controller's prefix counts (for its draws) and as
        network keys (for its local moves); kept between calls, a restored searcher builds them anew."""
        if self._taken_set is None:
            self._taken_set, self._keys = Taken(self.controller.n_choices), set()
        for e in self.suggested.values():
            k = network_key(e["tokens"])
            if k not in self._keys:
                self._keys.add(k)
                self._taken_set.add(e["tokens"])
        return self._taken_set, self._keys

    def adopt(self, tokens: list[int]) -> Any:
        return self.controller.adopt(tokens).key

    def learn(self, handle: Any, tokens: list[int], reward: float) -> None:
        self.controller.feedback(int(handle), reward)

    def strategy_state(self) -> dict[str, Any]:
        return self.controller.state_dict()

    def load_strategy_state(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state)
        self._taken_set = None  # built again from the restored hand-outs
