"""Regularized (aging) evolution, Real et al., "Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019 (Algorithm 1).

The first ``population`` proposals are drawn at random. After that, each proposal samples
``tournament`` members of the current population, takes the one with the highest reward as the
parent and mutates one decision of it (a decision chosen uniformly among those with more than one
choice, set to another of its choices, until the network differs from the parent). Every reward
that comes back appends its network to the population and removes the oldest member: networks die
of age, not of being worse, which is what makes it robust to noisy rewards. With trials in flight
the parents come from whatever population the finished trials have built so far (the paper's
asynchronous workers do the same). A proposal that repeats a known network hears its recorded
reward and joins the population again, as a re-trained copy would.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from common.errors import UserError
from search.searcher import NetworkSearcher, SearchTask


@dataclass
class EvolutionConfig:
    population: int = 10   # P; Real et al. used 100 for 20,000 models, smaller budgets need smaller ones
    tournament: int = 3    # S, the sample a parent is chosen from
    mutation_tries: int = 20  # draws of a mutation before accepting one that canonicalises to the parent

    def __post_init__(self) -> None:
        if self.population < 1 or not 1 <= self.tournament <= self.population:
            raise UserError("evolution needs population >= 1 and 1 <= tournament <= population")


class EvolutionSearcher(NetworkSearcher):
    name = "evolution"

    def __init__(self, task: SearchTask, config: EvolutionConfig | None = None, seed: int = 0,
                 state_path: str | os.PathLike | None = None, window: int | None = None) -> None:
        super().__init__(task, seed=seed, state_path=state_path, window=window)
        self.config = config or EvolutionConfig()
        self.draws = np.random.default_rng(self.seed)
        self.population: list[tuple[list[int], float]] = []  # oldest first
        self.proposed = 0

    def propose(self) -> tuple[Any, list[int]]:
        self.proposed += 1
        if self.proposed <= self.config.population or not self.population:
            return None, self.space.sample(self.draws)
        k = min(self.config.tournament, len(self.population))
        picks = self.draws.choice(len(self.population), size=k, replace=False)
        parent = max((self.population[int(i)] for i in picks), key=lambda m: m[1])[0]
        return None, self.mutate(parent)

    def mutate(self, parent: list[int]) -> list[int]:
        """``parent`` with one decision set to another choice (a different network when one is found)."""
        movable = [i for i, d in enumerate(self.space.decisions) if d.n > 1]
        if not movable:
            return list(parent)
        same = self.space.canonical(parent)
        child = list(parent)
        for _ in range(self.config.mutation_tries):
            child = list(parent)
            i = movable[int(self.draws.integers(len(movable)))]
            child[i] = (child[i] + 1 + int(self.draws.integers(self.space.decisions[i].n - 1))) % self.space.decisions[i].n
            if self.space.canonical(child) != same:
                break
        return child

    def adopt(self, tokens: list[int]) -> Any:
        return None

    def learn(self, handle: Any, tokens: list[int], reward: float) -> None:
        self.population.append((list(tokens), float(reward)))
        if len(self.population) > self.config.population:
            self.population.pop(0)

    def strategy_state(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "rng": self.draws.bit_generator.state, "proposed": self.proposed,
                "population": [[list(t), r] for t, r in self.population]}

    def load_strategy_state(self, state: dict[str, Any]) -> None:
        self.config = EvolutionConfig(**state["config"])
        self.draws.bit_generator.state = state["rng"]
        self.proposed = int(state["proposed"])
        self.population = [(list(t), float(r)) for t, r in state["population"]]
