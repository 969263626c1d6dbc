"""Search strategies behind one searcher: distinct networks only, every proposal heard, exact state.

Runs the real searcher classes on the ``tiny`` space (12 networks, 16 token lists: a 1-layer stage
with stride 2 has no use for a skip, so two token lists name each such network) with rewards
computed from the tokens, so that repeats are frequent and every case is deterministic.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ray.tune.search import Searcher

from common.errors import UserError
from search import jsonstate
from search.controller import Controller
from search.searcher import NetworkSearcher, network_key, read_state
from search.strategies import STRATEGIES, make_searcher, searcher_class
from search.strategies.evolution import EvolutionConfig, EvolutionSearcher
from search.taken import Taken
from space.searchspace import get_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyTask:
    """The tiny space; a trial's "training" scores its tokens."""

    space = get_space("tiny")

    def candidate(self, tokens: list[int]) -> dict:
        return {"latency_ms": 1.0 + sum(tokens)}

    def shared(self) -> dict:
        return {"settings": {"space": "tiny"}}


def score(tokens: list[int]) -> float:
    return 0.1 * (1 + tokens[0] + 2 * tokens[4] + 3 * tokens[5] + (tokens[3] == 0))


def drive(searcher, trials: int, concurrency: int) -> list[dict]:
    """Tune's loop in miniature: up to ``concurrency`` trials in flight, the oldest finishing first."""
    handed, flight, done = [], [], False
    while True:
        while not done and len(handed) < trials and len(flight) < concurrency:
            cfg = searcher.suggest(f"t{len(handed)}")
            if cfg is None or cfg == Searcher.FINISHED:
                done = True
                break
            handed.append(cfg)
            flight.append((f"t{len(handed) - 1}", cfg))
        if not flight:
            return handed
        tid, cfg = flight.pop(0)
        searcher.on_trial_complete(tid, {"reward": score(cfg["tokens"]), "status": "ok"})


def counting(name: str, **kw):
    """A searcher of strategy ``name`` that counts the rewards its strategy receives."""

    class Counting(searcher_class(name)):
        def learn(self, handle, tokens, reward):
            self.rewards_heard = getattr(self, "rewards_heard", 0) + 1
            super().learn(handle, tokens, reward)

    return Counting(TinyTask(), **kw)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_network_is_trained_once_and_every_proposal_is_heard(name):
    s = counting(name, seed=3)
    handed = drive(s, trials=40, concurrency=3)
    keys = [network_key(c["tokens"]) for c in handed]
    # The whole space, each network once, then Searcher.FINISHED although 40 trials were allowed.
    assert len(keys) == len(set(keys)) == TinyTask.space.size == 12
    assert all(TinyTask.space.canonical(c["tokens"]) == c["tokens"] for c in handed)
    assert [c["sample"] for c in handed] == list(range(12))
    assert s.suggest("more") == Searcher.FINISHED
    assert s.live == {} and s.waiting == {}
    assert sorted(r["sample"] for r in s.records) == list(range(12))
    assert len(s.repeats) > 0  # 12 networks asked for by a strategy that knows nothing of the others
    assert all(r["reward"] == s.known[r["tokens"]] for r in s.repeats)
    assert s.rewards_heard == len(s.records) + len(s.repeats)
    if name == "controller":
        assert s.controller.feedbacks == s.rewards_heard and s.controller.pending == {}


class Scripted(NetworkSearcher):
    """A strategy that proposes from a list and remembers what it heard."""

    name = "scripted"

    def __init__(self, task, proposals):
        super().__init__(task)
        self.proposals, self.heard, self.adopted = list(proposals), [], []

    def propose(self):
        tokens = self.proposals.pop(0) if len(self.proposals) > 1 else self.proposals[0]
        return len(self.heard) + 1000 * len(self.proposals), list(tokens)

    def adopt(self, tokens):
        self.adopted.append(list(tokens))
        return -1

    def learn(self, handle, tokens, reward):
        self.heard.append((network_key(tokens), reward))

    def strategy_state(self):
        return {}

    def load_strategy_state(self, state):
        pass


A, A_ALIAS, B = [0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]


def test_a_repeat_of_a_network_in_flight_waits_for_its_reward():
    s = Scripted(TinyTask(), [A, A_ALIAS, B])
    assert s.suggest("a")["tokens"] == A
    # The alias of A (its skip means nothing on one stride-2 layer) waits for A's trial; B is handed out.
    assert s.suggest("b")["tokens"] == B
    assert list(s.waiting) == [network_key(A)] and len(s.waiting[network_key(A)]) == 1
    assert s.heard == []
    s.on_trial_complete("a", {"reward": 0.5})
    assert s.heard == [(network_key(A), 0.5), (network_key(A), 0.5)] and s.waiting == {}
    assert s.repeats == [{"tokens": network_key(A), "reward": 0.5}]
    s.on_trial_complete("b", error=True)  # an errored trial: reward 0, once
    s.on_trial_complete("b", {"reward": 0.9})  # Tune reporting it again is ignored
    assert s.heard[-1] == (network_key(B), 0.0) and len(s.heard) == 3


