"""What every search strategy shares, behind Ray Tune's :class:`~ray.tune.search.Searcher` interface.

A strategy (:mod:`search.strategies`) only *proposes* token lists and *learns* from rewards;
:class:`NetworkSearcher` does the rest, the same way for all of them:

* **No network is trained twice.** Proposals are canonicalised (:meth:`SearchSpace.canonical`
  defines "same network"). A proposal of a network the run already trained is not handed to Tune:
  the strategy hears that network's recorded reward at once and proposes again. A proposal of a
  network that is training right now waits for that trial and hears its reward when it ends. So
  every trial is a distinct network, the trial budget counts distinct networks, and the strategy
  still gets a reward for every proposal it made. A strategy that keeps proposing known networks
  (a collapsed policy) gets, after :attr:`NetworkSearcher.max_proposals` proposals for one trial,
  a network not seen yet drawn uniformly at random, which it adopts as its own proposal.
* **Each network has one sample index** (``sample`` in the trial config, ``trial`` in
  ``trials.csv``), counting the run's distinct networks from 0, whatever the strategy's own
  numbering.
* **State and resuming.** The whole state - the strategy's, which trial holds which network, every
  reward - is JSON (:mod:`search.jsonstate`; no pickle, so reading a run folder never runs code).
  Two copies exist: ``state_path`` (the run's ``searcher.json``), written atomically after *every*
  suggestion and every reward, so it is never behind what the strategy has seen; and Tune's copy
  (``tune/searcher-state-<session>.json``), written by :meth:`save` when Tune checkpoints its
  experiment (every ~10 s), so it matches Tune's list of trials.

  A run killed outright (SIGKILL, power loss) resumes from Tune's last checkpoint, which may be
  seconds behind. :meth:`restore` therefore takes the newer ``searcher.json`` and compares it with
  Tune's copy: a trial Tune still runs again was either heard already (its second completion is
  ignored; the trial itself returns its stored result, see :func:`search.trial.run_candidate`) or
  not (it is heard when it completes); a trial handed out after Tune's checkpoint, which Tune has
  forgotten, is handed out again - same sample, tokens and stored result - for the next trial Tune
  asks for. So each network gets exactly one reward, and the strategy hears one reward per trial
  plus one per repeated proposal.

What a trial is told about its network beyond the tokens (the real search: the latency predicted
at the deployment resolution, the trial settings; the tabular benchmark: a table row) comes from a
*task* object (:class:`SearchTask`), so the same searcher drives ``cli.py search`` and
``bench/search_tabular.py``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from ray.tune.search import Searcher

from common.errors import UserError
from search import jsonstate

STATE_FORMAT = "hwnas-searcher/2"


class SearchTask(Protocol):
    """What a searcher needs to know of the world it searches."""

    space: Any  # decisions, canonical(tokens), sample(rng), size: see space.searchspace.SearchSpace

    def candidate(self, tokens: list[int]) -> dict[str, Any]:
        """Facts a trial needs about this network (JSON values, kept in the searcher state)."""

    def shared(self) -> dict[str, Any]:
        """What every trial's config carries besides its network (JSON values)."""


def network_key(tokens: list[int]) -> str:
    """``"3-0-1-..."``: canonical tokens as text (trials.csv's ``tokens`` column, the result store's key)."""
    return "-".join(str(int(t)) for t in tokens)


