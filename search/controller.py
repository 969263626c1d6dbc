"""The RNN controller: an LSTM policy over a list of categorical decisions, trained by policy gradient.

Following Zoph & Le (2017) and MnasNet (Tan et al. 2019, Section 3): the controller emits one token
per decision; step ``t`` feeds the embedding of token ``t-1`` (a start token at ``t = 0``) into a
one-layer LSTM, and a per-decision linear head turns the hidden state into that decision's logits.
Logits go through ``tanh_c * tanh(logits / temperature)`` as in ENAS (Pham et al. 2018), which
keeps the early policy from collapsing onto one choice.

Training, per batch of rewards: REINFORCE (Williams 1992) or PPO's clipped surrogate (Schulman et
al. 2017; what MnasNet used), with an entropy bonus. The advantage of a reward is by default its
rank among the latest ``window`` rewards, mapped to [-1, 1] (fitness shaping, Wierstra et al.
2014): it does not depend on the reward's scale, and a new best network counts fully at once, where
an exponential moving-average baseline (ENAS, MnasNet; ``advantage="ema"``) needs many batches to
move. Each update also maximises the likelihood of the ``elite`` best samples so far (priority
queue training, Abolafia et al. 2018), which pulls the policy towards the best networks found
while the rank term still explores; :meth:`sample` with ``taken`` draws around the networks
already handed out, so a concentrated policy proposes their neighbours instead of repeats, and a
share ``local`` of the draws re-draws one decision of an elite sample from the policy (a local move
around the best networks, as evolution's mutations walk, but weighted by the policy). These
defaults won on the tabular benchmark at 25-200 trials (docs/benchmarks.md). The controller knows
nothing of networks: it sees ``n_choices`` per decision and rewards.

Samples are handed out with an integer key; their rewards may come back in any order (concurrent
trials). Rewards collect until ``batch_size`` of them arrived, then one update runs. Everything -
weights, optimiser, baseline, RNG, pending and collected samples - is in :meth:`state_dict`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from common.errors import UserError
from search.taken import Taken


@dataclass
class ControllerConfig:
    """Hyper-parameters for budgets of tens to hundreds of samples; lr, method, advantage, elite, local
    and local_pool were chosen on the tabular benchmark's tuning half (docs/benchmarks.md), the rest
    follow ENAS/NAS practice."""

    hidden: int = 64
    lr: float = 0.03
    batch_size: int = 4            # rewards per policy update (the search sets its concurrency)
    baseline_decay: float = 0.8    # EMA baseline: b <- decay * b + (1 - decay) * mean(batch rewards)
    entropy_weight: float = 0.005
    temperature: float = 5.0
    tanh_c: float = 2.5
    method: str = "reinforce"      # or "ppo", MnasNet's choice (it learnt more slowly here)
    ppo_epochs: int = 4
    ppo_clip: float = 0.2
    grad_clip: float = 5.0
    advantage: str = "rank"        # rank among the latest `window` rewards, or "ema": reward - EMA baseline
    window: int = 32
    advantage_norm: bool = True    # ema: scale advantages by the running reward spread
    elite: int = 2                 # best samples so far, replayed by maximum likelihood at each update
    elite_weight: float = 1.0
    local: float = 0.9             # share of proposals that re-draw one decision of an elite sample
    local_after: int = 0           # rewards heard before those local proposals start
    local_pool: int = 8            # best samples that local moves may start from: the elite first, the
    #                                next best once every fresh neighbour of the elite was handed out

    def __post_init__(self) -> None:
        if self.advantage not in ("ema", "rank"):
            raise UserError(f"controller advantage {self.advantage!r} is unknown; use rank or ema")
        if self.method not in ("reinforce", "ppo"):
            raise UserError(f"controller method {self.method!r} is unknown; use reinforce or ppo")
        if self.batch_size < 1 or self.hidden < 1:
            raise UserError("controller batch_size and hidden must be >= 1")
        if not 0.0 <= self.local <= 1.0 or self.local_after < 0:
            raise UserError("controller local must lie in [0, 1] and local_after be >= 0")
        if self.elite < 0 or self.local_pool < 0:
            raise UserError("controller elite and local_pool must be >= 0")


class _Policy(nn.Module):
    def __init__(self, n_choices: Sequence[int], hidden: int) -> None:
        super().__init__()
        self.n_choices = list(n_choices)
        # One shared embedding table; decision d's choice c sits at offsets[d] + c, the start token at 0.
        offsets = [1]
        for n in self.n_choices[:-1]:
            offsets.append(offsets[-1] + n)
        self.offsets = offsets
        self.embed = nn.Embedding(1 + sum(self.n_choices), hidden)
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.n_choices)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def step_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedding indices fed at each step for a batch of token rows (teacher forcing)."""
        b = tokens.shape[0]
        prev = tokens[:, :-1] + torch.tensor(self.offsets[:-1], dtype=torch.long)
        return torch.cat([torch.zeros(b, 1, dtype=torch.long), prev], dim=1)


