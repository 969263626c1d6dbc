"""One search trial: build the sampled network, train it briefly on the proxy data, score it.

MnasNet trained each sampled model for 5 epochs on a proxy task (Tan et al. 2019, Section 5);
here the proxy is whatever :func:`train.data.load_data` serves (digits by default) for a few
epochs. The network trained is the candidate's proxy network (:func:`space.proxy.proxy_spec`):
decoded for the data (its classes, channels and training resolution) with its earliest strides
set to 1 until its last stage keeps a map of ``proxy_min_map`` pixels a side. Its weights fit the
deployment network unchanged; its latency is that of the deployment network at the deployment
resolution, predicted by the searcher (no torch there) or measured here with onnxruntime when asked.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from search.reward import reward
from space.archspec import ArchSpec
from space.proxy import DEFAULT_MIN_MAP, proxy_spec
from space.searchspace import get_space

# The result key under which a trial hands its trained state_dict (torch.save bytes) to the driver,
# which writes it (search.collect): on a cluster the trial's own disk is another machine's.
WEIGHTS_BLOB = "weights_blob"
# What a trial reports (besides the blob), and what the driver stores per finished sample.
RESULT_KEYS = ("accuracy", "latency_ms", "measured_ms", "reward", "params", "macs", "train_loss", "steps",
               "train_seconds", "status", "error", "tokens", "weights", "train_resolution", "final_map", "proxy_strides",
               "epochs")


@dataclass
class TrialSettings:
    """What every trial of a run shares (kept in the Tune config so a resumed run trains the same way)."""

    space: str = "mnasnet"
    epochs: float = 1.0
    batch_size: int = 128
    lr: float = 3e-3  # AdamW, train.loop.train_model's optimizer
    seed: int = 0
    latency_resolution: int = 224
    target_ms: float = 15.0
    alpha: float = -0.15
    beta: float = -0.15
    measure: bool = False
    threads: int = 1
    eval_limit: int | None = None
    augment: bool = False
    proxy_min_map: int = DEFAULT_MIN_MAP  # space.proxy: early strides at 1 until the last map is this big
    report_epochs: list[float] = field(default_factory=list)  # earlier reports (ASHA's rungs), before the end
    weights_dir: str = ""  # unused: trials return their weights (WEIGHTS_BLOB); older run configs carry it
    trials_dir: str = ""   # the driver's store of finished results (search.collect), read by re-runs
    faults: str = ""       # HWNAS_FAULT_INJECT as the run started (testing only; empty: none)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def deploy_spec(space_name: str, tokens: list[int], resolution: int, num_classes: int, in_channels: int) -> ArchSpec:
    """The candidate as it would be deployed: the data's classes and channels at ``resolution``."""
    return get_space(space_name).decode(tokens, resolution=resolution, num_classes=num_classes, in_channels=in_channels)


FAULT_ENV = "HWNAS_FAULT_INJECT"
FAULT_KINDS = ("raise", "nan", "oom", "exit", "slow")
# How long a ``slow`` fault holds its trial before training: long enough that a test stopping the
# search finds that trial still running, whatever the machine's load.
SLOW_FAULT_S = 20.0


