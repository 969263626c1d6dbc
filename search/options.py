"""Everything a search run depends on (:class:`SearchOptions`), checked before any work starts.

The CLI fills it from its options; ``options.json`` in the run folder keeps it, so that ``--resume``
continues with the same settings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from common.errors import UserError
from common.ray_cluster import check_dashboard_host, check_reachable
from search.reward import Reward
from search.strategies import searcher_class
from space.proxy import DEFAULT_MIN_MAP, check_proxy_resolution

SCHEDULERS = ("fifo", "asha")
DEMO_MIN_TRIALS = 50
"""Below this budget a search's seed is a demonstration: on the tabular benchmark (docs/benchmarks.md,
Pixel 3, CIFAR-10, seeds 100-199) the share of the controller's runs that find a top-1% network rises
from 0.46 at 25 trials to 0.82 at 50 and 0.99 at 100 (docs/search.md)."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


DIGITS_EPOCHS = 2.0
"""Trial length on the embedded digits: what fits the 15-minute default search (docs/search.md)."""
IMAGE_EPOCHS = 4.0
"""Trial length on any other data. On CIFAR-10 (5,000 training images, 32x32) a 4-epoch proxy's reward
ranks 24 networks of the ``mnasnet`` space with Kendall tau 0.62 and 0.73 (two training seeds) against a
15-epoch training's reward, a 2-epoch one's with 0.50 and 0.67 (docs/benchmarks.md, proxy fidelity)."""


def default_epochs(data: str | None) -> float:
    """Proxy epochs per trial when ``--epochs`` is not given: short on the digits, longer elsewhere."""
    return DIGITS_EPOCHS if data is None or str(data).lower() == "digits" else IMAGE_EPOCHS


@dataclass
class SearchOptions:
    """Everything a search run depends on; the CLI fills it from its options."""

    target_ms: float = 15.0
    trials: int = 16
    epochs: float | None = None  # None: default_epochs(data)
    w: float | None = None
    alpha: float | None = None
    beta: float | None = None
    seed: int = 0
    concurrency: int = 2
    device: str = "local-cpu"
    space: str = "mnasnet"
    latency_resolution: int = 224
    measure: bool = False
    address: str | None = None
    dashboard_host: str = "127.0.0.1"  # where a Ray this run starts serves its dashboard (not with address)
    resume: bool = False
    name: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    lr: float = 3e-3
    strategy: str = "controller"
    controller_method: str = "reinforce"
    controller_batch: int | None = None  # None: the concurrency (one update per wave of trials)
    time_budget_s: float | None = None
    mlflow: str | None = None  # an MLflow tracking URI to log every trial to (Ray Tune's MLflowLoggerCallback)
    # data (train.cli_args names)
    data: str | None = None
    train_resolution: int | None = None
    batch_size: int = 32
    data_limit: int | None = None
    eval_limit: int | None = None
    split_seed: int = 0
    augment: bool = False
    proxy_min_map: int = DEFAULT_MIN_MAP
    scheduler: str = "fifo"        # fifo: every trial trains --epochs; asha: early stopping (search.stopping)
    grace_epochs: float = 0.5      # ASHA's first rung
    reduction_factor: float = 3.0  # ASHA keeps the top 1/rf at each rung
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs is None:
            self.epochs = default_epochs(self.data)

    def check(self) -> None:
        Reward.from_options(self.target_ms, self.w, self.alpha, self.beta)
        searcher_class(self.strategy)
        if self.target_ms > 60_000:
            raise UserError(f"--target-ms {self.target_ms:g} is absurd (over a minute per image); give milliseconds, e.g. 15")
        if self.trials < 1 or self.concurrency < 1:
            raise UserError("--trials and --concurrency must be >= 1")
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise UserError(f"--epochs {self.epochs} must be a positive number")
        if self.train_resolution is not None:
            check_proxy_resolution(self.train_resolution, self.proxy_min_map)
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"--scheduler {self.scheduler!r} is unknown; choose one of {', '.join(SCHEDULERS)}")
        if self.scheduler == "asha":
            if not (self.grace_epochs > 0 and math.isfinite(self.grace_epochs)):
                raise UserError(f"--grace-epochs {self.grace_epochs} must be a positive number of epochs")
            if self.grace_epochs >= self.epochs:
                raise UserError(f"--grace-epochs {self.grace_epochs:g} is not shorter than a trial (--epochs "
                                f"{self.epochs:g}), so ASHA could never stop one; give fewer grace epochs or more --epochs")
            if not (self.reduction_factor > 1 and math.isfinite(self.reduction_factor)):
                raise UserError(f"--reduction-factor {self.reduction_factor} must be a number above 1 (ASHA keeps "
                                "the top 1/rf of the trials at each rung)")
        check_dashboard_host(self.dashboard_host)
        if self.address:
            check_reachable(self.address)
        if self.mlflow:
            import importlib.util

            if importlib.util.find_spec("mlflow") is None:
                raise UserError(f"--mlflow {self.mlflow}: the mlflow package is not installed; `pip install mlflow`, "
                                "or leave --mlflow out")
            from mlflow.tracking import MlflowClient

            try:  # a URI MLflow refuses (an unknown scheme, its retired file store) is refused here, before any work
                MlflowClient(tracking_uri=self.mlflow)
            except Exception as e:
                raise UserError(f"--mlflow {self.mlflow}: MLflow refuses it ({str(e).splitlines()[0][:160]}); give "
                                "e.g. sqlite:///mlflow.db or http://HOST:5000") from None
        if self.name is not None and not NAME_RE.match(self.name):
            raise UserError(f"--name {self.name!r}: use letters, digits, '.', '_' or '-' (at most 64 characters)")
