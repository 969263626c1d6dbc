"""Random search: every decision drawn uniformly and independently (Bergstra & Bengio 2012; Li &
Talwalkar 2019 showed it a strong baseline for architecture search). With the searcher's
de-duplication it samples the space without replacement."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from search.searcher import NetworkSearcher, SearchTask


class RandomSearcher(NetworkSearcher):
    name = "random"

    def __init__(self, task: SearchTask, config: Any = None, seed: int = 0,
                 state_path: str | os.PathLike | None = None, window: int | None = None) -> None:
        super().__init__(task, seed=seed, state_path=state_path, window=window)
        self.draws = np.random.default_rng(self.seed)

    def propose(self) -> tuple[Any, list[int]]:
        return None, self.space.sample(self.draws)

    def adopt(self, tokens: list[int]) -> Any:
        return None

    def learn(self, handle: Any, tokens: list[int], reward: float) -> None:
        pass

    def strategy_state(self) -> dict[str, Any]:
        return {"rng": self.draws.bit_generator.state}

    def load_strategy_state(self, state: dict[str, Any]) -> None:
        self.draws.bit_generator.state = state["rng"]
