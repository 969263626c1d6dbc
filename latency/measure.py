"""Measure latency with onnxruntime: export to ONNX, time many runs, keep the median and spread.

Measurements on a shared CPU are noisy, so every measurement here is made the same way:
a fixed number of intra-op threads, one inter-op thread, sequential execution, a fixed graph
optimisation level (recorded with the numbers), warm-up runs, then timed runs split into rounds;
a round whose spread ((p90 - p10) / median) is too wide is repeated, and the quietest round is kept.

Clock: with one intra-op thread onnxruntime computes on the calling thread, so the thread's CPU
time (``clock="cpu"``) is the inference time without the gaps where the scheduler ran another
process. On a dedicated device the two clocks agree; on a shared machine the wall clock's median
can double while the CPU clock moves by a few percent. ``clock="auto"`` uses the CPU clock for
one thread on the CPU provider and the wall clock otherwise (other threads' work or a GPU would
not show on the calling thread's CPU clock).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_bytes
from common.errors import UserError
from latency import runner
from latency.runner import OPT_LEVEL, PROVIDERS, RunnerError, cpu_model, ort_version  # noqa: F401 (re-exported)
from space.archspec import ArchSpec, Layer

OPSET = 17
DEFAULT_WARMUP = 10
DEFAULT_RUNS = 50
DEFAULT_MAX_SPREAD = 0.15
DEFAULT_ROUNDS = 5
CLOCKS = runner.CLOCKS


@dataclass(frozen=True)
class LatencyStats:
    """One latency measurement in milliseconds: ``runs`` timed runs in ``rounds`` rounds of
    ``round_runs``; the statistics are those of the quietest round (lowest median)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int
    spread: float
    rounds: int
    provider: str
    threads: int
    opt_level: str
    ort_version: str
    clock: str = "wall"
    round_runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _user_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except RunnerError as e:
        raise UserError(str(e)) from None


def resolve_provider(provider: str) -> str:
    """Map ``cpu``/``cuda`` (or a full provider name) to an available onnxruntime provider."""
    return _user_errors(runner.resolve_provider, provider)


def resolve_clock(clock: str, threads: int, provider: str) -> str:
    return _user_errors(runner.resolve_clock, clock, threads, provider)


def make_session(model: str | os.PathLike | bytes, threads: int = 1, provider: str = "cpu"):
    """An inference session set up for repeatable timing (see :mod:`latency.runner`)."""
    return _user_errors(runner.make_session, model, threads, provider)


def time_session(sess, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS, max_spread: float = DEFAULT_MAX_SPREAD,
                 rounds: int = DEFAULT_ROUNDS, provider: str = "cpu", threads: int = 1,
                 clock: str = "auto") -> LatencyStats:
    """Time ``sess``: ``runs`` timed runs in ``rounds`` rounds, the round with the lowest median kept
    (more rounds while its spread exceeds ``max_spread``); see :func:`latency.runner.time_session`."""
    clock = resolve_clock(clock, threads, provider)
    d = _user_errors(runner.time_session, sess, warmup, runs, max_spread, rounds, clock)
    return LatencyStats(**d, warmup=warmup, provider=resolve_provider(provider), threads=threads,
                        opt_level=OPT_LEVEL, ort_version=ort_version(), clock=clock)


# ---- export ------------------------------------------------------------------------------------

def export_module(module, input_shape: tuple[int, ...], path: str | os.PathLike | None = None) -> bytes:
    """Export a torch module (eval mode, BN folded into convs by the exporter) to ONNX bytes;
    also written to ``path`` atomically when given."""
    import torch

    module = module.eval()
    x = torch.zeros(*input_shape)
    buf = io.BytesIO()
    # The TorchScript exporter is deprecated but ~30x faster than the dynamo one on small blocks.
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=["output"], do_constant_folding=True)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def export_spec(spec: ArchSpec, path: str | os.PathLike | None = None) -> bytes:
    """The whole network as ONNX (input 1 x C x R x R)."""
    from space.builder import build_model

    return export_module(build_model(spec), (1, spec.in_channels, spec.resolution, spec.resolution), path)


def export_layer(layer: Layer, res: int, path: str | os.PathLike | None = None) -> bytes:
    """One body layer alone at its input shape (1 x in_ch x res x res)."""
    from space.builder import build_layer

    return export_module(build_layer(layer), (1, layer.in_ch, res, res), path)


# ---- the public entry point -------------------------------------------------------------------

def measure(spec_or_onnx_path: ArchSpec | str | os.PathLike, threads: int = 1, provider: str = "cpu",
            warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS, resolution: int | None = None,
            max_spread: float = DEFAULT_MAX_SPREAD, rounds: int = DEFAULT_ROUNDS, clock: str = "auto") -> LatencyStats:
    """Measure a whole network end to end: an :class:`ArchSpec` (exported here; ``resolution``
    overrides its input size) or an existing ``.onnx`` file."""
    from dataclasses import replace

    if warmup < 0 or runs < 1:
        raise UserError(f"need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    resolve_provider(provider)
    resolve_clock(clock, threads, provider)
    if isinstance(spec_or_onnx_path, ArchSpec):
        spec = spec_or_onnx_path if resolution is None else replace(spec_or_onnx_path, resolution=resolution)
        model: bytes | str = export_spec(spec)
    else:
        p = Path(spec_or_onnx_path)
        if p.is_dir():
            raise UserError(f"{p}: is a folder, not an ONNX file; pass the .onnx file")
        if not p.is_file():
            raise UserError(f"{p}: no such ONNX file")
        if resolution is not None:
            raise UserError("resolution can only be changed for an ArchSpec, not for an ONNX file")
        model = str(p)
    try:
        sess = make_session(model, threads, provider)
    except UserError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        where = "" if isinstance(spec_or_onnx_path, ArchSpec) else f"{spec_or_onnx_path}: "
        raise UserError(f"{where}onnxruntime cannot load the model ({str(e).splitlines()[0][:160]}); "
                        "pass an ONNX model, e.g. one written by `cli.py export`") from None
    return time_session(sess, warmup, runs, max_spread, rounds, provider, threads, clock)
