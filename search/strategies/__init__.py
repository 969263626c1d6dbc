"""Search strategies, one per module, each a :class:`search.searcher.NetworkSearcher` (a Ray Tune searcher).

They differ only in how they propose networks and learn from rewards; de-duplication, the JSON
state and resuming after a kill are the base class's. ``cli.py search --strategy NAME`` picks one.
"""

from __future__ import annotations

import os
from typing import Any

from common.errors import UserError

# name -> (module, class); the first is the default.
STRATEGIES = {
    "controller": ("search.strategies.controller", "ControllerSearcher"),
    "evolution": ("search.strategies.evolution", "EvolutionSearcher"),
    "random": ("search.strategies.random_search", "RandomSearcher"),
}
DEFAULT_STRATEGY = "controller"


def searcher_class(name: str) -> type:
    """The searcher class of strategy ``name`` (one line of error for an unknown one)."""
    import importlib

    if name not in STRATEGIES:
        raise UserError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    module, cls = STRATEGIES[name]
    return getattr(importlib.import_module(module), cls)


def make_searcher(name: str, task: Any, seed: int = 0, config: Any = None,
                  state_path: str | os.PathLike | None = None, window: int | None = None) -> Any:
    """A searcher of strategy ``name`` over ``task`` (see :class:`search.searcher.SearchTask`); ``window``:
    rewards heard in sample order with that many trials at once (see :mod:`search.searcher`)."""
    return searcher_class(name)(task, config=config, seed=seed, state_path=state_path, window=window)
