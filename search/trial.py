"""One search trial: build the sampled network, train it briefly on the proxy data, score it.

MnasNet trained each sampled model for 5 epochs on a proxy task (Tan et al. 2019, Section 5);
here the proxy is whatever :func:`train.data.load_data` serves (digits by default) for a few
epochs. The network trained is the candidate decoded for the data (its classes, channels and
resolution); its latency is that of the same candidate at the deployment resolution, predicted
by the searcher (no torch there) or measured here with onnxruntime when asked.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from search.reward import reward
from space.archspec import ArchSpec
from space.searchspace import get_space

# The result key under which a trial hands its trained state_dict (torch.save bytes) to the driver,
# which writes it (search.collect): on a cluster the trial's own disk is another machine's.
WEIGHTS_BLOB = "weights_blob"


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
    weights_dir: str = ""  # unused: trials return their weights (WEIGHTS_BLOB); older run configs carry it
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def deploy_spec(space_name: str, tokens: list[int], resolution: int, num_classes: int, in_channels: int) -> ArchSpec:
    """The candidate as it would be deployed: the data's classes and channels at ``resolution``."""
    return get_space(space_name).decode(tokens, resolution=resolution, num_classes=num_classes, in_channels=in_channels)


def run_candidate(config: dict[str, Any], data: Any, trial_id: str = "local") -> dict[str, Any]:
    """Train and score one candidate; returns the metrics a trial reports.

    ``config`` holds ``tokens``, ``latency_ms`` (predicted, from the searcher) and ``settings``
    (a :class:`TrialSettings` dict). A non-finite loss gives ``status='diverged'`` with accuracy
    0 (and so reward 0) rather than an exception, so the search keeps the record. A trained network's
    ``state_dict`` comes back serialised under :data:`WEIGHTS_BLOB`; nothing is written to disk here.
    """
    import torch

    from space.builder import build_model
    from space.cost import cost
    from train.loop import TrainingDiverged, train_model

    s = TrialSettings(**config["settings"])
    torch.set_num_threads(max(1, int(s.threads)))
    tokens = [int(t) for t in config["tokens"]]
    space = get_space(s.space)
    train_spec = space.decode(tokens, resolution=data.resolution, **data.spec_kwargs())
    spec = deploy_spec(s.space, tokens, s.latency_resolution, data.num_classes, data.in_channels)
    c = cost(spec)
    latency_ms = float(config.get("latency_ms", math.nan))
    measured_ms = math.nan
    if s.measure:
        from latency.measure import measure

        measured_ms = float(measure(spec, threads=s.threads).median_ms)
        latency_ms = measured_ms
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPUs; a CPU-only trial sees none.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    model = build_model(train_spec)
    status, acc, loss, steps = "ok", 0.0, math.nan, 0
    try:
        res = train_model(model, data, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=s.seed, device=device,
                          eval_limit=s.eval_limit, augment=s.augment,
                          bn_recalibration_batches=5)
        acc, loss, steps = float(res.accuracy), float(res.loss), int(res.steps)
    except TrainingDiverged:
        status = "diverged"
    blob = _state_bytes(model) if status == "ok" else b""
    return {
        "accuracy": acc, "latency_ms": latency_ms, "measured_ms": measured_ms,
        "reward": reward(acc, latency_ms, s.target_ms, alpha=s.alpha, beta=s.beta) if status == "ok" else 0.0,
        "params": c.params, "macs": c.macs, "train_loss": loss, "steps": steps,
        "train_seconds": time.perf_counter() - start, "status": status, "tokens": "-".join(map(str, tokens)),
        WEIGHTS_BLOB: blob,
    }


def _state_bytes(model: Any) -> bytes:
    """The model's ``state_dict`` on the CPU as ``torch.save`` bytes (what ``train.weights.load_weights`` reads)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def trial_class():
    """The Ray Tune trainable (a class, so that each trial's actor carries its trial id in its name)."""
    from ray import tune

    class SearchTrial(tune.Trainable):
        """One step = train and score the candidate; the data comes from Ray's object store."""

        def setup(self, config: dict[str, Any], data: Any = None) -> None:
            self.data = data

        def step(self) -> dict[str, Any]:
            from space.ray_cluster import node_id

            # node: the Ray node this trial ran on (trials.csv), to see where a cluster ran what.
            return {**run_candidate(self.config, self.data, self.trial_id), "node": node_id(), "done": True}

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            # Lets Tune reuse this actor for the next trial: no new process, no second torch import.
            return True

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            # A trial is one step; nothing to resume inside it (a stopped trial re-runs from scratch).
            return {}

        def load_checkpoint(self, checkpoint: Any) -> None:
            pass

        def __repr__(self) -> str:
            # Ray shows this as the actor's name in the dashboard and in log prefixes (taken when the
            # actor starts: a reused actor keeps the name of its first trial).
            return f"hwnas-trial-{self.trial_id}"

    return SearchTrial