def parse_faults(text: str) -> dict[int, str]:
    """``"raise:1,nan:2"`` -> ``{1: "raise", 2: "nan"}``: which sample (the controller's sample index,
    trials.csv's ``trial`` column) gets which injected fault; see :func:`run_candidate`."""
    out: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        kind, _, idx = part.partition(":")
        if kind not in FAULT_KINDS or not idx.isdigit():
            raise UserError(f"{FAULT_ENV}={text!r}: expected KIND:SAMPLE[,KIND:SAMPLE...] with KIND one of "
                            f"{', '.join(FAULT_KINDS)} and SAMPLE a trial index (e.g. raise:1,nan:3); unset it for a normal run")
        out[int(idx)] = kind
    return out


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's ``torch.OutOfMemoryError``, Python's ``MemoryError``, or the CPU allocator refusing a tensor."""
    import torch

    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def short_error(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, at most ``limit`` characters (the trials.csv error column)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:limit]


def stored_result_path(trials_dir: str | os.PathLike, tokens: str) -> Path:
    """``<trials_dir>/net_<tokens>.json``: the run's result of the network ``tokens`` (canonical, ``3-0-1-...``).
    Keyed by network, since a network is trained once per run whichever sample proposed it."""
    return Path(trials_dir) / f"net_{tokens}.json"


def _cached_result(path: Path, tokens: str) -> dict[str, Any] | None:
    from search import jsonstate

    try:
        doc = jsonstate.read(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: train again, the new result replaces it
    if not isinstance(doc, dict) or doc.get("tokens") != tokens:
        return None
    return {k: v for k, v in doc.items() if k != "sample"}


def _inject(fault: str | None, sample: Any, device: str) -> None:
    """The faults of ``HWNAS_FAULT_INJECT`` that happen where training would start (``nan`` is set up
    on the model before): each goes through the same path a real failure of its kind takes."""
    import torch

    if fault == "raise":
        raise RuntimeError(f"fault injected into sample {sample} ({FAULT_ENV})")
    if fault == "oom":
        # A genuine allocation failure, not a simulated one: 1 PiB is more than any machine's address space,
        # so the allocator refuses it at once (CPU: RuntimeError "can't allocate memory"; CUDA:
        # torch.OutOfMemoryError) without touching real memory.
        torch.empty(1 << 50, dtype=torch.uint8, device=device)
    if fault == "exit":
        # The worker process dies as under the kernel's OOM killer: no exception, no result.
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "slow":
        # A trial that is still running when its neighbours finish, then trains normally.
        time.sleep(SLOW_FAULT_S)


def run_candidate(config: dict[str, Any], data: Any) -> dict[str, Any]:
    """Train and score one candidate; returns the metrics a trial reports at its end (see
    :func:`candidate_reports`, whose last report this is)."""
    *_, last = candidate_reports(config, data)
    return last


def candidate_reports(config: dict[str, Any], data: Any) -> Iterator[dict[str, Any]]:
    """Train and score one candidate, yielding what the trial reports: one report at each of
    ``settings.report_epochs`` (the validation accuracy and reward of the network as it is then, for
    ASHA's early stopping; ``done`` False) and the final one (``done`` True).

    ``config`` holds ``tokens``, ``latency_ms`` (predicted, from the searcher), ``settings`` (a
    :class:`TrialSettings` dict) and ``sample`` (the controller's sample index). Failures that are
    the network's, not the code's, come back as a result with reward 0 and a short ``error`` text, so
    the search keeps the record: a non-finite loss is ``status='diverged'``, running out of memory
    (``torch.OutOfMemoryError``, ``MemoryError``, the CPU allocator refusing a tensor) is
    ``status='oom'``. Anything else raises, and Tune records the trial as ``error``.

    A trained network's ``state_dict`` comes back serialised under :data:`WEIGHTS_BLOB`; nothing is
    written to disk here (on a cluster this process may run on another machine). The driver keeps
    each finished result in ``<trials_dir>/net_<tokens>.json`` (:func:`stored_result_path`); a trial
    handed out again for a network the run already trained (a kill after the driver stored the result
    but before the searcher recorded it) returns that result instead of training again where that
    folder is visible (one machine, or shared storage), and trains again otherwise.

    ``settings.faults`` (from ``HWNAS_FAULT_INJECT``, see :func:`parse_faults`) makes this sample
    fail on purpose, for testing the failure paths with real processes: ``raise`` raises, ``nan``
    fills the first layer's weights with NaN so the real training loss diverges, ``oom`` asks the
    allocator for 1 PiB (a real, immediate allocation failure, since a real memory overrun cannot be
    produced cheaply and safely), ``exit`` SIGKILLs the process running the trial, ``slow`` waits
    :data:`SLOW_FAULT_S` seconds before training normally (a trial sure to be running when a stop lands).
    """
    import torch

    from space.builder import build_model
    from space.cost import cost
    from train.loop import Training, TrainingDiverged

    s = TrialSettings(**config["settings"])
    torch.set_num_threads(max(1, int(s.threads)))
    tokens = [int(t) for t in config["tokens"]]
    token_text = "-".join(map(str, tokens))
    sample = config.get("sample")
    cache = stored_result_path(s.trials_dir, token_text) if s.trials_dir else None
    if cache is not None and cache.exists():
        cached = _cached_result(cache, token_text)
        if cached is not None:
            yield {**cached, "done": True}
            return
    fault = parse_faults(s.faults).get(int(sample)) if s.faults and sample is not None else None
    space = get_space(s.space)
    train_spec, plan = proxy_spec(space.decode(tokens, **data.spec_kwargs()), data.resolution, s.proxy_min_map)
    spec = deploy_spec(s.space, tokens, s.latency_resolution, data.num_classes, data.in_channels)
    c = cost(spec)
    latency_ms = float(config.get("latency_ms", math.nan))
    measured_ms = math.nan
    if s.measure:
        from latency.measure import measure

        measured_ms = float(measure(spec, threads=s.threads).latency_ms)
        latency_ms = measured_ms
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPUs; a CPU-only trial sees none.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    seed = trial_seed(s.seed, sample)
    # The initial weights from the trial's own seed, not from whatever an earlier trial of a reused actor
    # left in torch's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(train_spec)
    if fault == "nan":
        with torch.no_grad():
            next(model.parameters()).fill_(math.nan)
    status, error, acc, loss, steps, epochs, run = "ok", "", 0.0, math.nan, 0, 0.0, None
    facts = {"latency_ms": latency_ms, "measured_ms": measured_ms, "params": c.params, "macs": c.macs,
             "tokens": token_text, "train_resolution": plan.resolution, "final_map": plan.final_map,
             "proxy_strides": ",".join(plan.reduced)}
    try:
        _inject(fault, sample, device)
        run = Training(model, data, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=seed, device=device,
                       augment=s.augment, bn_recalibration_batches=5)
        for at in s.report_epochs:
            run.advance(run.steps_for(at))
            acc_now = run.score("val", s.eval_limit)[0]
            yield {**facts, "accuracy": acc_now, "epochs": run.epochs, "steps": run.step, "status": "ok",
                   "error": "", "reward": reward(acc_now, latency_ms, s.target_ms, alpha=s.alpha, beta=s.beta),
                   "train_seconds": time.perf_counter() - start, "done": False}
        res = run.finish("val", s.eval_limit)
        acc, loss, steps, epochs = float(res.accuracy), float(res.loss), int(res.steps), float(res.epochs)
    except TrainingDiverged as e:
        status, error = "diverged", short_error(e)
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        status, error = "oom", short_error(e)
        # The actor may be reused for the next trial: give back what this one held.
        model = run = None
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    blob = _state_bytes(model) if status == "ok" and model is not None else b""
    yield {
        **facts, "accuracy": acc,
        "reward": reward(acc, latency_ms, s.target_ms, alpha=s.alpha, beta=s.beta) if status == "ok" else 0.0,
        "train_loss": loss, "steps": steps, "epochs": epochs, "train_seconds": time.perf_counter() - start,
        "status": status, "error": error, WEIGHTS_BLOB: blob, "done": True,
    }


def score_on_test(space_name: str, tokens: str, weights: str, data: Any,
                  min_map: int = DEFAULT_MIN_MAP) -> float:
    """Test-split accuracy of a trained candidate (``tokens`` as in trials.csv, its weights file): the
    proxy network it was trained as, at the data's resolution."""
    from space.builder import build_model
    from train.loop import evaluate
    from train.weights import load_into

    spec = get_space(space_name).decode([int(t) for t in tokens.split("-")], **data.spec_kwargs())
    model = load_into(build_model(proxy_spec(spec, data.resolution, min_map)[0]), weights)
    return evaluate(model, data, "test")


def trial_seed(run_seed: int, sample: int | None) -> int:
    """The seed of one trial's initial weights, data order and augmentation: a function of the run's
    ``--seed`` and the trial's sample index only, so that a trial trains alike whichever actor runs it,
    after whichever other trial, in whichever sitting of the run."""
    import numpy as np

    if sample is None:
        return int(run_seed)
    return int(np.random.SeedSequence([int(run_seed) & 0xFFFFFFFF, int(sample)]).generate_state(1)[0])


def _state_bytes(model: Any) -> bytes:
    """The model's ``state_dict`` on the CPU as ``torch.save`` bytes (what ``train.weights.load_weights`` reads)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def trial_class() -> type:
    """The Ray Tune trainable (a class, so that each trial's actor carries its trial id in its name)."""
    from ray import tune

    class SearchTrial(tune.Trainable):
        """One step = one report of :func:`candidate_reports`: the whole training and scoring, or with ASHA
        the training up to the next rung; the data comes from Ray's object store."""

        def setup(self, config: dict[str, Any], data: Any = None) -> None:
            self.data = data
            self.reports: Iterator[dict[str, Any]] | None = None

        def step(self) -> dict[str, Any]:
            from common.ray_cluster import node_id

            if self.reports is None:
                self.reports = candidate_reports(self.config, self.data)
            # node: the Ray node this trial ran on (trials.csv), to see where a cluster ran what.
            out = {**next(self.reports), "node": node_id()}
            if out.get("done"):
                # The actor's log, which the Ray dashboard shows under Actors (the driver prints the same line).
                print(f"hwnas-trial-{self.trial_id} sample {self.config.get('sample')}: status {out['status']}, "
                      f"accuracy {out['accuracy']:.3f}, latency {out['latency_ms']:.2f} ms, "
                      f"reward {out['reward']:.4f}, {out.get('train_seconds', 0.0):.1f} s", flush=True)
            return out

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            # Lets Tune reuse this actor for the next trial: no new process, no second torch import.
            self.reports = None
            return True

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            # Nothing to resume inside a trial: one interrupted by a kill re-runs from scratch.
            return {}

        def load_checkpoint(self, checkpoint: Any) -> None:
            pass

        def __repr__(self) -> str:
            # Ray shows this as the actor's name in the dashboard and in log prefixes (taken when the
            # actor starts: a reused actor keeps the name of its first trial).
            return f"hwnas-trial-{self.trial_id}"

    return SearchTrial