class NetworkSearcher(Searcher):
    """Tune searcher that hands out distinct networks proposed by a strategy (subclasses)."""

    # Tune names the copy it keeps with each experiment checkpoint after this (Searcher's default says .pkl).
    CKPT_FILE_TMPL = "searcher-state-{}.json"
    name: ClassVar[str] = ""
    max_proposals: ClassVar[int] = 100  # proposals for one trial before a random unseen network is drawn
    fallback_draws: ClassVar[int] = 10_000  # random draws to find an unseen network before giving up for now

    def __init__(self, task: SearchTask, seed: int = 0, state_path: str | os.PathLike | None = None,
                 metric: str = "reward", mode: str = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        # Tune pickles this object into its own tuner.pkl (so a resumed run scores latency alike); the
        # task never goes into the JSON state.
        self.task = task
        self.seed = int(seed)
        self.state_path = str(state_path) if state_path else None
        self.rng = np.random.default_rng([self.seed, 0x5EA])  # fallback draws; the strategy has its own
        self.suggested: dict[str, dict[str, Any]] = {}  # trial id -> sample, tokens, candidate facts
        self.live: dict[str, Any] = {}               # trial id -> the strategy's handle, until its reward arrives
        self.known: dict[str, float] = {}            # network key -> reward, for every finished network
        self.waiting: dict[str, list[Any]] = {}      # network key in flight -> handles of proposals repeating it
        self.records: list[dict[str, Any]] = []      # finished trials in completion order
        self.repeats: list[dict[str, Any]] = []      # proposals of known networks, answered from the record
        self.fallbacks = 0                           # random unseen networks drawn for a repeating strategy
        self.replay: list[str] = []  # trials Tune forgot in a kill, to hand out again (see the module doc)
        self.events = 0              # state changes so far; the newer of two copies has more

    # ---- what a strategy implements -------------------------------------------------------------
    def propose(self) -> tuple[Any, list[int]]:
        """A proposal: (a JSON-able handle the strategy knows it by, tokens)."""
        raise NotImplementedError

    def adopt(self, tokens: list[int]) -> Any:
        """Take a network drawn for the strategy (see the module doc) as its own proposal; its handle."""
        raise NotImplementedError

    def learn(self, handle: Any, tokens: list[int], reward: float) -> None:
        """The reward of a proposal (each proposal hears exactly once)."""
        raise NotImplementedError

    def strategy_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_strategy_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # ---- Tune's interface -------------------------------------------------------------------------
    @property
    def space(self) -> Any:
        return self.task.space

    def _config(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {**self.task.shared(), **entry, "tokens": list(entry["tokens"])}

    def _in_flight(self) -> dict[str, str]:
        return {network_key(self.suggested[t]["tokens"]): t for t in self.live}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.replay:
            return self._hand_out_again(trial_id)
        flight = self._in_flight()
        for _ in range(self.max_proposals):
            handle, tokens = self.propose()
            tokens = self.space.canonical(tokens)
            key = network_key(tokens)
            if key in self.known:
                self._hear(handle, tokens, self.known[key], repeat_of=key)
            elif key in flight:
                self.waiting.setdefault(key, []).append(handle)
            else:
                return self._hand_out(trial_id, tokens, handle)
        tokens = self._unseen(flight)
        if tokens is None:
            self._changed()
            size = getattr(self.space, "size", None)
            # Every network of the space trained or training: nothing left to search.
            return Searcher.FINISHED if size is not None and len(self.known) + len(flight) >= size else None
        self.fallbacks += 1
        return self._hand_out(trial_id, tokens, self.adopt(tokens))

    def _unseen(self, flight: dict[str, str]) -> list[int] | None:
        for _ in range(self.fallback_draws):
            tokens = self.space.canonical(self.space.sample(self.rng))
            key = network_key(tokens)
            if key not in self.known and key not in flight:
                return tokens
        return None

    def _hand_out(self, trial_id: str, tokens: list[int], handle: Any) -> dict[str, Any]:
        entry = {"sample": len(self.suggested), "tokens": tokens, **self.task.candidate(tokens)}
        self.suggested[trial_id] = entry
        self.live[trial_id] = handle
        self._changed()
        return self._config(entry)

    def _hand_out_again(self, trial_id: str) -> dict[str, Any]:
        """Give ``trial_id`` the network of the oldest trial Tune forgot; it takes over that trial's id."""
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

    def _hear(self, handle: Any, tokens: list[int], reward: float, repeat_of: str | None = None) -> None:
        self.learn(handle, tokens, reward)
        if repeat_of is not None:
            self.repeats.append({"tokens": repeat_of, "reward": reward})

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return  # already heard (a finished trial Tune ran again after a kill) or not ours
        handle = self.live.pop(trial_id)
        entry = self.suggested[trial_id]
        r = 0.0 if error or not result else float(result.get(self.metric or "reward", 0.0) or 0.0)
        if not math.isfinite(r):
            r = 0.0
        key = network_key(entry["tokens"])
        self.known[key] = r
        self._hear(handle, entry["tokens"], r)
        self.records.append({"trial_id": trial_id, "sample": entry["sample"], "reward": r,
                             "status": "error" if error or not result else result.get("status", "ok")})
        for h in self.waiting.pop(key, []):
            self._hear(h, entry["tokens"], r, repeat_of=key)
        self._changed()

    # ---- state ----------------------------------------------------------------------------------
    def _changed(self) -> None:
        self.events += 1
        if self.state_path:
            jsonstate.write(self.state_path, self.get_state())

    def get_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "strategy": self.name, "events": self.events,
                self.name: self.strategy_state(), "rng": self.rng.bit_generator.state,
                "live": dict(self.live), "known": dict(self.known),
                "waiting": {k: list(v) for k, v in self.waiting.items()},
                "records": [dict(r) for r in self.records], "repeats": [dict(r) for r in self.repeats],
                "fallbacks": self.fallbacks, "suggested": {k: dict(v) for k, v in self.suggested.items()},
                "replay": list(self.replay), "settings": self.task.shared().get("settings", {})}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a searcher state ({STATE_FORMAT})")
        if state.get("strategy") != self.name:
            raise UserError(f"the saved searcher state is of strategy {state.get('strategy')!r}, not {self.name!r}")
        self.load_strategy_state(state[self.name])
        self.rng.bit_generator.state = state["rng"]
        self.live = dict(state["live"])
        self.known = {k: float(v) for k, v in state["known"].items()}
        self.waiting = {k: list(v) for k, v in state["waiting"].items()}
        self.records = [dict(r) for r in state["records"]]
        self.repeats = [dict(r) for r in state["repeats"]]
        self.fallbacks = int(state["fallbacks"])
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
    """A searcher state written by :meth:`NetworkSearcher.save`, or None when unreadable."""
    try:
        state = jsonstate.read(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return None
    return state