def test_a_strategy_stuck_on_known_networks_gets_an_unseen_one():
    s = Scripted(TinyTask(), [A])
    s.suggest("a")
    s.on_trial_complete("a", {"reward": 0.5})
    cfg = s.suggest("b")
    assert network_key(cfg["tokens"]) != network_key(A) and s.fallbacks == 1
    assert s.adopted == [cfg["tokens"]]
    assert len(s.repeats) == s.max_proposals  # each repeated proposal heard A's reward
    assert {k for k, _ in s.heard} == {network_key(A)}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_state_is_json_and_a_restored_searcher_continues_identically(name, tmp_path):
    a = make_searcher(name, TinyTask(), seed=5, state_path=tmp_path / "searcher.json")
    drive(a, trials=5, concurrency=2)
    a.suggest("x")  # one in flight
    state = read_state(tmp_path / "searcher.json")
    assert state["strategy"] == name and json.loads((tmp_path / "searcher.json").read_text())
    b = make_searcher(name, TinyTask(), seed=99)  # another seed: everything must come from the state
    b.set_state(state)
    a.on_trial_complete("x", {"reward": 0.3})
    b.on_trial_complete("x", {"reward": 0.3})
    for i in range(4):
        ca, cb = a.suggest(f"y{i}"), b.suggest(f"y{i}")
        assert ca == cb
        a.on_trial_complete(f"y{i}", {"reward": score(ca["tokens"])})
        b.on_trial_complete(f"y{i}", {"reward": score(cb["tokens"])})
    assert jsonstate.dumps(a.get_state()) == jsonstate.dumps(b.get_state())
    other = next(n for n in STRATEGIES if n != name)
    with pytest.raises(UserError, match=f"strategy '{name}', not '{other}'"):
        make_searcher(other, TinyTask()).set_state(state)


def drive_out_of_order(searcher, trials: int, concurrency: int, order_seed: int) -> list[dict]:
    """As :func:`drive`, but any trial in flight may finish next (drawn with ``order_seed``), and a searcher
    that asks for an older trial's reward (``suggest`` -> None) waits for the next one to finish."""
    rng = np.random.default_rng(order_seed)
    handed, flight, done = [], [], False
    while True:
        while not done and len(handed) < trials and len(flight) < concurrency:
            cfg = searcher.suggest(f"t{len(handed)}")
            if cfg is None or cfg == Searcher.FINISHED:
                done = cfg == Searcher.FINISHED
                break
            handed.append(cfg)
            flight.append((f"t{len(handed) - 1}", cfg))
        if not flight:
            return handed
        tid, cfg = flight.pop(int(rng.integers(len(flight))))
        searcher.on_trial_complete(tid, {"reward": score(cfg["tokens"]), "status": "ok"})


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_with_a_window_the_networks_do_not_depend_on_the_order_trials_finish(name, tmp_path):
    runs = []
    for order in range(3):
        s = make_searcher(name, TinyTask(), seed=4, window=3, state_path=tmp_path / f"{order}.json")
        handed = drive_out_of_order(s, trials=10, concurrency=3, order_seed=order)
        s.hear_all()
        runs.append((handed, s))
        # Each network once, every trial heard once and every repeated proposal answered, nothing left waiting.
        keys = [network_key(c["tokens"]) for c in handed]
        assert len(keys) == len(set(keys)) == 10 and s.samples_heard == len(s.records) == 10
        assert s.live == {} and s.unheard == {} and s.waiting == {}
        assert all(r["reward"] == s.known[r["tokens"]] for r in s.repeats)
    assert runs[0][0] == runs[1][0] == runs[2][0]
    assert [r["tokens"] for r in runs[0][1].repeats] == [r["tokens"] for r in runs[2][1].repeats]
    # The state says so too, and a searcher continued from it goes on alike.
    b = make_searcher(name, TinyTask(), seed=99, window=3, state_path=tmp_path / "2.json")
    b.resume()
    a = runs[2][1]
    assert a.suggest("z") == b.suggest("z")


def test_unknown_strategy_is_one_line():
    with pytest.raises(UserError, match="unknown search strategy 'sgd'; choose one of controller, evolution, random"):
        searcher_class("sgd")


def test_evolution_mutates_one_decision_into_another_network():
    space = get_space("mnasnet")

    class Task(TinyTask):
        pass

    Task.space = space
    s = EvolutionSearcher(Task(), EvolutionConfig(population=4, tournament=2), seed=1)
    parent = space.sample(0)
    for _ in range(50):
        child = s.mutate(parent)
        assert sum(a != b for a, b in zip(parent, child)) == 1
        assert space.canonical(child) != space.canonical(parent)
    with pytest.raises(UserError):
        EvolutionConfig(population=3, tournament=4)


def test_evolution_keeps_the_youngest_population():
    s = EvolutionSearcher(TinyTask(), EvolutionConfig(population=3, tournament=2), seed=0)
    for r in (0.1, 0.9, 0.2, 0.3):
        s.learn(None, [0] * 7, r)
    assert [r for _, r in s.population] == [0.9, 0.2, 0.3]  # the oldest died, good or not


def test_controller_leaves_torch_global_generator_alone():
    torch.manual_seed(123)
    expect = torch.rand(3)
    torch.manual_seed(123)
    a = Controller([3, 4, 2], seed=7)
    assert torch.equal(torch.rand(3), expect)
    b = Controller([3, 4, 2], seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.policy.state_dict().values(), b.policy.state_dict().values()))


def test_controller_draws_around_taken_networks():
    n = [2, 3, 2]
    ctl = Controller(n, seed=0)
    taken = Taken(n)
    seen = []
    for _ in range(12):
        s = ctl.sample(taken)
        seen.append(tuple(s.tokens))
        taken.add(s.tokens)
    assert sorted(seen) == sorted(np.ndindex(*n))  # all 12 token lists, none twice
    assert taken.full(())