@dataclass
class Sample:
    """A sampled token list with its log-probability under the policy that drew it."""

    key: int
    tokens: list[int]
    log_prob: float


class Controller:
    """LSTM policy over ``n_choices`` (choice count per decision) with policy-gradient updates."""

    def __init__(self, n_choices: Sequence[int], config: ControllerConfig | None = None, seed: int = 0) -> None:
        n_choices = [int(n) for n in n_choices]
        if not n_choices or min(n_choices) < 1:
            raise UserError("the controller needs at least one decision, each with at least one choice")
        self.config = config or ControllerConfig()
        self.seed = int(seed)
        # Weights from the seed without touching torch's global generator (the caller's training
        # or sampling must not change with a controller made in between).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.policy = _Policy(n_choices, self.config.hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.baseline: float | None = None
        self.reward_var: float | None = None
        self.next_key = 0
        self.pending: dict[int, Sample] = {}
        self.collected: list[tuple[Sample, float]] = []
        self.updates = 0
        self.feedbacks = 0  # rewards received: one per trial and one per proposal that repeated a network
        self.history: list[dict[str, float]] = []  # per update: mean reward, baseline, entropy, loss
        self.window: list[float] = []  # the latest rewards (config.window), for rank advantages
        self.best: list[tuple[list[int], float]] = []  # the best samples so far (config.elite), best first
        self.pool: list[tuple[list[int], float]] = []  # the best max(elite, local_pool) so far, best first

    @classmethod
    def for_space(cls, space: Any, config: ControllerConfig | None = None, seed: int = 0) -> Controller:
        """A controller over a :class:`space.searchspace.SearchSpace`'s decisions."""
        return cls([d.n for d in space.decisions], config, seed)

    @property
    def n_choices(self) -> list[int]:
        return self.policy.n_choices

    # ---- the policy ------------------------------------------------------------------------
    def _logits(self, h: torch.Tensor, d: int) -> torch.Tensor:
        c = self.config
        return c.tanh_c * torch.tanh(self.policy.heads[d](h) / c.temperature)

    def _states(self, tokens: torch.Tensor):
        """The LSTM's hidden state before each decision, for rows of ``tokens`` (teacher forcing)."""
        b = tokens.shape[0]
        inputs = self.policy.embed(self.policy.step_inputs(tokens))
        h = torch.zeros(b, self.config.hidden)
        cell = torch.zeros(b, self.config.hidden)
        for d in range(len(self.n_choices)):
            h, cell = self.policy.lstm(inputs[:, d], (h, cell))
            yield d, h

    def _evaluate(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy (summed over decisions) of each token row, with gradients."""
        logp = torch.zeros(tokens.shape[0])
        ent = torch.zeros(tokens.shape[0])
        for d, h in self._states(tokens):
            lsm = torch.log_softmax(self._logits(h, d), dim=-1)
            logp = logp + lsm.gather(1, tokens[:, d:d + 1]).squeeze(1)
            ent = ent - (lsm.exp() * lsm).sum(-1)
        return logp, ent

    @torch.no_grad()
    def _draw(self, taken: Taken | None = None) -> tuple[list[int], float]:
        h = torch.zeros(1, self.config.hidden)
        cell = torch.zeros(1, self.config.hidden)
        x = self.policy.embed(torch.zeros(1, dtype=torch.long))
        tokens: list[int] = []
        logp = 0.0
        for d in range(len(self.n_choices)):
            h, cell = self.policy.lstm(x, (h, cell))
            lsm = torch.log_softmax(self._logits(h, d), dim=-1)
            p = lsm.exp()[0]
            if taken is not None:
                full = [taken.full((*tokens, c)) for c in range(self.n_choices[d])]
                if any(full) and not all(full):
                    p = p * torch.tensor([0.0 if f else 1.0 for f in full])
            t = int(torch.multinomial(p, 1, generator=self.generator).item())
            tokens.append(t)
            logp += float(lsm[0, t])  # under the policy itself, as _evaluate scores it
            x = self.policy.embed(torch.tensor([self.policy.offsets[d] + t]))
        return tokens, logp

    @torch.no_grad()
    def _local(self, taken: Taken | None = None, fresh: Callable[[list[int]], bool] | None = None,
               tries: int = 8) -> tuple[list[int], float] | None:
        """An elite sample with one decision re-drawn from the policy's own distribution at that step
        (given the elite's earlier tokens), the elite's current choice and taken networks excluded;
        ``fresh`` (if given) must accept the result (e.g. a network not yet handed out once token
        lists that build the same network count as one). When ``tries`` attempts from the elite find
        none (late in a search their neighbourhoods are used up), the rest of the pool is walked in
        rank order, each of its samples' decisions in turn (hill climbing that goes on from the next
        best instead of leaving it to the policy's draws). None when nothing fresh is found."""
        movable = [d for d, n in enumerate(self.n_choices) if n > 1]
        if not self.best or not movable:
            return None
        for _ in range(tries):
            elite = self.best[int(torch.randint(len(self.best), (1,), generator=self.generator))][0]
            d = movable[int(torch.randint(len(movable), (1,), generator=self.generator))]
            tokens = self._move(elite, [d], taken, fresh)
            if tokens is not None:
                return tokens, float(self._evaluate(torch.tensor([tokens], dtype=torch.long))[0][0])
        for parent, _ in self.pool[len(self.best):]:
            order = torch.randperm(len(movable), generator=self.generator).tolist()
            tokens = self._move(parent, [movable[i] for i in order], taken, fresh)
            if tokens is not None:
                return tokens, float(self._evaluate(torch.tensor([tokens], dtype=torch.long))[0][0])
        return None

    def _move(self, parent: list[int], decisions: list[int], taken: Taken | None,
              fresh: Callable[[list[int]], bool] | None) -> list[int] | None:
        """``parent`` with the first of ``decisions`` that allows it re-drawn (see :meth:`_local`)."""
        states, last = {}, max(decisions)
        for step, h in self._states(torch.tensor([parent], dtype=torch.long)):
            states[step] = h
            if step == last:  # the LSTM need not run past the last decision asked for
                break
        for d in decisions:
            p = torch.softmax(self._logits(states[d], d), dim=-1)[0].clone()
            p[parent[d]] = 0.0
            if taken is not None:
                for c in range(self.n_choices[d]):
                    if taken.full([*parent[:d], c, *parent[d + 1:]]):
                        p[c] = 0.0
            if float(p.sum()) <= 0.0:
                continue
            tokens = list(parent)
            tokens[d] = int(torch.multinomial(p, 1, generator=self.generator).item())
            if fresh is None or fresh(tokens):
                return tokens
        return None

    def sample(self, taken: Taken | None = None, fresh: Callable[[list[int]], bool] | None = None) -> Sample:
        """Draw one token list, avoiding those in ``taken`` where it can; it stays pending until
        :meth:`feedback` gives its reward. With ``config.local`` > 0, once ``local_after`` rewards
        were heard, that share of the draws re-draws one decision of an elite sample instead (a
        local move around the best networks, where a concentrated policy's own draws stay near its mode),
        each one accepted by ``fresh`` where that is given."""
        c = self.config
        drawn = None
        if c.local > 0 and self.feedbacks >= c.local_after and \
                float(torch.rand(1, generator=self.generator)) < c.local:
            drawn = self._local(taken, fresh)
        tokens, logp = drawn or self._draw(taken)
        s = Sample(self.next_key, tokens, logp)
        self.next_key += 1
        self.pending[s.key] = s
        return s

    @torch.no_grad()
    def adopt(self, tokens: Sequence[int]) -> Sample:
        """Take a token list drawn elsewhere as a pending sample, with its log-probability under the policy."""
        row = torch.tensor([[int(t) for t in tokens]], dtype=torch.long)
        s = Sample(self.next_key, [int(t) for t in tokens], float(self._evaluate(row)[0][0]))
        self.next_key += 1
        self.pending[s.key] = s
        return s

    @torch.no_grad()
    def probabilities(self) -> list[list[float]]:
        """Per-decision choice probabilities along the greedy (most likely) token path."""
        h = torch.zeros(1, self.config.hidden)
        cell = torch.zeros(1, self.config.hidden)
        x = self.policy.embed(torch.zeros(1, dtype=torch.long))
        out = []
        for d in range(len(self.n_choices)):
            h, cell = self.policy.lstm(x, (h, cell))
            p = torch.softmax(self._logits(h, d), dim=-1)[0]
            out.append([float(v) for v in p])
            x = self.policy.embed(torch.tensor([self.policy.offsets[d] + int(p.argmax())]))
        return out

    def greedy(self) -> list[int]:
        """The most likely token at each step (following the argmax path)."""
        return [max(range(len(p)), key=p.__getitem__) for p in self.probabilities()]

    # ---- learning ----------------------------------------------------------------------------
    def feedback(self, key: int, reward: float) -> dict[str, float] | None:
        """Give a pending sample its reward (non-finite counts as 0). Runs an update when a batch is full."""
        sample = self.pending.pop(key, None)
        if sample is None:
            raise KeyError(f"no pending controller sample with key {key}")
        r = float(reward)
        self.collected.append((sample, r if math.isfinite(r) else 0.0))
        self.feedbacks += 1
        if len(self.collected) >= self.config.batch_size:
            return self.update()
        return None

    def discard(self, key: int) -> None:
        """Forget a pending sample without learning from it (e.g. a trial cancelled before it ran)."""
        self.pending.pop(key, None)

    def update(self) -> dict[str, float] | None:
        """One policy-gradient step on the collected rewards."""
        if not self.collected:
            return None
        c = self.config
        samples = [s for s, _ in self.collected]
        rewards = torch.tensor([r for _, r in self.collected], dtype=torch.float32)
        self.collected = []
        mean_r = float(rewards.mean())
        if self.baseline is None:
            # First batch: centre on its own mean so the first step is not a blind push upwards.
            self.baseline, self.reward_var = mean_r, float(rewards.var(unbiased=False)) if len(rewards) > 1 else 0.0
        self.window = (self.window + [float(r) for r in rewards])[-c.window:]
        if c.advantage == "rank":
            # Fitness shaping (Wierstra et al. 2014): the batch's ranks within the recent rewards, in [-1, 1].
            ref = torch.tensor(self.window)
            adv = torch.stack([((ref < r).float().mean() + 0.5 * (ref == r).float().mean()) * 2 - 1 for r in rewards])
        else:
            adv = rewards - self.baseline
            if c.advantage_norm and (self.reward_var or 0.0) > 1e-12:
                adv = adv / math.sqrt(self.reward_var)
        best = {tuple(t): r for t, r in self.pool}
        for sample, r in zip(samples, rewards):
            best[tuple(sample.tokens)] = float(r)
        self.pool = [(list(t), r) for t, r in sorted(best.items(), key=lambda e: -e[1])[:max(c.elite, c.local_pool)]]
        self.best = self.pool[:c.elite]
        tokens = torch.tensor([s.tokens for s in samples], dtype=torch.long)
        old_logp = torch.tensor([s.log_prob for s in samples], dtype=torch.float32)
        elite = torch.tensor([t for t, _ in self.best], dtype=torch.long) if self.best else None
        epochs = c.ppo_epochs if c.method == "ppo" else 1
        for _ in range(epochs):
            logp, ent = self._evaluate(tokens)
            if c.method == "ppo":
                ratio = torch.exp(logp - old_logp)
                pg = -torch.min(ratio * adv, ratio.clamp(1 - c.ppo_clip, 1 + c.ppo_clip) * adv).mean()
            else:
                pg = -(adv * logp).mean()
            loss = pg - c.entropy_weight * ent.mean()
            if self.best and c.elite_weight > 0:
                # Priority-queue training (Abolafia et al. 2018): maximum likelihood of the best so far.
                loss = loss - c.elite_weight * self._evaluate(elite)[0].mean()
            self.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), c.grad_clip)
            self.optimizer.step()
        # Baseline and spread move after the step, so this batch is judged against the past.
        self.baseline = c.baseline_decay * self.baseline + (1 - c.baseline_decay) * mean_r
        var = float(((rewards - self.baseline) ** 2).mean())
        self.reward_var = c.baseline_decay * (self.reward_var or var) + (1 - c.baseline_decay) * var
        self.updates += 1
        stats = {"update": self.updates, "mean_reward": mean_r, "baseline": self.baseline,
                 "entropy": float(ent.mean().detach()), "loss": float(loss.detach())}
        self.history.append(stats)
        return stats

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this controller is (a deep copy, safe to keep)."""
        return copy.deepcopy({
            "n_choices": list(self.n_choices), "config": asdict(self.config), "seed": self.seed,
            "policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(), "baseline": self.baseline, "reward_var": self.reward_var,
            "next_key": self.next_key, "updates": self.updates, "feedbacks": self.feedbacks, "history": list(self.history),
            "pending": [asdict(s) for s in self.pending.values()],
            "collected": [(asdict(s), r) for s, r in self.collected],
            "window": list(self.window), "best": [[list(t), r] for t, r in self.best],
            "pool": [[list(t), r] for t, r in self.pool],
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["n_choices"]) != self.n_choices:
            raise UserError("saved controller state is for another search space (its decisions differ)")
        self.config = ControllerConfig(**state["config"])
        self.seed = state["seed"]
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline, self.reward_var = state["baseline"], state["reward_var"]
        self.next_key, self.updates = state["next_key"], state["updates"]
        # States written before the counter existed: every update consumed one batch of rewards.
        self.feedbacks = state.get("feedbacks", self.updates * self.config.batch_size + len(state["collected"]))
        self.history = list(state["history"])
        self.pending = {s["key"]: Sample(**s) for s in state["pending"]}
        self.collected = [(Sample(**s), r) for s, r in state["collected"]]
        self.window = [float(r) for r in state.get("window", [])]
        self.best = [(list(t), float(r)) for t, r in state.get("best", [])]
        self.pool = [(list(t), float(r)) for t, r in state.get("pool", state.get("best", []))]

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Controller:
        ctl = cls(state["n_choices"], ControllerConfig(**state["config"]), state["seed"])
        ctl.load_state_dict(state)
        return ctl
