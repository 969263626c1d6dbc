"""Running one NetAdapt iteration's proposals: each trims a group, fine-tunes for ``T`` steps and scores
the result, as a Ray task (a local Ray or a cluster) or one by one in this process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netadapt.groups import group_by_name
from netadapt.proposals import Proposal
from netadapt.surgery import shrink
from space.archspec import ArchSpec
from space.proxy import DEFAULT_MIN_MAP, proxy_spec

REPO_ROOT = Path(__file__).resolve().parents[1]


def model_for_data(spec: ArchSpec, data, min_map: int = DEFAULT_MIN_MAP) -> torch.nn.Module:
    """The network trained and scored on ``data``: ``spec``'s proxy network at the data's resolution
    (:func:`space.proxy.proxy_spec`, as the search trained it). Its weights are the deployment network's."""
    from space.builder import build_model

    return build_model(proxy_spec(spec, data.resolution, min_map)[0])


def evaluate_proposal(spec: ArchSpec, state: dict[str, torch.Tensor], group: str, channels: int, data,
                      steps: int, lr: float, optimizer: str, batch_size: int, seed: int, threads: int,
                      augment: bool = False, eval_limit: int | None = None,
                      proxy_min_map: int = DEFAULT_MIN_MAP, importance: str = "l2") -> dict[str, Any]:
    """Trim ``group`` of ``spec`` to ``channels``, fine-tune ``steps`` steps; return the validation
    accuracy right after the trim and after the fine-tune, which validation images the fine-tuned
    network gets right (for paired comparisons), and the new weights."""
    from common.ray_cluster import node_id
    from train.loop import evaluate, train_model

    torch.set_num_threads(threads)
    start = time.perf_counter()
    new_spec, new_state, _ = shrink(spec, state, group_by_name(spec, group), channels, importance)
    model = model_for_data(new_spec, data, proxy_min_map)
    model.load_state_dict(new_state)
    acc_before = evaluate(model, data, "val", limit=eval_limit)
    if steps:
        train_model(model, data, steps=steps, lr=lr, optimizer=optimizer, batch_size=batch_size, warmup=0.0,
                    seed=seed, augment=augment, eval_split=None, bn_recalibration_batches=5)
    correct = per_image_correct(model, data, eval_limit)
    return {
        "group": group, "accuracy_before": acc_before, "accuracy_after": float(correct.mean()),
        "correct": correct, "steps": steps,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},  # the driver writes it
        "seconds": time.perf_counter() - start, "node": node_id(),
    }


def per_image_correct(model: torch.nn.Module, data, eval_limit: int | None = None) -> np.ndarray:
    """Which validation images ``model`` gets right (bool, in the split's order)."""
    from train.loop import evaluate_per_image

    return evaluate_per_image(model, data, "val", limit=eval_limit)[0].numpy()


class ProposalRunner:
    """Runs an iteration's proposals: as Ray tasks (``workers`` >= 1) or one by one here.

    Ray is a local one with ``workers`` CPUs, or the cluster at ``address`` (then the cluster's free
    CPUs bound how many run at once). Either way a proposal's trimmed weights come back in its
    result and only the driver writes files.
    """

    def __init__(self, workers: int, data, address: str | None = None) -> None:
        self.workers = workers
        self.data = data
        self.address = address
        self._ray_started = False
        self._remote = None
        self._data_ref = None

    def __enter__(self) -> ProposalRunner:
        if self.workers >= 1:
            import ray

            if not ray.is_initialized():
                if self.address:
                    from common.ray_cluster import attach

                    attach(self.address, env_vars={"OMP_NUM_THREADS": "1"})
                else:
                    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
                    ray.init(num_cpus=self.workers, include_dashboard=False, logging_level="WARNING",
                             log_to_driver=False, configure_logging=True,
                             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
                self._ray_started = True
            self._remote = ray.remote(num_cpus=1, max_retries=0)(evaluate_proposal)
            self._data_ref = ray.put(self.data)
        return self

    def __exit__(self, *exc) -> None:
        if self._ray_started:
            import ray

            ray.shutdown()

    def run(self, spec: ArchSpec, state: dict[str, torch.Tensor], proposals: list[Proposal], kwargs: dict[str, Any],
            seeds: list[int], on_result: Callable[[Proposal, dict[str, Any]], None],
            stop: threading.Event | None = None) -> None:
        """Call ``on_result(proposal, result)`` as each finishes; a failure gives ``{"error": ...}``. Once
        ``stop`` is set, no proposal starts and the running ones are cancelled (without ``on_result``)."""
        stop = stop or threading.Event()
        if self._remote is None:
            for p, s in zip(proposals, seeds):
                if stop.is_set():
                    return
                try:
                    res = evaluate_proposal(spec, state, p.group, p.channels_after, self.data, seed=s, **kwargs)
                except Exception as e:  # a failing proposal is skipped, not fatal
                    res = {"error": first_line(e)}
                on_result(p, res)
            return
        import ray

        state_ref = ray.put(state)
        pending = {
            self._remote.remote(spec, state_ref, p.group, p.channels_after, self._data_ref, seed=s, **kwargs): p
            for p, s in zip(proposals, seeds)
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if stop.is_set():
                for ref in pending:
                    ray.cancel(ref, force=True)
                return
            for ref in done:
                p = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # RayTaskError, worker crash, out of memory
                    res = {"error": first_line(getattr(e, "cause", None) or e)}
                on_result(p, res)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]
