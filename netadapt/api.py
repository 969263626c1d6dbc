"""NetAdapt from Python: a trained seed network in, the adapted network, its measured latency and the
compute spent out. Benchmarks call this; ``cli.py netadapt`` is the same run behind a command line.

```python
from netadapt.api import adapt

result = adapt(seed_spec, seed_state, data, predictor, "results/netadapt/mine", target_ms=1.2, final_epochs=0)
result.spec, result.state            # the adapted ArchSpec and its weights
result.measured_ms, result.target_met  # measured with onnxruntime (1 thread, as every iteration)
result.compute                       # proposals, fine-tune steps and images, seconds
```

A folder that holds a finished run returns that run's result; one that holds an unfinished run is
resumed after its last finished iteration (with the options it was started with), so a benchmark
that is stopped loses at most one iteration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from netadapt.config import NetAdaptConfig
from netadapt.loop import NetAdaptRun
from space.archspec import ArchSpec


@dataclass
class AdaptResult:
    """The adapted network and what it cost; ``summary`` is the run's ``result.json``."""

    spec: ArchSpec
    state: dict[str, torch.Tensor]
    measured_ms: float
    predicted_ms: float
    target_ms: float
    target_met: bool
    accuracy: float          # on the data's test split
    iterations: int
    compute: dict[str, Any]
    run_dir: Path
    summary: dict[str, Any]


def adapt(seed_spec: ArchSpec, seed_state: dict[str, torch.Tensor] | None, data, predictor, run_dir: str | Path,
          target_ms: float | None = None, target_ratio: float | None = None,
          progress: Callable[[str], None] | None = None, measure_fn: Callable[..., Any] | None = None,
          **options: Any) -> AdaptResult:
    """Run NetAdapt on ``seed_spec`` with ``seed_state`` (None: trained first) to ``target_ms`` measured
    ms, or ``target_ratio`` of the seed's measured latency; ``options`` are :class:`NetAdaptConfig`
    fields (``delta``, ``steps``, ``final_epochs``, ``workers``, ...). ``predictor`` is anything with
    ``predict_many(specs) -> ms`` (``latency.load_predictor(...)``). ``measure_fn`` replaces the
    onnxruntime measurement (same signature as ``latency.measure``)."""
    from train.weights import load_weights

    known = {f.name for f in fields(NetAdaptConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown NetAdapt options: {', '.join(unknown)}")
    run_dir = Path(run_dir)
    kw: dict[str, Any] = {"progress": progress} if progress else {}
    if (run_dir / "state.json").exists():
        saved = json.loads((run_dir / "config.json").read_text())
        run = NetAdaptRun(run_dir, NetAdaptConfig.from_dict(saved), data, predictor, measure_fn=measure_fn, **kw)
        summary = run.run(resume=True)
    else:
        target = {"target_ms": target_ms} if target_ms is not None else {}
        if target_ratio is not None:
            target["target_ratio"] = target_ratio
        config = NetAdaptConfig(**{**options, **target})
        config.check()
        run = NetAdaptRun(run_dir, config, data, predictor, measure_fn=measure_fn, **kw)
        summary = run.run(seed_spec, seed_state)
    return AdaptResult(
        spec=ArchSpec.load(summary["arch"]), state=load_weights(summary["weights"]),
        measured_ms=summary["final_latency_ms"], predicted_ms=summary["final_predicted_ms"],
        target_ms=summary["target_ms"], target_met=summary["target_met_measured"],
        accuracy=summary["final_accuracy"], iterations=summary["iterations"], compute=summary["compute"],
        run_dir=run_dir, summary=summary)
