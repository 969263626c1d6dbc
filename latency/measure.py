"""Measure latency with onnxruntime: export to ONNX, time many runs in several sessions, keep a
robust figure and the spreads.

Every measurement here is made the same way (:mod:`latency.runner`): a fixed number of intra-op
threads, one inter-op thread, sequential execution, a fixed graph optimisation level (recorded with
the numbers); several fresh sessions, each with fresh input buffers and warm-up runs; timed runs in
short blocks spread over time; the figure (``latency_ms``) is the mean of the fastest fifth of the
block medians, since other processes only ever add time (on the development machine the same
network's median moved by 2x with the load, while this figure held within a few percent).

Clock: with one intra-op thread onnxruntime computes on the calling thread, so the thread's CPU
time (``clock="cpu"``) is the inference time without the gaps where the scheduler ran another
process. On a dedicated device the two clocks agree. ``clock="auto"`` uses the CPU clock for one
thread on the CPU provider and the wall clock otherwise (other threads' work or a GPU would not
show on the calling thread's CPU clock).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.atomic import atomic_write_bytes
from common.errors import UserError
from latency import runner
from latency.runner import OPT_LEVEL, PROVIDERS, RunnerError, cpu_model, ort_version  # noqa: F401 (re-exported)
from space.archspec import ArchSpec, Layer

if TYPE_CHECKING:
    import onnxruntime as ort

OPSET = 17
DEFAULT_WARMUP = 5
DEFAULT_RUNS = 8       # timed runs per block
DEFAULT_BLOCKS = 5     # blocks per session
DEFAULT_SESSIONS = 3
BLOCK_GAP_S = 0.1      # pause between one model's blocks, so that they lie at different moments
CLOCKS = runner.CLOCKS


@dataclass(frozen=True)
class LatencyStats:
    """One latency measurement in milliseconds. ``latency_ms`` is the figure: the mean of the
    fastest fifth of the block medians over ``sessions`` fresh sessions of ``blocks`` blocks in all.
    ``median_ms``, ``p10_ms``, ``p90_ms``, ``mean_ms`` and ``min_ms`` describe all ``runs`` timed
    runs; ``spread`` is their (p90 - p10) / median, ``session_spread`` the (slowest - fastest) /
    fastest of the sessions' own figures. :func:`measure` keeps only the blocks run in the machine's
    fast mode for ``latency_ms`` (see the probe fields)."""

    latency_ms: float
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    spread: float
    session_spread: float
    runs: int
    sessions: int
    blocks: int
    warmup: int
    provider: str
    threads: int
    opt_level: str
    ort_version: str
    clock: str = "wall"
    # Whole-network measurements (:func:`measure`) only: the probe's fast level during the measurement,
    # that over this machine's reference (:mod:`latency.probe`; None without one), the blocks kept as
    # run in the fast mode (their probe within ``fast_within`` of that level), and the seconds spent
    # waiting for it.
    probe_ms: float | None = None
    slowdown: float | None = None
    fast_blocks: int | None = None
    waited_s: float = 0.0
    fast_within: float | None = None

    @property
    def slow_throughout(self) -> bool:
        """Whether the machine had a probe reference and no block ran in its fast mode: the figure is then
        likely high by about ``slowdown``."""
        return self.slowdown is not None and not self.fast_blocks

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


def make_session(model: str | os.PathLike | bytes, threads: int = 1,
                 provider: str = "cpu") -> ort.InferenceSession:
    """An inference session set up for repeatable timing (see :mod:`latency.runner`)."""
    return _user_errors(runner.make_session, model, threads, provider)


def time_models(models: list, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS, blocks: int = DEFAULT_BLOCKS,
                sessions: int = DEFAULT_SESSIONS, provider: str = "cpu", threads: int = 1, clock: str = "auto",
                gap_s: float = 0.0, on_session=None, probe: bool = False,
                within: float | None = None) -> list[LatencyStats]:
    """Time ONNX models (paths or bytes) with :func:`latency.runner.time_models`, one
    :class:`LatencyStats` per model; ``probe``: gated by :mod:`latency.probe`'s probe against this
    machine's reference (or, without one, the probe's fast level over the call), keeping the blocks
    whose probe ran within ``within`` of it (default :data:`latency.runner.PROBE_TOLERANCE`)."""
    clock = resolve_clock(clock, threads, provider)
    name = resolve_provider(provider)
    extra: dict[str, Any] = {}
    if probe:
        from latency import probe as machine

        extra = {"probe": machine.probe_model(), "reference": machine.reference_ms(threads, provider, clock),
                 "within": check_fast_within(within)}
    stats = _user_errors(runner.time_models, models, (warmup, blocks, runs), sessions, threads, provider, clock,
                         gap_s=gap_s, on_session=on_session, **extra)
    for d in stats if probe else ():
        d["fast_within"] = extra["within"]
        if extra["reference"]:
            d["slowdown"] = d["probe_ms"] / extra["reference"]
    return [LatencyStats(**d, warmup=warmup, provider=name, threads=threads, opt_level=OPT_LEVEL,
                         ort_version=ort_version(), clock=clock) for d in stats]


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
            blocks: int = DEFAULT_BLOCKS, sessions: int = DEFAULT_SESSIONS, clock: str = "auto",
            gap_s: float = BLOCK_GAP_S, wait_s: float = 0.0, reference_ms: float | None | str = "auto",
            min_fast: int | None = None, fast_within: float | None = None) -> LatencyStats:
    """Measure a whole network end to end: an :class:`ArchSpec` (exported here; ``resolution``
    overrides its input size) or an existing ``.onnx`` file; ``sessions`` fresh sessions of
    ``blocks`` blocks of ``runs`` timed runs, ``gap_s`` apart (see :class:`LatencyStats`).

    A probe block precedes every block (:mod:`latency.probe`); ``latency_ms`` is read from the
    blocks whose probe ran within ``fast_within`` (a share; default
    :data:`latency.runner.PROBE_TOLERANCE`, 10%) of ``reference_ms`` (``"auto"``: this machine's recorded
    reference; None, or none recorded: the fastest probe level of this measurement). With a
    reference and ``wait_s`` > 0, more sessions follow, for at most ``wait_s`` seconds, until
    ``min_fast`` such blocks were kept (default :data:`latency.probe.MIN_FAST`); when none was, the
    figure falls back to all blocks and ``slowdown`` says how much slower the machine ran than its
    fast mode."""
    from dataclasses import replace

    if warmup < 0 or runs < 1 or blocks < 1 or sessions < 1:
        raise UserError(f"need warmup >= 0 and runs, blocks, sessions >= 1; got warmup={warmup}, runs={runs}, "
                        f"blocks={blocks}, sessions={sessions}")
    if wait_s < 0:
        raise UserError(f"wait must be >= 0 seconds, got {wait_s:g}")
    if min_fast is None:
        from latency.probe import MIN_FAST as min_fast
    if min_fast < 1:
        raise UserError(f"min_fast must be at least 1 block, got {min_fast}")
    fast_within = check_fast_within(fast_within)
    resolve_provider(provider)
    clock = resolve_clock(clock, threads, provider)
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
        make_session(model, threads, provider)
    except UserError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        where = "" if isinstance(spec_or_onnx_path, ArchSpec) else f"{spec_or_onnx_path}: "
        raise UserError(f"{where}onnxruntime cannot load the model ({str(e).splitlines()[0][:160]}); "
                        "pass an ONNX model, e.g. one written by `cli.py export`") from None
    if reference_ms == "auto":
        from latency.probe import reference_ms as machine_reference

        reference_ms = machine_reference(threads, provider, clock)
    return _user_errors(_time_gated, model, warmup, runs, blocks, sessions, provider, threads, clock, gap_s,
                        reference_ms, wait_s, min_fast, fast_within)


def check_fast_within(share: float | None) -> float:
    """``share`` (None: :data:`latency.runner.PROBE_TOLERANCE`) if it is a usable gate width: above 0 and at
    most 1 (a block whose probe ran twice the fast level is no fast-mode block)."""
    from latency.runner import PROBE_TOLERANCE

    if share is None:
        return PROBE_TOLERANCE
    if not 0 < share <= 1:
        raise UserError(f"the fast-mode gate (--fast-within) must lie above 0% and at most 100% of the probe's level, got "
                        f"{100 * share:g}%; e.g. 5% keeps only blocks whose probe ran at most 5% slow")
    return float(share)


def _time_gated(model, warmup: int, runs: int, blocks: int, sessions: int, provider: str, threads: int, clock: str,
                gap_s: float, reference: float | None, wait_s: float, min_fast: int, within: float) -> LatencyStats:
    import time

    import numpy as np

    from latency import probe
    from latency.runner import _Timer, fast_mean, gate, new_prober, probed_block, summarize_gated

    deadline = time.monotonic() + wait_s
    prober = new_prober(probe.probe_model(), threads, provider, clock, warmup)
    timed: list[list[np.ndarray]] = []
    pairs: list[tuple[float, float]] = []  # (probe block median, model block median)
    waited = 0.0
    while True:
        t = _Timer(runner.make_session(model, threads, provider), seed=1000 * len(timed), clock=clock)
        t.warm(warmup)
        for b in range(blocks):
            if b and gap_s:
                time.sleep(gap_s)
            pairs.append(probed_block(prober, t, runs))
        timed.append(t.blocks)
        if len(timed) < sessions:
            continue
        level = reference if reference is not None else fast_mean([a for a, _ in pairs])
        if reference is None or len(gate(pairs, level, within)) >= min_fast or time.monotonic() >= deadline:
            break
        if not gate(pairs[-blocks:], level, within):  # a slow spell: give it time to pass
            pause = min(1.0, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            waited += pause
    st = summarize_gated(timed, pairs, level, within)
    return LatencyStats(**st, warmup=warmup, provider=resolve_provider(provider), threads=threads, opt_level=OPT_LEVEL,
                        ort_version=ort_version(), clock=clock,
                        slowdown=st["probe_ms"] / reference if reference else None, waited_s=round(waited, 2),
                        fast_within=within)
