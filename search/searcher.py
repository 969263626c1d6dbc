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
* **Reproducible whatever the timing** (``window``, the trials run at once; the real search sets it).
  Concurrent trials finish in an order that depends on the machine's load, and a strategy that
  learnt in that order would propose other networks on every run. So trials' rewards reach the
  strategy in sample order, and sample ``k`` is proposed after exactly the rewards of samples
  ``0 .. k - window``: a reward that arrives earlier waits, and a proposal whose older trials have
  not all ended waits for them. A repeat is answered from a reward the strategy has already heard,
  or waits for the sample it repeats to be heard. Each network is therefore proposed from the same
  strategy state in every run with the same seed and options; the price is that a trial which
  finishes before an older one leaves its slot idle until the older one ends (``waited_s`` adds up
  that idle time). When the budget is done the strategy hears the rewards still waiting
  (:meth:`hear_all`). Without a window (the tabular benchmark, whose simulated clock is already
  deterministic) a reward is heard as it arrives.
* **The run's state is this JSON, and only this.** The whole state - the strategy's, which trial
  holds which network, every trial's outcome, every reward heard - is written atomically to
  ``state_path`` (the run's ``searcher.json``) after every suggestion and every outcome
  (:mod:`search.jsonstate`: strict JSON, no pickle, so reading it never runs code). ``--resume``
  builds a new searcher from that file (:meth:`resume`) and a new Tune experiment around it; nothing
  Tune saved in an earlier sitting is read, so ``--resume`` unpickles nothing (within a sitting, Tune
  writes pickles of its own into ``tune/sitting-<n>/`` and reads back only the ``error.pkl`` of that
  sitting's failed trials, for the result object of ``Tuner.fit``, which is not used). Trials that
  were running when the run stopped (Ctrl-C, a time budget, a kill) are handed out again - same
  sample, same network - before any new proposal, and de-duplication carries over (``known``,
  ``waiting``). A trial whose result reached the driver just before a kill, but not the searcher,
  returns that stored result instead of training again (:func:`search.trial.candidate_reports`), so
  each network gets exactly one reward, and the strategy hears one reward per trial plus one per
  repeated proposal.

What a trial is told about its network beyond the tokens (the real search: the latency predicted
at the deployment resolution, the trial settings; the tabular benchmark: a table row) comes from a
*task* object (:class:`SearchTask`), so the same searcher drives ``cli.py search`` and
``bench/search_tabular.py``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from ray.tune.search import Searcher

from common.errors import UserError
from search import jsonstate
from search.trial import RESULT_KEYS

STATE_FORMAT = "hwnas-searcher/3"
# What a finished trial's record keeps of its result (the trial's own keys, the node it ran on, and for a
# trial ASHA stopped the reward it reached, when the strategy learned a projected one: search.stopping).
RECORD_KEYS = tuple(k for k in RESULT_KEYS if k not in ("tokens", "status", "reward")) + ("node", "reward_at_stop")


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

    name: ClassVar[str] = ""
    max_proposals: ClassVar[int] = 100  # proposals for one trial before a random unseen network is drawn
    fallback_draws: ClassVar[int] = 10_000  # random draws to find an unseen network before giving up for now

    def __init__(self, task: SearchTask, seed: int = 0, state_path: str | os.PathLike | None = None,
                 metric: str = "reward", mode: str = "max", window: int | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.task = task  # never part of the state: a resumed run builds its task (and predictor) anew
        self.seed = int(seed)
        self.state_path = str(state_path) if state_path else None
        self.rng = np.random.default_rng([self.seed, 0x5EA])  # fallback draws; the strategy has its own
        self.suggested: dict[str, dict[str, Any]] = {}  # trial id -> sample, tokens, candidate facts
        self.live: dict[str, Any] = {}               # trial id -> the strategy's handle, until its outcome arrives
        self.unheard: dict[str, dict[str, Any]] = {}  # sample -> handle and reward, finished but not yet heard
        self.samples_heard = 0                       # trials' rewards the strategy heard (with a window: samples 0 .. samples_heard-1)
        self.known: dict[str, float] = {}            # network key -> reward, for every network the strategy heard
        self.waiting: dict[str, list[Any]] = {}      # network key handed out, not heard -> handles of proposals repeating it
        self.records: list[dict[str, Any]] = []      # finished trials' outcomes, in completion order
        self.repeats: list[dict[str, Any]] = []      # proposals of known networks, answered from the record
        self.fallbacks = 0                           # random unseen networks drawn for a repeating strategy
        self.replay: list[str] = []  # trials an earlier sitting left running, to hand out again (see the module doc)
        self.events = 0              # state changes so far
        self.window = None if window is None else max(1, int(window))
        self.waited_s = 0.0          # seconds a free trial slot waited for an older trial (see the module doc)
        self._waiting_since: float | None = None

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

    def _in_flight(self) -> set[str]:
        """Networks handed out whose reward the strategy has not heard (running, or finished and waiting)."""
        return {network_key(e["tokens"]) for e in self.suggested.values()} - set(self.known)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.replay:
            return self._hand_out_again(trial_id)
        if self.window is not None:
            # Sample k is proposed after the rewards of samples 0 .. k - window, no more and no fewer.
            need = max(0, len(self.suggested) - self.window + 1)
            self._release(need)
            if self.samples_heard < need:
                if self._waiting_since is None:
                    self._waiting_since = time.monotonic()
                return None  # an older trial is still running: Tune asks again
            if self._waiting_since is not None:  # what reproducibility cost: a slot idle until the older trial ended
                self.waited_s += time.monotonic() - self._waiting_since
                self._waiting_since = None
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
            return Searcher.FINISHED if self.exhausted else None
        self.fallbacks += 1
        return self._hand_out(trial_id, tokens, self.adopt(tokens))

    @property
    def exhausted(self) -> bool:
        """Every network of the space handed out: nothing left to search."""
        size = getattr(self.space, "size", None)
        return size is not None and len({network_key(e["tokens"]) for e in self.suggested.values()}) >= size

    def _unseen(self, flight: set[str]) -> list[int] | None:
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
        """Give ``trial_id`` the network of the oldest trial an earlier sitting left running; it takes over
        that trial's place."""
        old = self.replay.pop(0)
        entry = self.suggested.pop(old)
        self.suggested[trial_id] = entry
        self.live[trial_id] = self.live.pop(old)
        self._changed()
        return self._config(entry)

    def _hear(self, handle: Any, tokens: list[int], reward: float, repeat_of: str | None = None) -> None:
        self.learn(handle, tokens, reward)
        if repeat_of is not None:
            self.repeats.append({"tokens": repeat_of, "reward": reward})

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.live:
            return  # not ours, or heard already
        handle = self.live.pop(trial_id)
        entry = self.suggested[trial_id]
        r = 0.0 if error or not result else float(result.get(self.metric or "reward", 0.0) or 0.0)
        if not math.isfinite(r):
            r = 0.0
        status = "error" if error or not result else result.get("status", "ok")
        metrics = {k: result[k] for k in RECORD_KEYS if k in result} if result and not error else {}
        self.records.append({"trial_id": trial_id, "sample": entry["sample"], "status": status, "reward": r,
                             **metrics})
        self.unheard[str(entry["sample"])] = {"handle": handle, "reward": r}
        if self.window is None:
            self._release()
        self._changed()

    def note_error(self, trial_id: str, line: str) -> None:
        """Keep the one-line error of a trial Tune recorded as failed (Tune tells callbacks, not searchers)."""
        for rec in reversed(self.records):
            if rec["trial_id"] == trial_id:
                rec["error"] = line
                self._changed()
                return

    def _release(self, upto: int | None = None) -> None:
        """Let the strategy hear the trials' rewards that arrived: with a window, in sample order and only
        those of samples below ``upto`` (None: all up to the first still missing); without, all of them."""
        tokens_of = {e["sample"]: e["tokens"] for e in self.suggested.values()}
        changed = False
        while self.unheard:
            if self.window is None:
                sample = next(iter(self.unheard))
            elif (upto is None or self.samples_heard < upto) and str(self.samples_heard) in self.unheard:
                sample = str(self.samples_heard)
            else:
                break
            got = self.unheard.pop(sample)
            tokens, r = tokens_of[int(sample)], float(got["reward"])
            key = network_key(tokens)
            self.known[key] = r
            self._hear(got["handle"], tokens, r)
            for h in self.waiting.pop(key, []):
                self._hear(h, tokens, r, repeat_of=key)
            self.samples_heard += 1
            changed = True
        if changed:
            self._changed()

    def hear_all(self) -> None:
        """At the end of the budget: the strategy hears every reward that arrived (no proposal waits on them)."""
        self._release()

    @property
    def finished(self) -> int:
        """Trials with an outcome (ok, diverged, oom or error)."""
        return len(self.records)

    # ---- state ----------------------------------------------------------------------------------
    def _changed(self) -> None:
        self.events += 1
        if self.state_path:
            jsonstate.write(self.state_path, self.get_state())

    def get_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "strategy": self.name, "events": self.events,
                self.name: self.strategy_state(), "rng": self.rng.bit_generator.state,
                "window": self.window, "samples_heard": self.samples_heard, "waited_s": self.waited_s,
                "live": dict(self.live), "unheard": {k: dict(v) for k, v in self.unheard.items()},
                "known": dict(self.known),
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
        self.window = None if state["window"] is None else int(state["window"])
        self.samples_heard = int(state["samples_heard"])
        self.waited_s = float(state["waited_s"])
        self.live = dict(state["live"])
        self.unheard = {k: dict(v) for k, v in state["unheard"].items()}
        self.known = {k: float(v) for k, v in state["known"].items()}
        self.waiting = {k: list(v) for k, v in state["waiting"].items()}
        self.records = [dict(r) for r in state["records"]]
        self.repeats = [dict(r) for r in state["repeats"]]
        self.fallbacks = int(state["fallbacks"])
        self.suggested = {k: dict(v) for k, v in state["suggested"].items()}
        self.replay = list(state["replay"])
        self.events = int(state["events"])

    def resume(self) -> None:
        """Continue from the run's ``searcher.json`` (when there is one): trials it records as handed out but
        not finished are handed out again first."""
        if not self.state_path or not Path(self.state_path).exists():
            return  # the run stopped before its first suggestion: start afresh
        state = read_state(self.state_path)
        if state is None:
            raise UserError(f"--resume: {self.state_path} is unreadable or of an older hwnas; this run cannot be "
                            "resumed, start a new one")
        self.set_state(state)
        self.replay = [t for t in self.suggested if t in self.live]
        self._changed()

    def save(self, checkpoint_path: str) -> None:
        """Tune's experiment checkpoints get no copy: the run's ``searcher.json`` is the state."""

    def restore(self, checkpoint_path: str) -> None:
        """Never used: ``--resume`` builds a new searcher from ``searcher.json`` (:meth:`resume`)."""
        raise NotImplementedError("a search resumes from its searcher.json, not from Tune's checkpoint")


def read_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """A searcher state written by :class:`NetworkSearcher`, or None when unreadable or of another format."""
    try:
        state = jsonstate.read(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return None
    return state
