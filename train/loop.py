"""Short, deterministic supervised training: the proxy task of the search and NetAdapt's fine-tunes.

AdamW by default (SGD with Nesterov momentum and RMSProp, what MnasNet/MobileNetV3 used at full
scale, are options) under a linear warm-up then cosine decay to zero, optional label smoothing.
Proxy runs are a few hundred steps at most; there AdamW trains deep mobile networks from scratch
where SGD has not left chance level yet (measured on digits, see docs/benchmarks.md). After training the
BatchNorm running statistics are re-estimated on training batches: the builder uses the
TF-style BN momentum 0.01, whose running averages would still be mostly at their initial values
after the few hundred steps of a proxy run (and stale after NetAdapt removes channels upstream).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.atomic import atomic_path
from train.data import DataBundle


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    accuracy: float      # on ``eval_split`` after training (and BN re-estimation)
    loss: float          # mean training loss over the last epoch's worth of steps
    eval_loss: float     # cross-entropy on ``eval_split``
    steps: int
    epochs: float
    seconds: float
    eval_split: str = "val"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    """What a ``progress`` callback receives every ``log_every`` steps and at the end."""

    step: int
    steps: int
    loss: float
    lr: float
    seconds: float


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, t)))


DEFAULT_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 4e-5, "rmsprop": 1e-5}
OPTIMIZERS = tuple(DEFAULT_WEIGHT_DECAY)


def _optimizer(model: nn.Module, name: str, lr: float, weight_decay: float | None) -> torch.optim.Optimizer:
    if name not in DEFAULT_WEIGHT_DECAY:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    if weight_decay is None:
        weight_decay = DEFAULT_WEIGHT_DECAY[name]
    # No weight decay on BN parameters and biases (1-D tensors): standard for mobile nets.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        # MnasNet's settings (decay 0.9, momentum 0.9, eps 1e-3 in TF's convention).
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, momentum=0.9, eps=1e-3)
    return torch.optim.AdamW(groups, lr=lr)


def _augment(x: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """Random translation by up to 1/8 of the side (pad-and-crop with zeros) and, if allowed, flips."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(-1), out)
    return out.contiguous()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # Depthwise convs and BN run 1.5-2.5x faster in NHWC on CPU (bench/train_speed.py, docs/benchmarks.md).
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Training:
    """One training run that can advance in pieces: ``advance(step)`` trains up to a step, ``score()``
    evaluates the network as it is then (for early stopping), ``finish()`` re-estimates BN and returns
    the :class:`TrainResult`. :func:`train_model` is ``Training(...).finish()`` after one ``advance``.

    The schedule (warm-up, cosine decay) is laid out for the whole run, so stopping after a piece
    gives the network as it was at that point of the full run. ``score`` neither draws from the
    training's random streams nor moves anything but BN running statistics, which training does not
    use, so a run scored along the way ends exactly as one that was not.
    """

    def __init__(self, model: nn.Module, data: DataBundle, epochs: float | None = None, steps: int | None = None,
                 lr: float = 3e-3, batch_size: int = 128, optimizer: str = "adamw",
                 weight_decay: float | None = None, label_smoothing: float = 0.1, warmup: float = 0.05,
                 augment: bool = False, device: str | torch.device = "cpu", seed: int = 0,
                 bn_recalibration_batches: int = 20, progress: Callable[[Progress], None] | None = None,
                 log_every: int = 50) -> None:
        if (epochs is None) == (steps is None):
            raise ValueError("give exactly one of epochs or steps")
        self.model, self.data, self.batch_size, self.seed = model, data, batch_size, seed
        self.lr, self.augment, self.progress, self.log_every = lr, augment, progress, log_every
        self.bn_batches = bn_recalibration_batches
        self.per_epoch = max(1, math.ceil(len(data.train) / batch_size))
        self.total = int(steps) if steps is not None else max(1, round(float(epochs) * self.per_epoch))
        if self.total < 0:
            raise ValueError("steps must be >= 0")
        self.warm = int(warmup * self.total)
        self.device = torch.device(device)
        model.to(self.device, memory_format=torch.channels_last)
        self.step = 0
        self.losses: list[float] = []
        self.seconds = 0.0
        self.gen = torch.Generator().manual_seed(seed)
        with self._own_rng():
            torch.manual_seed(seed)
            self.opt = _optimizer(model, optimizer, lr, weight_decay)
        self.crit = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self._batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with this training's own torch RNG state (dropout), leaving the caller's alone."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if hasattr(self, "_rng"):
                torch.set_rng_state(self._rng)
            yield
            self._rng = torch.get_rng_state()

    @property
    def epochs(self) -> float:
        """Epochs trained so far."""
        return self.step / self.per_epoch

    def steps_for(self, epochs: float) -> int:
        """The first step at which at least ``epochs`` epochs are done (capped at the run's length).

        Rounded up, not to the nearest step: a report meant for ASHA's rung at 0.5 epochs must
        say at least 0.5, since Tune's scheduler only decides at a rung once ``epochs >= rung``
        (157 steps an epoch, rounded: step 78, 0.497 epochs, and the rung would be skipped)."""
        return min(self.total, max(0, math.ceil(epochs * self.per_epoch - 1e-9)))

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        while True:
            if self._batches is None:
                self._batches = self.data.batches("train", self.batch_size, self.device, shuffle=True,
                                                  generator=self.gen)
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None

    def advance(self, until: int | None = None) -> None:
        """Train up to step ``until`` (default: the end of the run)."""
        until = self.total if until is None else min(int(until), self.total)
        start = time.perf_counter()
        self.model.train()
        with self._own_rng():
            while self.step < until:
                x, y = self._next_batch()
                if self.augment:
                    x = _augment(x, self.gen, self.data.flip_ok)
                cur_lr = lr_at(self.step, self.total, self.lr, self.warm)
                for g in self.opt.param_groups:
                    g["lr"] = cur_lr
                loss = self.crit(self.model(_channels_last(x)), y)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingDiverged(f"loss became {value} at step {self.step + 1} of {self.total} "
                                           f"(lr {cur_lr:.3g})")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.losses.append(value)
                self.step += 1
                if self.progress and (self.step % self.log_every == 0 or self.step == self.total):
                    tail = self.losses[-self.log_every:]
                    self.progress(Progress(self.step, self.total, sum(tail) / len(tail), cur_lr,
                                           self.seconds + time.perf_counter() - start))
        self.seconds += time.perf_counter() - start

    def _identity(self) -> dict[str, int]:
        return {"total": self.total, "per_epoch": self.per_epoch, "batch_size": self.batch_size, "seed": self.seed}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to go on exactly where this training is: the network's and the optimizer's
        state, the step, the losses and seconds so far and both random streams. A fresh ``Training`` of
        the same network, data and settings given it by :meth:`load_state_dict` ends as this one would.

        Only at an epoch's end (or the run's): within an epoch the rest of its shuffled order lives in a
        Python generator, which cannot be saved."""
        if self.step % self.per_epoch and self.step != self.total:
            raise ValueError(f"a training's state is kept at an epoch's end; step {self.step} is within "
                             f"an epoch of {self.per_epoch} steps")
        return {**self._identity(), "step": self.step, "losses": list(self.losses), "seconds": self.seconds,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "rng": self._rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from ``state`` (:meth:`state_dict` of a training of this network, data and settings);
        ValueError when it is of another training."""
        theirs = {k: state.get(k) for k in self._identity()}
        if theirs != self._identity():
            raise ValueError(f"the kept state is of another training ({theirs}, this one {self._identity()})")
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError):
            raise ValueError("the kept state is of another network: its weights do not fit this one") from None
        self.step, self.losses, self.seconds = int(state["step"]), list(state["losses"]), float(state["seconds"])
        self.gen.set_state(state["generator"])
        self._rng = state["rng"]
        self._batches = None  # kept at an epoch's end: the next batch starts a new epoch, as it would have

    def score(self, split: str = "val", limit: int | None = None) -> tuple[float, float]:
        """(accuracy, loss) on ``split`` of the network as it is now, BN statistics re-estimated on
        training batches drawn from a generator of their own."""
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if self.step and self.bn_batches:
                gen = torch.Generator().manual_seed(self.seed * 100_003 + self.step)
                recalibrate_bn(self.model, self.data, self.bn_batches, self.batch_size, self.device, gen)
        out = evaluate_metrics(self.model, self.data, split, device=self.device, limit=limit)
        self.model.train()
        self.seconds += time.perf_counter() - start
        return out

    def finish(self, eval_split: str | None = "val", eval_limit: int | None = None) -> TrainResult:
        """Train to the end if not there yet, re-estimate BN, evaluate on ``eval_split``."""
        self.advance()
        start = time.perf_counter()
        if self.total and self.bn_batches:
            with self._own_rng():
                recalibrate_bn(self.model, self.data, self.bn_batches, self.batch_size, self.device, self.gen)
        tail = self.losses[-self.per_epoch:]
        acc, eval_loss = (evaluate_metrics(self.model, self.data, eval_split, device=self.device, limit=eval_limit)
                          if eval_split else (float("nan"), float("nan")))
        self.seconds += time.perf_counter() - start
        return TrainResult(
            accuracy=acc, loss=sum(tail) / len(tail) if tail else float("nan"), eval_loss=eval_loss,
            steps=self.total, epochs=self.total / self.per_epoch, seconds=self.seconds, eval_split=eval_split or "",
        )


