"""The options of a NetAdapt run, checked before any work; saved in ``config.json`` for ``--resume``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from common.errors import UserError
from space.proxy import DEFAULT_MIN_MAP

SELECT_RULES = ("ratio", "accuracy")
IMPORTANCE = ("l2", "bn")  # filter importance: L2 norm of the filter, or the BatchNorm scale after it


@dataclass
class NetAdaptConfig:
    """Options of a run; saved in ``config.json`` so ``--resume`` continues with the same ones."""

    target_ms: float | None = None
    target_ratio: float = 0.5
    delta: float = 0.01           # each iteration's cut, as a fraction of the seed's (measured) latency
    decay: float = 1.0
    steps: int = 10               # T: fine-tune steps per proposal
    select: str = "ratio"
    final_epochs: float = 5.0
    seed_epochs: float = 10.0     # training of a seed that comes without weights
    lr: float = 1e-3              # fine-tune learning rate (long-term fine-tune too)
    seed_lr: float = 3e-3
    optimizer: str = "adamw"
    batch_size: int = 128        # the CLI's default too
    workers: int = 2              # parallel proposals (Ray tasks); 0 = in this process, one by one
    threads: int = 1              # torch threads per proposal
    seed: int = 0
    max_iterations: int = 100
    min_channels: int | None = None
    channel_step: int = 8         # channel counts move in multiples of this (onnxruntime's CPU blocks)
    importance: str = "l2"        # which filters survive a trim (netadapt.surgery)
    measure_iterations: bool = True
    augment: bool = False
    eval_limit: int | None = None
    proxy_min_map: int = DEFAULT_MIN_MAP  # trained and scored as the search's proxy network (space.proxy)
    address: str | None = None    # a running Ray cluster for the proposals (None: start a local Ray)

    def check(self) -> None:
        if self.target_ms is not None and not (self.target_ms > 0 and math.isfinite(self.target_ms)):
            raise UserError(f"--target-ms {self.target_ms} must be a positive number of milliseconds")
        if not 0 < self.target_ratio < 1:
            raise UserError(f"--target-ratio {self.target_ratio} must lie in (0, 1) (a fraction of the seed's latency)")
        if not 0 < self.delta < 1:
            raise UserError(f"--delta {self.delta} must lie in (0, 1) (a fraction of the seed's latency)")
        if not 0 < self.decay <= 1:
            raise UserError(f"--decay {self.decay} must lie in (0, 1]")
        if self.importance not in IMPORTANCE:
            raise UserError(f"--importance {self.importance!r} is unknown; choose one of {', '.join(IMPORTANCE)}")
        if self.channel_step < 1:
            raise UserError("--channel-step must be >= 1")
        if self.select not in SELECT_RULES:
            raise UserError(f"--select {self.select!r} is unknown; choose one of {', '.join(SELECT_RULES)}")
        if self.steps < 0 or self.final_epochs < 0 or self.seed_epochs < 0:
            raise UserError("--steps, --final-epochs and --seed-epochs must be >= 0")
        if self.workers < 0:
            raise UserError("--workers must be >= 0")
        if self.address:
            if self.workers == 0:
                raise UserError("--address needs --workers >= 1 (--workers 0 runs the proposals in this process)")
            from common.ray_cluster import check_reachable

            check_reachable(self.address)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetAdaptConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
