"""The controller learns, is reproducible, and its whole state round-trips; the reward's formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.errors import UserError
from search.controller import Controller, ControllerConfig
from search.reward import Reward, reward
from space.searchspace import get_space

torch.set_num_threads(1)


def _match_reward(target):
    return lambda tokens: float(np.mean([a == b for a, b in zip(tokens, target)]))


@pytest.mark.parametrize("method", ["reinforce", "ppo"])
def test_controller_learns_fixed_reward(method):
    # The full MnasNet space (49 decisions), the default settings but for the method.
    space = get_space("mnasnet")
    decisions = space.decisions
    rng = np.random.default_rng(3)
    target = [int(rng.integers(d.n)) for d in decisions]
    fn = _match_reward(target)
    ctl = Controller([d.n for d in decisions], ControllerConfig(method=method), seed=0)
    rewards = []
    for _ in range(200):
        s = ctl.sample()
        rewards.append(fn(s.tokens))
        ctl.feedback(s.key, rewards[-1])
    uniform = float(np.mean([1 / d.n for d in decisions]))  # ~0.40: the expected score of a uniform draw
    first, last = np.mean(rewards[:ctl.config.batch_size]), np.mean(rewards[-40:])
    assert abs(first - uniform) < 0.15  # the first batch, before any reward, is drawn by the fresh policy
    assert last > uniform + 0.25, (first, last)  # learning must lift it clearly
    assert ctl.updates == 200 // ctl.config.batch_size


def test_controller_is_reproducible_and_state_round_trips():
    n = [4, 3, 2, 3, 3, 2]
    a, b = Controller(n, seed=7), Controller(n, seed=7)
    assert [a.sample().tokens for _ in range(5)] == [b.sample().tokens for _ in range(5)]
    for k in list(a.pending)[:4]:
        a.feedback(k, 0.5 + 0.1 * k)
    a.feedback(4, 0.9)  # a 5th reward sits collected, not yet used
    pending = a.sample()
    state = a.state_dict()
    torch.save(state, "/dev/null")  # must be serialisable
    c = Controller.from_state_dict(state)
    assert c.pending.keys() == a.pending.keys() and c.pending[pending.key].tokens == pending.tokens
    assert [s.tokens for s, _ in c.collected] == [s.tokens for s, _ in a.collected]
    assert c.baseline == a.baseline and c.updates == a.updates == 1
    # Same future: same samples and same updates.
    for ctl in (a, c):
        for _ in range(3):
            s = ctl.sample()
            ctl.feedback(s.key, sum(s.tokens) / 10)
    assert [a.sample().tokens for _ in range(4)] == [c.sample().tokens for _ in range(4)]
    assert a.history == c.history
    pa = a.probabilities()
    assert all(math.isclose(sum(p), 1.0, rel_tol=1e-5) for p in pa)
    assert pa == c.probabilities()


def test_controller_tokens_are_valid_and_errors():
    space = get_space("mobilenet_v3")
    ctl = Controller.for_space(space, seed=1)
    for _ in range(20):
        toks = ctl.sample().tokens
        space.decode(toks, resolution=32)  # raises if any token is out of range
    with pytest.raises(KeyError):
        ctl.feedback(999, 1.0)
    with pytest.raises(UserError):
        ControllerConfig(method="sgd")
    other = Controller([2, 2], seed=0)
    with pytest.raises(UserError, match="another search space"):
        other.load_state_dict(ctl.state_dict())


def test_failed_sample_counts_as_zero():
    ctl = Controller([3, 3], ControllerConfig(batch_size=2), seed=0)
    s1, s2 = ctl.sample(), ctl.sample()
    ctl.feedback(s1.key, float("nan"))
    stats = ctl.feedback(s2.key, 1.0)
    assert stats is not None and stats["mean_reward"] == pytest.approx(0.5)


def test_reward_formula():
    assert reward(0.8, 15, 15) == pytest.approx(0.8)
    assert reward(0.8, 30, 15) == pytest.approx(0.8 * 2 ** -0.15)
    assert reward(0.8, 7.5, 15) == pytest.approx(0.8 * 0.5 ** -0.15)
    hard = Reward.from_options(15, alpha=0.0, beta=-1.0)
    assert hard(0.8, 7.5) == pytest.approx(0.8) and hard(0.8, 30) == pytest.approx(0.4)
    soft = Reward.from_options(15, alpha=-0.07)
    assert soft.exponents == (-0.07, -0.07)
    assert Reward.from_options(10).exponents == (-0.15, -0.15)
    assert Reward.from_options(10, w=-0.3)(0.5, 20) == pytest.approx(0.5 * 2 ** -0.3)
    assert reward(float("nan"), 10, 10) == 0.0 and reward(0.9, float("inf"), 10) == 0.0
    for bad in (0, -5, float("inf"), float("nan")):
        with pytest.raises(UserError):
            Reward(bad)
    with pytest.raises(UserError):
        Reward.from_options(10, w=-0.1, alpha=-0.2)
    with pytest.raises(UserError):
        Reward(10, alpha=0.5)


def test_local_moves_change_one_decision_of_an_elite_and_avoid_taken_networks():
    from search.taken import Taken

    n = [3, 4, 2, 3, 5, 3]
    ctl = Controller(n, ControllerConfig(local=1.0, local_after=4, elite=2), seed=1)
    taken = Taken(n)
    first = []
    for _ in range(4):  # before local_after rewards: the policy's own draws
        s = ctl.sample(taken)
        taken.add(s.tokens)
        first.append(s.tokens)
        ctl.feedback(s.key, sum(s.tokens) / 20)
    assert ctl.best and len(ctl.best) == 2
    for _ in range(12):
        elites = [t for t, _ in ctl.best]
        s = ctl.sample(taken)
        diffs = [sum(a != b for a, b in zip(s.tokens, e)) for e in elites]
        assert min(diffs) == 1, (s.tokens, elites)
        assert not taken.full(s.tokens)
        assert all(0 <= t < k for t, k in zip(s.tokens, n))
        assert math.isfinite(s.log_prob) and s.log_prob < 0
        taken.add(s.tokens)
        ctl.feedback(s.key, sum(s.tokens) / 20)
    # Same seed, same settings: the same proposals after a round trip of the state.
    again = Controller.from_state_dict(ctl.state_dict())
    assert [ctl.sample(taken).tokens for _ in range(3)] == [again.sample(taken).tokens for _ in range(3)]


def test_local_moves_go_on_from_the_next_best_once_the_elites_neighbours_are_taken():
    from search.taken import Taken

    n = [3, 3, 3]
    rewards = {(a, b, c): 9 * a + 3 * b + c for a in range(3) for b in range(3) for c in range(3)}
    for pool, from_pool in ((1, False), (3, True)):
        ctl = Controller(n, ControllerConfig(local=1.0, elite=1, local_pool=pool, batch_size=1), seed=0)
        taken = Taken(n)
        for tokens in ([2, 2, 2], [1, 1, 1], [0, 0, 0]):  # the best, then two more that enter the pool
            s = ctl.adopt(tokens)
            taken.add(tokens)
            ctl.feedback(s.key, rewards[tuple(tokens)])
        assert [t for t, _ in ctl.best] == [[2, 2, 2]] and len(ctl.pool) == pool
        for d in range(3):  # every neighbour of the elite handed out already
            for c in range(3):
                taken.add([2, 2, 2][:d] + [c] + [2, 2, 2][d + 1:])
        tokens = ctl._local(taken)
        if not from_pool:
            assert tokens is None  # the former behaviour: the caller falls back to a policy draw
            continue
        assert tokens is not None and not taken.full(tokens[0])
        assert sum(a != b for a, b in zip(tokens[0], [1, 1, 1])) == 1  # a neighbour of the second best
    state = ctl.state_dict()
    assert Controller.from_state_dict(state).pool == ctl.pool  # resumed searches keep the pool


def test_local_settings_are_checked():
    with pytest.raises(UserError, match="local"):
        ControllerConfig(local=1.5)
    with pytest.raises(UserError, match="local"):
        ControllerConfig(local_after=-1)
    with pytest.raises(UserError, match="local_pool"):
        ControllerConfig(local_pool=-1)