def read_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The state :func:`finish_keeping_state` keeps in ``path`` (read weights-only, never unpickled in
    full); ValueError when the file is not a readable state."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch.load's UnpicklingError, RuntimeError, EOFError...: not a state it can read
        why = str(e).splitlines()[0] if str(e) else type(e).__name__  # an empty file: EOFError with no message
        raise ValueError(f"{path} holds no readable training state ({why})") from None


def resume(run: Training, path: str | os.PathLike) -> bool:
    """Load into ``run`` the state :func:`finish_keeping_state` keeps in ``path``; False when there is
    none. ValueError when it is of another training or not a readable state."""
    if not Path(path).exists():
        return False
    run.load_state_dict(read_state(path, run.device))
    return True


def finish_keeping_state(run: Training, path: str | os.PathLike, eval_split: str | None = "val",
                         eval_limit: int | None = None, every_epochs: int = 1) -> TrainResult:
    """``run.finish(...)`` that writes ``run``'s state to ``path`` at the end of every ``every_epochs``
    epochs (temp file, then rename), so that a long training killed part-way loses at most that much
    work: :func:`resume` then ``finish_keeping_state`` again goes on from it. ``path`` is removed once
    the result is in."""
    if every_epochs < 1:
        raise ValueError("every_epochs must be >= 1")
    every = every_epochs * run.per_epoch
    while run.step < run.total:
        run.advance((run.step // every + 1) * every)
        if run.step < run.total:
            with atomic_path(path) as tmp:
                torch.save(run.state_dict(), tmp)
    result = run.finish(eval_split, eval_limit)
    Path(path).unlink(missing_ok=True)
    return result


def train_model(model: nn.Module, data: DataBundle, epochs: float | None = None, steps: int | None = None,
                lr: float = 3e-3, batch_size: int = 128, optimizer: str = "adamw", weight_decay: float | None = None,
                label_smoothing: float = 0.1, warmup: float = 0.05, augment: bool = False,
                device: str | torch.device = "cpu", seed: int = 0, eval_split: str | None = "val",
                eval_limit: int | None = None, bn_recalibration_batches: int = 20,
                progress: Callable[[Progress], None] | None = None, log_every: int = 50) -> TrainResult:
    """Train ``model`` in place on ``data.train`` and return its accuracy on ``eval_split``.

    Give ``epochs`` (may be fractional) or ``steps``; ``warmup`` is a fraction of the steps.
    ``lr`` suits the default AdamW; SGD wants about 0.05-0.1. ``weight_decay`` None picks the
    optimizer's usual value.
    Deterministic for a given ``seed`` on CPU (the global torch RNG is forked, not disturbed).
    Raises :class:`TrainingDiverged` on a non-finite loss.
    """
    run = Training(model, data, epochs, steps, lr=lr, batch_size=batch_size, optimizer=optimizer,
                   weight_decay=weight_decay, label_smoothing=label_smoothing, warmup=warmup, augment=augment,
                   device=device, seed=seed, bn_recalibration_batches=bn_recalibration_batches, progress=progress,
                   log_every=log_every)
    return run.finish(eval_split, eval_limit)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: DataBundle, batches: int = 20, batch_size: int = 128,
                   device: str | torch.device = "cpu", generator: torch.Generator | None = None) -> None:
    """Re-estimate every BatchNorm's running mean/var as the exact average over ``batches`` training
    batches (forward passes in train mode, no gradient)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = plain mean over the batches seen
    was_training = model.training
    model.train()
    gen = generator or torch.Generator().manual_seed(0)
    try:
        for i, (x, _) in enumerate(data.batches("train", batch_size, device, shuffle=True, generator=gen)):
            if i >= batches:
                break
            model(_channels_last(x))
    finally:
        for m, (mom, _) in zip(bns, saved):
            m.momentum = mom
        model.train(was_training)


@torch.no_grad()
def evaluate_per_image(model: nn.Module, data: DataBundle, split: str = "val", batch_size: int = 512,
                       device: str | torch.device = "cpu", limit: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of a split, in the split's order: whether ``model`` (in eval mode) classifies it
    correctly (bool) and its cross-entropy. Paired comparisons of two networks need these."""
    was_training = model.training
    model.eval()
    model.to(device)
    correct, losses = [], []
    try:
        for x, y in data.batches(split, batch_size, device, limit=limit):
            out = model(_channels_last(x))
            losses.append(nn.functional.cross_entropy(out.float(), y, reduction="none").cpu())
            correct.append((out.argmax(1) == y).cpu())
    finally:
        model.train(was_training)
    if not correct:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0)
    return torch.cat(correct), torch.cat(losses)


def evaluate_metrics(model: nn.Module, data: DataBundle, split: str = "val", batch_size: int = 512,
                     device: str | torch.device = "cpu", limit: int | None = None) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``model`` on a split, in eval mode."""
    correct, losses = evaluate_per_image(model, data, split, batch_size, device, limit)
    if not len(correct):
        return float("nan"), float("nan")
    return int(correct.sum()) / len(correct), float(losses.double().sum()) / len(correct)


def evaluate(model: nn.Module, data: DataBundle, split: str = "val", batch_size: int = 512,
             device: str | torch.device = "cpu", limit: int | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``split`` ("val" or "test")."""
    return evaluate_metrics(model, data, split, batch_size, device, limit)[0]
