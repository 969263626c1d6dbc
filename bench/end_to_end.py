#!/usr/bin/env python3
"""End to end on CIFAR-10 at 32x32: the searched and NetAdapt-trimmed network against the reference
networks scaled to the same *measured* latency.

The deployed network is the 32x32 network as trained: the search space is ``mnasnet_cifar`` (the
``mnasnet`` space with the stem at stride 1, i.e. the search's proxy network at 32px; ``--space
mnasnet_cifar_wide`` takes the one whose late stages reach 4x its widths), so the latency table,
the search's reward, NetAdapt and the reported figures all see that network. Stages, each finished
unit kept as a JSON record under ``bench/records/end_to_end/`` (how it was made, machine, load,
code), so that the benchmark resumes in a later sitting and a fresh checkout. The
work in progress under ``results/`` (the table, a search's state, a NetAdapt run's newest checkpoint)
is kept every 5 minutes in ``<records>/state/`` (``bench/workstate.py``) and put back when a sitting
starts without it, so that a machine that does not keep ``results/`` loses at most those minutes:

``table``     a latency table for the space at 32x32 (``local-cpu`` under ``results/end_to_end/``,
              kept in ``state/``: it sizes cuts and scores the search's rewards);
              a table that fails its self-check stops the benchmark and is moved aside
``target``    the target: MobileNetV3-Large 1.0 at 32x32 with the same reduced stride, measured
``search``    the default strategy (the RNN controller) and random search, ``--trials`` each, the proxy
              (``--search-epochs``, ``--search-scheduler``) on 5,000 training images, validation on
              2,000 others, target above
``netadapt``  each search's best network (trained as NetAdapt trains a seed) adapted to the target,
              with NetAdapt's defaults; the target must be met *measured*. When neither run cut
              ``MIN_COMPARISON_CUT`` or more of its seed's measured latency (e.g. both networks within
              the target as found), the controller's searched network is also trimmed to ``TRIM_RATIO``
              of its latency as that run measures it (``netadapt_trim``), for the width comparison below
``width``     each reference network (MobileNetV3-Large/Small, MobileNetV2, MobileNetV1 at 32x32,
              reduced strides) at the width multiplier whose latency is within 3% of ours, each width
              timed side by side with our network (interleaved, probe-gated: ratios, not separate
              measurements minutes apart, which differ by up to 10% here);
              and the searched network NetAdapt trimmed (the controller's, else random search's, else
              the controller's of ``netadapt_trim``) scaled by one multiplier to its trimmed version's
              latency (NetAdapt against the width multiplier alone), timed beside that version
``latency``   every final network and the target network timed again, all side by side, in rounds;
              the reported latencies are the medians over the rounds run in the machine's fast mode
              (all rounds if none was), and each network's share of ours (and of the target) the
              median of its per-round ratios over every round
``final``     every network trained from scratch with one schedule (``--final-images`` class-balanced
              CIFAR-10 training images, ``--final-epochs``, the long recipe: AdamW, cosine, crop and
              flip), ``--seeds`` training seeds, scored on the 10,000 test images; each training's
              state is kept at every epoch's end under the work folder's ``final/``, so a training cut
              off part-way goes on from its last finished epoch

    python bench/end_to_end.py run --data /work/cifar10             # every stage, resuming
    python bench/end_to_end.py run --stages table,target,search     # some stages
    python bench/end_to_end.py run --stages final --shard 1/2       # the final stage's odd units
    python bench/end_to_end.py report [--json] [--plot docs/img/end_to_end.png]

Long runs belong in the background with their log beside the records:
``nohup nice -n 5 python bench/end_to_end.py run --data /work/cifar10 >> bench/records/end_to_end/run.log 2>&1 &``.
Settings are fixed before any figure exists and kept in ``settings.json``; a sitting with other
settings is refused rather than mixed with the records.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def repo_first() -> None:
    """The repository first on the path and bench/ off it: bench/netadapt.py is named like the
    ``netadapt`` namespace package and would shadow it, and Ray puts the script's folder first again."""
    sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, ROOT)]


def _bench_module(name: str):
    """Another bench script as a module (bench/ is not a package and stays off the path)."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


repo_first()
# The record helpers of the proxy fidelity benchmark: one record style for both.
git_commit, machine, write_record = (getattr(_bench_module("proxy_fidelity"), n)
                                     for n in ("git_commit", "machine", "write_record"))
workstate = _bench_module("workstate")  # the working files a fresh checkout resumes from

RECORDS = BENCH / "records" / "end_to_end"
WORK = ROOT / "results" / "end_to_end"  # latency table, search and NetAdapt run folders (not committed)
FORMAT = "hwnas-end-to-end/1"
DEFAULT_CIFAR = os.environ.get("HWNAS_CIFAR10", "/work/cifar10")
SPACE = "mnasnet_cifar"  # the default --space
RESOLUTION = 32
DEVICE = "local-cpu"
REFERENCES = ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "mobilenet_v1")
TARGET_REFERENCE = ("mobilenet_v3_large", 1.0)
OURS = "controller+netadapt"  # the network every reference is matched to
TARGET = "target"  # the latency stage's name for the target network (TARGET_REFERENCE)
TOLERANCE = 0.03  # a width-scaled network's measured latency within 3% of ours
# The width match stops within 1.5%: timed again, a match moves by 1-4% (MobileNetV2 matched at +2.9%
# timed +3.3% and +4.0% in the latency stage, at -1.4% timed -5.2%), so one at the edge of 3% leaves it.
AIM = TOLERANCE / 2
STRATEGIES = ("controller", "random")
SPLIT_SEED = 0
STAGES = ("table", "target", "search", "netadapt", "width", "latency", "final")
LATENCY_ROUNDS = 5
# Sessions per side-by-side timing (latency.measure.time_models): the width match and the latency stage
# time networks together, interleaved, because separate measurements minutes apart differ by up to 10%
# here (a first width stage matched separately left every reference 8-10% faster than ours side by side).
SIDE_BY_SIDE_SESSIONS = 5
# When NetAdapt trims neither search's network enough (both within the target as found, or cut by less
# than MIN_COMPARISON_CUT), NetAdapt against the width multiplier alone is measured on the controller's
# searched network trimmed to this share of its latency.
TRIM_RATIO = 0.8
# NetAdapt against the width multiplier needs a real cut: a search's NetAdapt run that took off less than
# this share of its seed's measured latency (a seed just above the target) leaves a width match at about
# 1.0, the seed itself; the comparison then goes to the next search, else to the TRIM_RATIO run.
MIN_COMPARISON_CUT = 0.10


@dataclass(frozen=True)
class Settings:
    """Everything the records depend on; chosen before any figure existed (see docs/benchmarks.md)."""

    trials: int = 50
    # The search aims this much above the target and NetAdapt cuts the rest, as MobileNetV3 trimmed
    # a MnasNet-searched network with NetAdapt: with the search's reward at the target itself its best
    # network can land below it and leave NetAdapt nothing to do.
    search_target_factor: float = 1.1
    # The search's reward exponents below and above its target (search.reward): MobileNetV3's -0.15 on
    # both sides by default; 0 and -1 is MnasNet's hard constraint, which pays nothing for speed below it.
    search_alpha: float = -0.15
    search_beta: float = -0.15
    # The searches' seed (the controller's and the random sampler's draws, each trial's training): a run
    # with a new seed is a fresh replicate, not the same 200 random networks scored again.
    search_seed: int = 0
    search_epochs: float = 2.0
    search_scheduler: str = "fifo"  # or "asha": the search's early stopping (its default grace and reduction factor)
    proxy_images: int = 5000
    proxy_eval_images: int = 2000
    concurrency: int = 2
    netadapt_workers: int = 2
    netadapt_delta: float = 0.01  # NetAdapt's default cut per iteration (docs/netadapt.md)
    table_mode: str = "quick"
    final_images: int = 5000
    final_epochs: float = 15.0
    seeds: int = 3
    # The searches' space: one whose network at 32x32 is the one trained (its stem at stride 1).
    space: str = SPACE

    def check(self) -> None:
        from common.errors import UserError

        for f in fields(self):
            v = getattr(self, f.name)
            # 0 workers: proposals in this process; seed 0 is the default seed
            floor = 0 if f.name in ("netadapt_workers", "search_seed") else 1e-12
            if isinstance(v, str) or f.name in ("search_alpha", "search_beta"):
                continue
            if not (isinstance(v, (int, float)) and v >= floor and math.isfinite(v)):
                what = "a number >= 0" if floor == 0 else "a positive number"
                raise UserError(f"--{f.name.replace('_', '-')} {v} must be {what}")
        from space.searchspace import SPACES, get_space

        if self.space not in SPACES or get_space(self.space).stem.stride != 1:
            fit = [n for n in SPACES if get_space(n).stem.stride == 1]
            raise UserError(f"--space {self.space!r}: the benchmark deploys the 32x32 network as trained, which takes a "
                            f"space whose stem is at stride 1: {', '.join(fit)}")
        if self.table_mode not in ("quick", "full"):
            raise UserError(f"--table-mode {self.table_mode!r} must be quick or full")
        from search.options import SCHEDULERS

        if self.search_scheduler not in SCHEDULERS:
            raise UserError(f"--search-scheduler {self.search_scheduler!r} must be one of {', '.join(SCHEDULERS)}")
        for name in ("search_alpha", "search_beta"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v <= 0):
                raise UserError(f"--{name.replace('_', '-')} {v} must be a finite number <= 0 (a positive exponent "
                                "rewards slowness); e.g. --search-alpha 0 --search-beta -1 for a hard constraint")


# ---- the benchmark's own logic --------------------------------------------------------------------------

@dataclass
class WidthMatch:
    """The width whose latency came closest to ``target_ms``, and every width tried (width -> ms)."""

    width: float
    latency_ms: float
    target_ms: float
    points: dict[float, float]

    @property
    def error(self) -> float:
        return self.latency_ms / self.target_ms - 1

    def within(self, tol: float = TOLERANCE) -> bool:
        return abs(self.error) <= tol


def match_width(latency_of: Callable[[float], float], target_ms: float, start: float = 1.0, lo: float = 0.1,
                hi: float = 2.0, tol: float = TOLERANCE, max_evals: int = 10, exponent: float = 1.5) -> WidthMatch:
    """The width multiplier in [lo, hi] whose ``latency_of(width)`` is closest to ``target_ms``.

    Latency grows with width but in steps (channels are rounded to multiples of 8), and each call is a
    measurement, so the search keeps the widths that bracket the target and steps by the local
    log-log slope (``exponent`` until two widths are known), stopping within ``tol`` or after
    ``max_evals`` calls, or when the bracket is narrower than 0.005 (one channel step)."""
    points: dict[float, float] = {}

    def ev(w: float) -> float:
        w = round(min(hi, max(lo, w)), 4)
        if w not in points:
            points[w] = float(latency_of(w))
        return w

    w = ev(start)
    for _ in range(max_evals - 1):
        if abs(points[w] / target_ms - 1) <= tol:
            break
        below = [x for x in points if points[x] < target_ms]
        above = [x for x in points if points[x] > target_ms]
        a = max(below) if below else None
        b = min(above) if above else None
        if a is not None and b is not None:
            if b - a < 0.005:
                break
            la, lb = math.log(points[a]), math.log(points[b])
            frac = (math.log(target_ms) - la) / (lb - la) if lb > la else 0.5
            nxt = math.exp(math.log(a) + min(0.9, max(0.1, frac)) * (math.log(b) - math.log(a)))
        else:
            near = sorted(points, key=lambda x: abs(math.log(points[x] / target_ms)))[:2]
            slope = exponent
            if len(near) == 2 and near[0] != near[1] and points[near[0]] != points[near[1]]:
                slope = math.log(points[near[0]] / points[near[1]]) / math.log(near[0] / near[1])
                slope = min(4.0, max(0.3, slope))
            nxt = near[0] * (target_ms / points[near[0]]) ** (1 / slope)
        if (a is None and w <= lo and nxt <= lo) or (b is None and w >= hi and nxt >= hi):
            break  # the target lies outside [lo, hi]
        nw = ev(nxt)
        if nw == w or (nw in points and len(points) > 1 and nw in (a, b)):
            break
        w = nw
    best = min(points, key=lambda x: abs(math.log(points[x] / target_ms)))
    return WidthMatch(best, points[best], target_ms, dict(sorted(points.items())))


def uniform_width(spec, alpha: float, step: int = 8):
    """``spec`` with every channel group (:func:`space.channels.proposal_groups`) scaled by ``alpha`` and
    rounded to a multiple of ``step`` (at least ``step``), as a width multiplier scales a network."""
    from space.channels import proposal_groups, with_channels

    for g in proposal_groups(spec):
        c = g.channels(spec)
        spec = with_channels(spec, g, max(step, int(round(alpha * c / step)) * step))
    return spec


def speedup_at_equal_accuracy(curve: list[tuple[float, float]], ms: float, acc: float) -> dict[str, Any]:
    """How much slower the width-multiplier curve ``curve`` ([(ms, accuracy)], any order) is where it
    first reaches accuracy ``acc`` than the adapted network (``ms``, ``acc``): walking the curve from its
    fastest point, log latency interpolated linearly in accuracy on the first segment that climbs to
    ``acc``. Outside the curve only a bound is known: ``kind`` says ``exact``, ``at_least`` (no point
    of the curve reaches ``acc``: its slowest latency is the bound) or ``at_most`` (its fastest point is
    already at or above ``acc``). ``monotone`` is False when a slower point of the curve scored lower
    than a faster one (noise over seeds larger than the width's effect): read the figure as weak."""
    pts = sorted(curve)
    if not pts:
        return {"speedup": math.nan, "kind": "none", "width_ms": math.nan, "monotone": True}
    monotone = all(a0 <= a1 for (_, a0), (_, a1) in zip(pts, pts[1:]))

    def result(at: float, kind: str) -> dict[str, Any]:
        return {"speedup": at / ms, "kind": kind, "width_ms": at, "monotone": monotone}

    if pts[0][1] >= acc:
        return result(pts[0][0], "at_most")
    for (m0, a0), (m1, a1) in zip(pts, pts[1:]):
        if a0 < acc <= a1:
            f = (acc - a0) / (a1 - a0)
            return result(math.exp(math.log(m0) + f * (math.log(m1) - math.log(m0))), "exact")
    return result(pts[-1][0], "at_least")


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for one value: a spread of one training is unknown, not 0)."""
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
    return m, s


# ---- records ------------------------------------------------------------------------------------------------

def record_path(name: str, records: Path = RECORDS) -> Path:
    return records / f"{name}.json"


def read_record(name: str, records: Path = RECORDS) -> dict[str, Any] | None:
    p = record_path(name, records)
    return json.loads(p.read_text()) if p.exists() else None


def save(name: str, doc: dict[str, Any], records: Path, started: float, load0: float, *, fmt: str = FORMAT,
         script: str = "bench/end_to_end.py") -> dict[str, Any]:
    """Record unit ``name`` with how it was made (seconds since ``started``, load, machine, code, script)."""
    doc = {"format": fmt, "unit": name, **doc, "seconds": round(time.time() - started, 1),
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
           "loadavg_1m": [load0, os.getloadavg()[0]], "machine": machine(), "code": git_commit(),
           "script": script}
    write_record(record_path(name, records), doc)
    return doc


def check_settings(settings: Settings, records: Path) -> None:
    """Refuse to mix records made with other settings (one line, exit code 2 through UserError)."""
    from common.atomic import atomic_write_text
    from common.errors import UserError

    p = records / "settings.json"
    if p.exists():
        saved = json.loads(p.read_text())
        saved = {**asdict(Settings()), **saved}  # a setting the records predate was at its default then
        diff = [k for k, v in asdict(settings).items() if saved.get(k) != v]
        if diff:
            k = diff[0]
            raise UserError(f"{p}: the records were made with --{k.replace('_', '-')} {saved.get(k)}, not "
                            f"{getattr(settings, k)}; give the same settings or another --records folder")
    else:
        records.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(asdict(settings), indent=1) + "\n")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# ---- the networks -------------------------------------------------------------------------------------------

def deployed(spec):
    """``spec`` as trained and deployed here: 32x32, 10 classes, 3 channels, the proxy's reduced strides."""
    from space.proxy import proxy_spec

    return proxy_spec(replace(spec, resolution=RESOLUTION, num_classes=10, in_channels=3), RESOLUTION)[0]


def reference_net(name: str, width: float):
    from space.references import reference

    return deployed(reference(name, width, RESOLUTION))


def searched_net(tokens: list[int], space: str = SPACE):
    from space.searchspace import get_space

    return get_space(space).decode(tokens, resolution=RESOLUTION, num_classes=10, in_channels=3)


def ensure_probe_reference(seconds: float = 60.0) -> None:
    """This machine's probe reference (latency.probe) in the work folder, timed for ``seconds`` when
    there is none yet (before the first measurement of a sitting): without one, measurements cannot
    tell a slow spell that outlasts them."""
    from latency import probe
    from latency.runner import fast_mean

    if probe.reference_ms() is not None:
        return
    level = fast_mean(probe.time_probe(seconds))
    log(f"probe reference: {probe.record(level):.3f} ms over {seconds:.0f} s ({probe.path()})")


def measure_ms(spec) -> float:
    from latency.measure import measure

    ensure_probe_reference()
    # Up to a minute for the machine's fast mode (latency.probe): slow spells here last up to two.
    st = measure(spec, threads=1, wait_s=60.0)
    if st.slow_throughout:
        log(f"warning: {spec.name or 'a network'} measured with the machine {st.slowdown:.2f}x slower than its fast "
            f"mode throughout; its {st.latency_ms:.3f} ms is likely that much high")
    return float(st.latency_ms)


def side_by_side(models: list) -> list:
    """Every model (an ArchSpec or ONNX bytes) timed together in one run, a LatencyStats each: blocks
    interleaved between them and gated by the probe (:func:`latency.measure.time_models`), so that
    their ratios hold while the machine's speed drifts."""
    from latency.measure import export_spec, time_models
    from space.archspec import ArchSpec

    ensure_probe_reference()
    onnx = [export_spec(m) if isinstance(m, ArchSpec) else m for m in models]
    return time_models(onnx, probe=True, sessions=SIDE_BY_SIDE_SESSIONS)


def side_by_side_ms(models: list) -> list[float]:
    """:func:`side_by_side`'s latencies (ms)."""
    return [s.latency_ms for s in side_by_side(models)]


def spec_doc(spec) -> dict[str, Any]:
    from space.cost import cost

    c = cost(spec)
    return {"spec": json.loads(spec.to_json()), "params": c.params, "macs": c.macs}


def load_spec(doc: dict[str, Any]):
    from space.archspec import ArchSpec

    return ArchSpec.from_json(json.dumps(doc["spec"]))


def cut(rec: dict[str, Any] | None) -> bool:
    """Whether a NetAdapt record trimmed its seed (a searched network already within the target is kept
    as it is, with no iteration)."""
    return bool(rec) and rec.get("iterations", 0) > 0


def cut_for_comparison(rec: dict[str, Any] | None) -> bool:
    """Whether a NetAdapt record trimmed its seed by at least :data:`MIN_COMPARISON_CUT` of the seed's
    measured latency (NetAdapt's own ``speedup_measured``, seed and result timed in one process; a record
    without it counts every cut)."""
    if not cut(rec):
        return False
    speedup = rec.get("speedup_measured")
    return speedup is None or 1 - 1 / float(speedup) >= MIN_COMPARISON_CUT


def adapted_search(records: Path) -> str | None:
    """The search whose network NetAdapt against the width multiplier alone is measured on: the first of
    ``STRATEGIES`` whose best network NetAdapt trimmed by :data:`MIN_COMPARISON_CUT` or more. None while
    the NetAdapt records cannot tell yet, and when NetAdapt trimmed neither network that much (then the
    ``netadapt_trim`` run makes the comparison)."""
    for strategy in STRATEGIES:
        rec = read_record(f"netadapt_{strategy}", records)
        if rec is None or cut_for_comparison(rec):
            return strategy if rec else None
    return None


def netadapt_done(records: Path) -> bool:
    return all(read_record(f"netadapt_{s}", records) for s in STRATEGIES)


def trim_needed(records: Path) -> bool:
    """Whether the extra NetAdapt run ``netadapt_trim`` (:data:`TRIM_RATIO`) is due: NetAdapt is done for
    every search and trimmed neither network by :data:`MIN_COMPARISON_CUT` or more."""
    return netadapt_done(records) and adapted_search(records) is None


@dataclass(frozen=True)
class WidthComparison:
    """The networks of NetAdapt against the width multiplier alone, by name, and the NetAdapt record
    (``unit``) of the trimmed one; the searched network ``seed`` comes from ``search_<search>``."""

    seed: str
    trimmed: str
    search: str
    unit: str


def seed_trained_as(records: Path, c: WidthComparison) -> str:
    """The final network that is ``c``'s searched network before NetAdapt: ``<search>+netadapt`` when that
    search's NetAdapt kept its network as found (the ``netadapt_trim`` case), so that the same network is
    not trained and timed twice under two names; else ``c.seed``."""
    return c.seed if cut(read_record(f"netadapt_{c.search}", records)) else f"{c.search}+netadapt"


def width_comparison(records: Path) -> WidthComparison | None:
    """The search network NetAdapt trimmed toward the target (:func:`adapted_search`), else the controller's
    trimmed by ``netadapt_trim``; None while neither is known."""
    if adapted := adapted_search(records):
        return WidthComparison(f"{adapted}_seed", f"{adapted}+netadapt", adapted, f"netadapt_{adapted}")
    if trim_needed(records) and read_record("netadapt_trim", records):
        return WidthComparison("controller_seed", "controller+trim", "controller", "netadapt_trim")
    return None


def final_networks(records: Path) -> dict[str, dict[str, Any]]:
    """The networks the final training trains, by name, from the records so far (``spec``, ``method``):
    each search's network after NetAdapt, the width-scaled references, and the networks of NetAdapt
    against the width multiplier (:func:`width_comparison`): the searched network before NetAdapt (unless
    it is already in the set as kept by NetAdapt, :func:`seed_trained_as`) and width-scaled, and
    ``controller+trim`` when that comparison needed a NetAdapt run of its own."""
    out: dict[str, dict[str, Any]] = {}
    for strategy in STRATEGIES:
        if rec := read_record(f"netadapt_{strategy}", records):
            what = f"{strategy} search + NetAdapt" if cut(rec) else f"{strategy} search (within the target as found)"
            out[f"{strategy}+netadapt"] = {**rec["network"], "method": what}
    if (rec := read_record("netadapt_trim", records)) and trim_needed(records):
        out["controller+trim"] = {**rec["network"], "method": f"controller search + NetAdapt to {TRIM_RATIO}x its latency"}
    c = width_comparison(records)
    seeds = (c.seed,) if c else ()
    if c and seed_trained_as(records, c) == c.seed and (rec := read_record(f"search_{c.search}", records)):
        out[c.seed] = {**rec["network"], "method": f"{c.search} search, before NetAdapt"}
    for name in REFERENCES + seeds:
        if rec := read_record(f"width_{name}", records):
            what = (f"{c.search} search's network (width 1.0: {seed_trained_as(records, c)}), width multiplier only"
                    if c and name == c.seed else f"{name}, width multiplier")
            out[f"{name}@width"] = {**rec["network"], "method": what, "width": rec["width"]}
    return out


def final_set_complete(records: Path) -> bool:
    """Whether every network of the final set is known: NetAdapt done for every search (and
    ``netadapt_trim`` if it was due), and every width match (the references' and the comparison's
    searched network's) recorded."""
    # Once NetAdapt is done for every search, the comparison is known unless netadapt_trim is still due.
    c = width_comparison(records)
    return netadapt_done(records) and c is not None and all(read_record(f"width_{n}", records)
                                                            for n in REFERENCES + (c.seed,))


# ---- stages -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ctx:
    """What every stage reads: the settings, where the records and the working files go, the data."""

    s: Settings
    records: Path
    data: str
    work: Path = WORK
    shard: tuple[int, int] = (0, 1)  # (k, n): the final stage trains only units k, k + n, k + 2n, ...
    accept_failed_table: bool = False  # keep a table that missed its self-check (said in its record)


def have_table(space: str = SPACE) -> bool:
    """Whether this checkout holds the table (``results/`` is not committed: a fresh one has it only when
    the records' ``state/`` put it back)."""
    from latency.files import read_meta, units_path

    p = units_path(DEVICE)
    return p.exists() and any(b.get("space") == space and b.get("resolution") == RESOLUTION
                              for b in read_meta(p).get("builds", []))


def refuse_failed_table(check: dict[str, Any] | None, space: str = SPACE) -> None:
    """Stop the benchmark when the table failed its self-check: every reward and cut would rest on it.
    The table is moved aside (not deleted: it shows what the machine did), so the next sitting builds
    a new one."""
    from latency.selfcheck import failed, summary

    if not failed(check):
        return
    from common.errors import UserError
    from latency.files import device_dir

    old = device_dir(DEVICE)
    aside = old.with_name(f"{old.name}.failed-{time.strftime('%Y%m%dT%H%MZ', time.gmtime())}")
    old.rename(aside)
    raise UserError(f"the {space} table failed its {summary(check)}; moved to {aside}. Run the table stage again "
                    "when the machine is idle and in its fast mode (`python cli.py latency probe` tells)")


def table_plan(space: str, mode: str, near_ms: tuple[float, float] | None = None):
    """The build plan of the benchmark's table. Calibration and self-check networks: ``space``'s own
    samples at 32x32 (the build adds the space as a family of its own), which are what the table
    scores here; 30 of them, so that the calibration may fit more than a scale; with ``near_ms``,
    those whose plain unit sum lies nearest that range (``latency.build.Plan``). No range units:
    they cover networks at 96-224px, which nothing here runs at."""
    from latency.build import PLANS

    return replace(PLANS[mode], range_per_family=0, families=(space,), calibration_per_family=30,
                   check_per_family=10, near_ms=near_ms)


def stage_table(ctx: Ctx) -> None:
    s, records = ctx.s, ctx.records
    needed = not all(read_record(f"{st}_{x}", records) for st in ("search", "netadapt") for x in STRATEGIES)
    if read_record("table", records) and (have_table(s.space) or not needed):
        return
    from latency.build import build
    from latency.selfcheck import failed

    t0, l0 = time.time(), os.getloadavg()[0]
    plan = table_plan(s.space, s.table_mode)
    log(f"latency table for {s.space} at {RESOLUTION}px ({s.table_mode}) in {ctx.work}")
    pred = build(DEVICE, s.space, RESOLUTION, s.table_mode, plan=plan)
    check = pred.meta.get("self_check")
    accepted = ctx.accept_failed_table and failed(check)
    if accepted:
        log("the table missed its self-check and is kept (--accept-failed-table): searches steer by it, "
            "every reported latency is measured")
    else:
        refuse_failed_table(check, s.space)  # returns when the check passed
    save("table", {"device": DEVICE, "space": s.space, "resolution": RESOLUTION, "mode": s.table_mode,
                   "plan": asdict(plan), "self_check": check, "accepted_failed_self_check": accepted},
         records, t0, l0)


def stage_target(ctx: Ctx) -> None:
    records = ctx.records
    if read_record("target", records):
        return
    t0, l0 = time.time(), os.getloadavg()[0]
    name, width = TARGET_REFERENCE
    spec = reference_net(name, width)
    ms = measure_ms(spec)
    log(f"target: {name} x{width} at {RESOLUTION}px measures {ms:.3f} ms")
    save("target", {"reference": name, "width": width, "target_ms": ms, "network": spec_doc(spec)}, records, t0, l0)


RETARGET_TOLERANCE = 0.03


def retarget(records: Path, work: Path, processes: int = 3, tolerance: float = RETARGET_TOLERANCE) -> dict[str, Any]:
    """Measure the target network again, each time in a fresh process (``measure_ms``), and when the
    median differs from ``target.json`` by more than ``tolerance``, keep the old record as
    ``target_first.json`` and aim NetAdapt at the median (a target measured during slow spells would
    let it stop early). The searches' reward target stays as run: their records keep it. The check
    itself is kept in ``target_check.json`` either way."""
    import statistics
    import subprocess

    from common.errors import UserError

    rec = read_record("target", records)
    if rec is None:
        raise UserError("no target yet: run the target stage first (--stages target)")
    if read_record("netadapt_controller", records) or read_record("netadapt_random", records):
        raise UserError("NetAdapt already ran against this target; re-measuring it now would mix two targets")
    if read_record("target_check", records) or read_record("target_first", records):
        raise UserError("the target was already checked (target_check.json or target_first.json exists); the check is "
                        "made once, so that the first target record is never overwritten")
    t0, l0 = time.time(), os.getloadavg()[0]
    name, width = rec["reference"], rec["width"]
    # the network as the target record holds it (not rebuilt from code, which may have moved since)
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import bench.end_to_end as e; "
            "print(e.measure_ms(e.load_spec(e.read_record('target', Path(sys.argv[2]))['network'])))")
    env = {**os.environ, "HWNAS_RESULTS": str(work)}
    got = []
    for i in range(processes):
        proc = subprocess.run([sys.executable, "-c", code, str(ROOT), str(records.resolve())], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"retarget: the measuring process {i + 1} failed (exit {proc.returncode}): {tail}")
        for line in proc.stderr.strip().splitlines():  # what the measuring process logged (a slow machine's warning)
            print(line, file=sys.stderr, flush=True)
        got.append(float(proc.stdout.split()[-1]))
        log(f"retarget: {name} x{width} measures {got[-1]:.3f} ms (process {i + 1} of {processes})")
    median = float(statistics.median(got))
    change = median / float(rec["target_ms"]) - 1
    replaced = abs(change) > tolerance
    check = {"first_ms": rec["target_ms"], "remeasured_ms": got, "median_ms": median, "change": change,
             "tolerance": tolerance, "replaced": replaced}
    if replaced:
        write_record(record_path("target_first", records), rec)
        save("target", {**{k: rec[k] for k in ("reference", "width", "network")}, "target_ms": median,
                        "remeasured": check}, records, t0, l0)
        log(f"retarget: {change:+.1%} from {rec['target_ms']:.3f} ms; NetAdapt now aims at {median:.3f} ms "
            "(the first record is target_first.json)")
    else:
        log(f"retarget: {change:+.1%} from {rec['target_ms']:.3f} ms, within {tolerance:.0%}; target kept")
    return save("target_check", check, records, t0, l0)


def target_ms(records: Path) -> float:
    rec = read_record("target", records)
    if rec is None:
        from common.errors import UserError

        raise UserError("no target yet: run the target stage first (--stages target)")
    return float(rec["target_ms"])


def stage_search(ctx: Ctx) -> None:
    s, records, data = ctx.s, ctx.records, ctx.data
    from search.options import SearchOptions
    from search.run import run_search

    target = target_ms(records) * s.search_target_factor
    for strategy in STRATEGIES:
        name = f"search_{strategy}"
        if read_record(name, records):
            continue
        t0, l0 = time.time(), os.getloadavg()[0]
        run_name = f"e2e-{strategy}"
        resume = (ctx.work / "runs" / run_name / "options.json").exists()
        log(f"search {strategy}: {s.trials} trials, reward target {target:.3f} ms" + (" (resuming)" if resume else ""))
        opts = SearchOptions(target_ms=target, trials=s.trials, epochs=s.search_epochs, strategy=strategy,
                             space=s.space, latency_resolution=RESOLUTION, data=data, train_resolution=RESOLUTION,
                             data_limit=s.proxy_images, eval_limit=s.proxy_eval_images, split_seed=SPLIT_SEED,
                             concurrency=s.concurrency, scheduler=s.search_scheduler, name=run_name, resume=resume,
                             alpha=s.search_alpha, beta=s.search_beta, seed=s.search_seed)
        summary = run_search(opts)
        if summary.status != "finished" or summary.best is None:
            log(f"search {strategy} {summary.status} ({summary.finished} of {s.trials} trials): run again to resume")
            raise SystemExit(130 if summary.status == "interrupted" else 1)
        import pandas as pd

        trials = pd.read_csv(Path(summary.run_dir) / "trials.csv")
        b = summary.best
        save(name, {"strategy": strategy, "trials": s.trials, "reward_target_ms": target, "run_dir": summary.run_dir,
                    "best": {k: b[k] for k in ("trial", "tokens", "accuracy", "test_accuracy", "latency_ms", "reward")},
                    "network": spec_doc(searched_net([int(t) for t in b["tokens"].split("-")], s.space)),
                    "compute": {"trials_completed": summary.completed, "stopped_early": summary.stopped,
                                "failed": summary.failed,
                                "train_seconds": float(trials["train_seconds"].fillna(0).sum()),
                                "wall_seconds": round(summary.seconds, 1)}}, records, t0, l0)
        log(f"search {strategy} done: best {b['tokens']} val acc {b['accuracy']:.4f}, "
            f"predicted {b['latency_ms']:.3f} ms")


def proxy_data(s: Settings, data: str):
    from train.data import load_data

    return load_data(data, seed=SPLIT_SEED, limit=s.proxy_images, eval_limit=s.proxy_eval_images,
                     train_resolution=RESOLUTION)


def stage_netadapt(ctx: Ctx) -> None:
    s, records, data = ctx.s, ctx.records, ctx.data
    from latency import load_predictor
    from netadapt.api import adapt
    from netadapt.loop import SeedWithinTarget

    target = target_ms(records)
    bundle = None

    def run(seed_doc: dict[str, Any], folder: str, **target: float):
        nonlocal bundle
        bundle = bundle or proxy_data(s, data)
        pred = load_predictor(DEVICE, s.space, RESOLUTION, progress=False)
        ensure_probe_reference()  # NetAdapt's measurements are gated against it
        # The seed is trained as NetAdapt trains a seed that comes without weights; the adapted network
        # is trained from scratch by the final stage like every other, so no long-term fine-tune here.
        return adapt(load_spec(seed_doc), None, bundle, pred, ctx.work / "netadapt" / folder, **target,
                     final_epochs=0, workers=s.netadapt_workers, delta=s.netadapt_delta,
                     progress=lambda m: log(f"  {m}"))

    def outcome(res) -> dict[str, Any]:
        return {"measured_ms": res.measured_ms, "predicted_ms": res.predicted_ms, "target_met": res.target_met,
                "iterations": res.iterations, "accuracy_proxy_test": res.accuracy, "compute": res.compute,
                # the seed and the result timed in one process, as NetAdapt's result.json gives them
                "seed_measured_ms": res.summary.get("seed_latency_ms"),
                "speedup_measured": res.summary.get("speedup_measured"), "network": spec_doc(res.spec)}

    for strategy in STRATEGIES:
        name = f"netadapt_{strategy}"
        if read_record(name, records):
            continue
        seed = read_record(f"search_{strategy}", records)
        if seed is None:
            log(f"netadapt {strategy}: waiting for its search")
            continue
        t0, l0 = time.time(), os.getloadavg()[0]
        log(f"netadapt {strategy}: {seed['best']['tokens']} to {target:.3f} ms measured")
        try:
            res = run(seed["network"], strategy, target_ms=target)
        except SeedWithinTarget as e:
            # NetAdapt refuses a seed its own measurement (median of its repeats) puts within the target:
            # the searched network is then kept as it is, on that measurement, not on another one.
            save(name, {"strategy": strategy, "target_ms": target, "measured_ms": e.seed_ms, "target_met": True,
                        "iterations": 0, "note": f"the searched network already meets the target ({e.basis})",
                        "compute": {}, "network": seed["network"]}, records, t0, l0)
            log(f"netadapt {strategy}: the searched network measures {e.seed_ms:.3f} ms, already within the target")
            continue
        save(name, {"strategy": strategy, "target_ms": target, **outcome(res)}, records, t0, l0)
        log(f"netadapt {strategy}: {res.iterations} iterations, {res.measured_ms:.3f} ms measured "
            f"(target {'met' if res.target_met else 'NOT met'})")
    if trim_needed(records) and not read_record("netadapt_trim", records):
        # Neither search's NetAdapt cut enough for it: NetAdapt against the width multiplier gets its own
        # run, from the controller's searched network (the seed the width multiplier also scales), to
        # TRIM_RATIO of the seed's latency as this run measures it (`netadapt --target-ratio`): a target
        # taken from an earlier measurement could fall at or above the seed's own figure if the machine
        # drifted in between, and NetAdapt would then refuse the seed.
        t0, l0 = time.time(), os.getloadavg()[0]
        log(f"netadapt trim: no search's NetAdapt run cut {MIN_COMPARISON_CUT:.0%} or more; the controller's "
            f"searched network to {TRIM_RATIO}x its measured latency, for the width comparison")
        res = run(read_record("search_controller", records)["network"], "trim", target_ratio=TRIM_RATIO)
        save("netadapt_trim", {"strategy": "controller", "ratio": TRIM_RATIO, "target_ms": res.target_ms,
                               **outcome(res)}, records, t0, l0)
        log(f"netadapt trim: {res.iterations} iterations, {res.measured_ms:.3f} ms measured "
            f"(target {'met' if res.target_met else 'NOT met'})")


def anchor_ms(unit: str, records: Path) -> float:
    """The measured latency of the network of NetAdapt record ``unit``, recorded once: as ``anchor`` for
    ``netadapt_controller`` (ours, which every reference is matched to), else as ``anchor_<run>``."""
    name = "anchor" if unit == "netadapt_controller" else f"anchor_{unit.removeprefix('netadapt_')}"
    anchor = read_record(name, records)
    if anchor is None:
        t0, l0 = time.time(), os.getloadavg()[0]
        ms = measure_ms(load_spec(read_record(unit, records)["network"]))
        anchor = save(name, {"network": unit, "latency_ms": ms}, records, t0, l0)
        log(f"width: the network of {unit} measures {ms:.3f} ms")
    return float(anchor["latency_ms"])


def stage_width(ctx: Ctx) -> None:
    records = ctx.records
    if read_record("netadapt_controller", records) is None:
        log("width: waiting for the controller's NetAdapt run")
        return
    # (maker, NetAdapt record whose network it is matched to, width search start and upper end) by unit name
    makers: dict[str, tuple[Callable[[float], Any], str, float, float]] = {
        n: ((lambda w, n=n: reference_net(n, w)), "netadapt_controller", 1.0, 2.0) for n in REFERENCES}
    if c := width_comparison(records):  # NetAdapt against the width multiplier alone, on the network NetAdapt trimmed
        seed_spec = load_spec(read_record(f"search_{c.search}", records)["network"])
        makers[c.seed] = (lambda w: uniform_width(seed_spec, w)), c.unit, 0.8, 1.0
    elif netadapt_done(records):
        log("width: waiting for the NetAdapt run of the width comparison (--stages netadapt)")
    from latency.measure import export_spec

    for name, (make, unit, start, hi) in makers.items():
        if read_record(f"width_{name}", records):
            continue
        target = anchor_ms(unit, records)
        anchor = export_spec(load_spec(read_record(unit, records)["network"]))
        t0, l0 = time.time(), os.getloadavg()[0]
        cache: dict[str, float] = {}
        pairs: dict[float, list[float]] = {}

        def latency_of(w: float, make=make, cache=cache, pairs=pairs, anchor=anchor, target=target) -> float:
            # timed side by side with the network it is matched to, on that network's anchor scale
            spec = make(w)
            key = spec.to_json()
            if key not in cache:
                theirs, mine = side_by_side_ms([anchor, spec])
                cache[key], pairs[round(w, 4)] = target * mine / theirs, [theirs, mine]
            return cache[key]

        m = match_width(latency_of, target, start=start, hi=hi, tol=AIM)
        save(f"width_{name}", {"name": name, "width": m.width, "latency_ms": m.latency_ms, "target_ms": m.target_ms,
                               "error": m.error, "within": m.within(), "matched_to": unit,
                               "points": {str(k): v for k, v in m.points.items()},
                               "side_by_side_ms": {str(k): v for k, v in pairs.items()},
                               "network": spec_doc(make(m.width))}, records, t0, l0)
        log(f"width {name}: x{m.width:.3f} is {m.error:+.1%} of {unit}'s network side by side"
            f"{'' if m.within() else ' (OUTSIDE 3%)'}; {len(m.points)} widths timed")


def stage_latency(ctx: Ctx) -> None:
    records = ctx.records
    nets = final_networks(records)
    if read_record("latency", records) or not final_set_complete(records):
        if not read_record("latency", records):
            log("latency: waiting for every final network")
        return
    import statistics

    from latency.measure import export_spec
    from latency.runner import PROBE_TOLERANCE

    t0, l0 = time.time(), os.getloadavg()[0]
    # the target network too, so that "NetAdapt met the target" is also seen side by side
    onnx = {n: export_spec(load_spec(d)) for n, d in {**nets, TARGET: read_record("target", records)["network"]}.items()}
    rounds: dict[str, list[float]] = {n: [] for n in onnx}
    slowdown: list[float | None] = []  # the machine's speed in each round against its fast mode (the probe's)
    for r in range(LATENCY_ROUNDS):
        stats = side_by_side(list(onnx.values()))
        for n, st in zip(onnx, stats):
            rounds[n].append(st.latency_ms)
        slow = [st.slowdown for st in stats if st.slowdown is not None]
        slowdown.append(statistics.median(slow) if slow else None)
        log(f"latency: round {r + 1} of {LATENCY_ROUNDS}" + (f", machine at {slowdown[-1]:.2f}x its fast mode's time"
                                                             if slowdown[-1] else ""))
    # The figures in ms from the rounds run in the machine's fast mode (as latency measure reports them);
    # the ratios, which a slow spell leaves alike for all, from every round.
    fast = [i for i, x in enumerate(slowdown) if x is not None and x <= 1 + PROBE_TOLERANCE] or list(range(LATENCY_ROUNDS))

    def vs(base: list[float]) -> dict[str, float]:  # median over rounds of the ratio to ``base``, less 1
        return {n: statistics.median(m / b for m, b in zip(v, base)) - 1 for n, v in rounds.items()}

    vs_ours = vs(rounds[OURS])
    save("latency", {"rounds": LATENCY_ROUNDS, "side_by_side": True, "slowdown": slowdown, "ms_rounds": fast,
                     "ms": {n: statistics.median(v[i] for i in fast) for n, v in rounds.items()},
                     "vs_ours": vs_ours, "vs_target": vs(rounds[TARGET]), "all_ms": rounds}, records, t0, l0)
    log("latency: " + ", ".join(f"{n} {v:+.1%}" for n, v in vs_ours.items() if n != OURS) + " of ours side by side")


def final_recipe(s: Settings):
    from train.recipes import LONG_SCHEDULE

    # The long schedule, on --final-images training images and scored on every test image.
    return LONG_SCHEDULE.with_changes(name="end_to_end", epochs=s.final_epochs, train_images=s.final_images,
                                      eval_images=None)


def final_units(names: list[str], seeds: int, shard: tuple[int, int] = (0, 1)) -> list[tuple[int, str]]:
    """The (seed, network) units of the final stage that shard ``(k, n)`` trains, in order: every
    network's first seed before any second one, and of that list every n-th unit from the k-th."""
    k, n = shard
    units = [(seed, name) for seed in range(seeds) for name in names]
    return units[k::n]


def progress_lines(label: str, parts: int = 5):
    """A training ``progress`` callback that logs ``label``'s step, loss and minutes at each
    ``1/parts`` of its steps before the last (the result line says the end), so that a final training
    of half an hour shows it is moving without flooding the log two shards share."""
    done = [0]

    def progress(p) -> None:
        part = p.step * parts // p.steps
        if part > done[0] and p.step < p.steps:
            done[0] = part
            log(f"  {label}: step {p.step}/{p.steps}, loss {p.loss:.3f}, {p.seconds / 60:.1f} min")

    return progress


def stage_final(ctx: Ctx) -> None:
    s, records, data = ctx.s, ctx.records, ctx.data
    import torch

    from space.builder import build_model
    from train.loop import finish_keeping_state, resume
    from train.recipes import load_recipe_data, start_training

    nets = final_networks(records)
    if ctx.shard[1] > 1 and not final_set_complete(records):
        # A shard's units are every n-th of the whole list: while networks are still joining it, two shards
        # started at different moments would split different lists and could train the same units.
        log("final: shards wait for every final network (--stages netadapt,width first)")
        return
    recipe, bundle = final_recipe(s), None
    torch.set_num_threads(1)  # as the search's trials and NetAdapt's proposals train
    for seed, name in final_units(list(nets), s.seeds, ctx.shard):
        net, unit = nets[name], f"final/{name}_s{seed}"
        if read_record(unit, records):
            continue
        bundle = bundle or load_recipe_data(data, recipe, seed=SPLIT_SEED)
        t0, l0, c0 = time.time(), os.getloadavg()[0], time.process_time()
        spec, label = load_spec(net), f"final {name} seed {seed}"

        def fresh(spec=spec, seed=seed, label=label, bundle=bundle):
            torch.manual_seed(seed)
            return start_training(build_model(spec), bundle, recipe, seed=seed, progress=progress_lines(label))

        run = fresh()
        # A final training takes up to an hour: its state is kept at each epoch's end in the work folder, so a
        # sitting that ends part-way loses at most an epoch of it.
        kept, earlier = ctx.work / "final" / f"{name}_s{seed}.pt", (0, 0.0)
        try:
            if resume(run, kept):
                earlier = (run.step, run.seconds)
                log(f"{label}: goes on from step {run.step}/{run.total} ({kept})")
        except ValueError as e:  # another recipe's, or unreadable: start over
            log(f"{label}: starts over, the kept state {kept} is of no use ({e})")
            run = fresh()
        res = finish_keeping_state(run, kept, "test")
        # "seconds" counts the earlier sittings' training seconds too; cpu_seconds is this sitting's alone
        doc = save(unit, {"network": name, "seed": seed, "recipe": recipe.to_dict(), "data": bundle.describe(),
                          "params": net["params"], "macs": net["macs"], "result": res.to_dict(),
                          "resumed": {"step": earlier[0], "seconds": round(earlier[1], 1)},
                          "cpu_seconds": round(time.process_time() - c0, 1)}, records, t0 - earlier[1], l0)
        log(f"{label}: test accuracy {res.accuracy:.4f} ({doc['seconds']:.0f} s)")


STAGE_FNS = {"table": stage_table, "target": stage_target, "search": stage_search, "netadapt": stage_netadapt,
             "width": stage_width, "latency": stage_latency, "final": stage_final}


# ---- the report ---------------------------------------------------------------------------------------------

def difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Row ``a``'s mean accuracy less row ``b``'s, in points, with the standard error of that difference
    (each mean's sample std over its seeds, independent trainings)."""
    se = math.sqrt(sum(r["accuracy_std"] ** 2 / r["seeds"] for r in (a, b)))
    return {"points": 100 * (a["accuracy"] - b["accuracy"]), "points_se": 100 * se}


def compute_seconds(name: str, records: Path) -> float:
    """Seconds spent on a network: its search (training seconds of every trial), NetAdapt, width search
    and final trainings."""
    def search_seconds(strategy: str) -> float:
        return read_record(f"search_{strategy}", records)["compute"]["train_seconds"]

    total = sum(json.loads(p.read_text())["seconds"] for p in (records / "final").glob(f"{name}_s*.json"))
    if name.endswith("@width"):  # the width search, then what the scaled network itself cost (a searched one: its search)
        name = name.removesuffix("@width")
        total += read_record(f"width_{name}", records)["seconds"]
    if name.endswith("+netadapt"):
        strategy = name.removesuffix("+netadapt")
        total += search_seconds(strategy) + read_record(f"netadapt_{strategy}", records)["seconds"]
    elif name == "controller+trim":
        total += search_seconds("controller") + read_record("netadapt_trim", records)["seconds"]
    elif name.endswith("_seed"):
        total += search_seconds(name.removesuffix("_seed"))
    return total


def final_accuracies(name: str, records: Path) -> list[float]:
    """The test accuracies of network ``name``'s finished final trainings, by seed."""
    return [json.loads(p.read_text())["result"]["accuracy"] for p in sorted((records / "final").glob(f"{name}_s*.json"))]


def summarize(records: Path = RECORDS) -> dict[str, Any]:
    nets = final_networks(records)
    latency = read_record("latency", records) or {}
    lat, vs = latency.get("ms", {}), latency.get("vs_ours", {})
    rows = []
    for name, net in nets.items():
        accs = final_accuracies(name, records)
        m, sd = mean_std(accs)
        rows.append({"network": name, "method": net["method"], "width": net.get("width"), "latency_ms": lat.get(name),
                     "params": net["params"], "macs": net["macs"], "accuracy": m, "accuracy_std": sd, "seeds": len(accs),
                     "compute_s": compute_seconds(name, records)})
    by = {r["network"]: r for r in rows}
    ours_ms = (by.get(OURS) or {}).get("latency_ms")
    settings = json.loads((records / "settings.json").read_text()) if (records / "settings.json").exists() else None
    wanted = settings.get("seeds") if settings else None

    def partial(*compared: dict[str, Any]) -> bool:  # a comparison before every seed of the settings is trained
        return wanted is not None and any(r["seeds"] < wanted for r in compared)

    for r in rows:  # the match within 3% as the final measurement sees it: round by round when timed side by side
        n = r["network"]
        r["latency_vs_ours"] = vs[n] if n in vs else r["latency_ms"] / ours_ms - 1 if r["latency_ms"] and ours_ms else None
    out: dict[str, Any] = {"settings": settings, "target": read_record("target", records), "rows": rows}
    if TARGET in lat:  # the target network timed beside the final ones: is each search's network within it?
        vt = latency.get("vs_target", {})
        out["target_side_by_side"] = {"ms": lat[TARGET], **{f"{s}+netadapt": vt.get(f"{s}+netadapt") for s in STRATEGIES}}
    ours, rnd = by.get(OURS), by.get("random+netadapt")
    refs = [by[f"{n}@width"] for n in REFERENCES if f"{n}@width" in by and by[f"{n}@width"]["seeds"]]
    if ours and ours["seeds"] and refs:
        best = max(refs, key=lambda r: r["accuracy"])
        d = difference(ours, best)
        gaps = [r["latency_vs_ours"] for r in refs]  # None until the latency stage has run
        out["vs_best_reference"] = {"reference": best["network"], **d, "met": d["points"] >= 1.0,
                                    "seeds": [ours["seeds"], best["seeds"]], "partial": partial(ours, best),
                                    "matched_within_3pct": None if None in gaps else all(abs(g) <= TOLERANCE for g in gaps)}
    if ours and rnd and ours["seeds"] and rnd["seeds"]:
        d = difference(ours, rnd)
        out["vs_random"] = {**d, "met": d["points"] >= 0.0, "seeds": [ours["seeds"], rnd["seeds"]],
                            "partial": partial(ours, rnd)}
    out["netadapt_target_met"] = {s: (read_record(f"netadapt_{s}", records) or {}).get("target_met") for s in STRATEGIES}
    if trim := read_record("netadapt_trim", records):
        out["netadapt_target_met"]["trim"] = trim.get("target_met")
    # NetAdapt against the width multiplier alone, on the network NetAdapt trimmed (width_comparison)
    c = width_comparison(records)
    out["netadapt_vs_width_on"] = c.trimmed if c else None
    trimmed, seed, wide = ((by.get(x) for x in (c.trimmed, seed_trained_as(records, c), f"{c.seed}@width")) if c
                           else (None, None, None))
    if trimmed and seed and wide and trimmed["seeds"] and seed["seeds"] and wide["seeds"] and lat:
        out["netadapt_vs_width"] = {
            **speedup_at_equal_accuracy([(seed["latency_ms"], seed["accuracy"]), (wide["latency_ms"], wide["accuracy"])],
                                        trimmed["latency_ms"], trimmed["accuracy"]),
            # the two networks matched to one latency, compared directly: NetAdapt's less the width multiplier's
            "vs_width": difference(trimmed, wide), "width_latency_vs_trimmed": wide["latency_ms"] / trimmed["latency_ms"] - 1,
            "seeds": [trimmed["seeds"], seed["seeds"], wide["seeds"]], "partial": partial(trimmed, seed, wide)}
    return out


def progress(records: Path, work: Path = WORK) -> list[str]:
    """One line per stage: what the records hold and what is left (a search in progress counts the
    trials its run folder under ``work`` has finished)."""
    from search.searcher import read_state

    def done(unit: str) -> str:
        return "done" if read_record(unit, records) else "to run"

    lines = [f"table: {done('table')}", f"target: {done('target')}"]
    trials = (read_record("search_controller", records) or {}).get("trials")
    for stage in ("search", "netadapt"):
        parts = []
        for strategy in STRATEGIES:
            state = done(f"{stage}_{strategy}")
            run = work / "runs" / f"e2e-{strategy}" / "searcher.json"
            if stage == "search" and state != "done" and run.exists():
                state = f"{len((read_state(run) or {}).get('records', []))} trials finished"
            parts.append(f"{strategy} {state}")
        lines.append(f"{stage}: " + ", ".join(parts) + (f" ({trials} trials each)" if stage == "search" and trials else ""))
    if trim_needed(records):
        lines[-1] += f", trim {done('netadapt_trim')} (the controller's network to {TRIM_RATIO}x its latency)"
    c = width_comparison(records)
    names = list(REFERENCES) + ([c.seed] if c else [])
    width = sum(1 for n in names if read_record(f"width_{n}", records))
    lines.append(f"width: {width} of {len(names)}{'' if c else ' or more'} matched")
    lines.append(f"latency: {done('latency')}")
    saved = records / "settings.json"
    seeds = json.loads(saved.read_text())["seeds"] if saved.exists() else Settings().seeds
    nets = final_networks(records)
    trained = sum(1 for n in nets for k in range(seeds) if read_record(f"final/{n}_s{k}", records))
    if final_set_complete(records):
        lines.append(f"final: {trained} of {len(nets) * seeds} trainings ({seeds} seeds per network)")
    else:
        lines.append(f"final: {trained} trainings so far; the networks are known once NetAdapt and width are done")
    under_way = final_under_way(records, work)
    if under_way:
        lines[-1] += "; under way: " + ", ".join(under_way)
    return lines


def final_under_way(records: Path, work: Path) -> list[str]:
    """The final trainings not on record whose state is kept in ``work``, each as ``NAME seed S at epoch
    E of N`` (where the next sitting goes on from)."""
    from train.loop import read_state

    out = []
    for kept in sorted((work / "final").glob("*_s*.pt")):
        name, _, seed = kept.stem.rpartition("_s")
        if read_record(f"final/{kept.stem}", records):
            continue
        try:
            state = read_state(kept)
        except ValueError:  # the stage itself sets such a state aside and starts over
            out.append(f"{name} seed {seed} (its kept state is unreadable: it starts over)")
            continue
        out.append(f"{name} seed {seed} at epoch {state['step'] // state['per_epoch']} of "
                   f"{round(state['total'] / state['per_epoch'])}")
    return out


def markdown(rep: dict[str, Any]) -> str:
    lines = ["| network | method | width | measured ms (vs ours) | params | MACs | test accuracy % (mean ± std) | seeds "
             "| compute (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        ms = f"{r['latency_ms']:.3f} ({r['latency_vs_ours']:+.1%})" if r["latency_vs_ours"] is not None else "-"
        acc = (f"{100 * r['accuracy']:.2f}" + (f" ± {100 * r['accuracy_std']:.2f}" if r["seeds"] > 1 else "")
               if r["seeds"] else "-")
        w = f"{r['width']:.3f}" if r["width"] else "-"
        lines.append(f"| {r['network']} | {r['method']} | {w} | {ms} | {r['params'] / 1e6:.2f}M | "
                     f"{r['macs'] / 1e6:.1f}M | {acc} | {r['seeds']} | {r['compute_s']:.0f} |")
    return "\n".join(lines)


def plot(rep: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rep["rows"]:
        if not r["seeds"] or not r["latency_ms"]:
            ax.plot([], [], " ", label=f"{r['network']} (not trained or measured yet)")
            continue
        ours = r["network"] == OURS
        err = 100 * r["accuracy_std"] if r["seeds"] > 1 else None
        ax.errorbar(r["latency_ms"], 100 * r["accuracy"], yerr=err, fmt="*" if ours else "o",
                    markersize=12 if ours else 7, capsize=3, label=r["network"])
    if t := rep.get("target_side_by_side"):
        name, width = TARGET_REFERENCE
        ax.axvline(t["ms"], color="grey", linestyle="--", linewidth=1, label=f"target: {name} x{width}")
    ax.set_xlabel(f"latency measured with onnxruntime, 1 thread, {RESOLUTION}x{RESOLUTION} (ms)")
    ax.set_ylabel("CIFAR-10 test accuracy (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- command line -------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Stages: " + ", ".join(STAGES) + ". Records: bench/records/end_to_end/.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the stages (finished units are kept and skipped)")
    run.add_argument("--data", default=DEFAULT_CIFAR, help="CIFAR-10 in ImageFolder layout (default: %(default)s)")
    run.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages (default: all, in order)")
    run.add_argument("--shard", default="0/1", metavar="K/N",
                     help="final stage: train only every N-th unit from the K-th (0-based), so that N processes "
                          "on disjoint shards use N cores (default: %(default)s, every unit)")
    run.add_argument("--accept-failed-table", action="store_true",
                     help="table stage: keep a table that missed its self-check (on a machine whose own "
                          "repeatability is worse than 10%%) instead of stopping; its record says so")
    run.add_argument("--records", type=Path, default=RECORDS, help=argparse.SUPPRESS)
    run.add_argument("--work", type=Path, default=WORK, help=argparse.SUPPRESS)
    d = Settings()
    for f in fields(Settings):
        run.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(d, f.name)), default=getattr(d, f.name),
                         help="(default: %(default)s)")
    ret = sub.add_parser("retarget", help="measure the target again in fresh processes before NetAdapt; replace "
                                          "it when the median differs by more than 3%%")
    ret.add_argument("--processes", type=int, default=3, help="fresh processes, one measurement each (default 3)")
    ret.add_argument("--tolerance", type=float, default=RETARGET_TOLERANCE, help=argparse.SUPPRESS)
    ret.add_argument("--records", type=Path, default=RECORDS, help=argparse.SUPPRESS)
    ret.add_argument("--work", type=Path, default=WORK, help=argparse.SUPPRESS)
    kp = sub.add_parser("keep", help="keep the working files a resume reads in <records>/state/ now (a run "
                                     "does so every 5 minutes and when it stops)")
    kp.add_argument("--records", type=Path, default=RECORDS, help=argparse.SUPPRESS)
    kp.add_argument("--work", type=Path, default=WORK, help=argparse.SUPPRESS)
    rep = sub.add_parser("report", help="the table, the targets and the plot from the records")
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--plot", type=Path, default=None, help="write the accuracy-latency plot here")
    rep.add_argument("--records", type=Path, default=RECORDS, help=argparse.SUPPRESS)
    rep.add_argument("--work", type=Path, default=WORK, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def state_dir(records: Path) -> Path:
    """Where the run's resumable working files are kept (``bench/workstate.py``)."""
    return records / "state"


def restore_work(records: Path, work: Path) -> None:
    back = workstate.restore(state_dir(records), work)
    if back:
        log(f"restored {len(back)} working files from {state_dir(records)} (a fresh checkout resumes where the "
            "last sitting kept)")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` as (K, N) with 0 <= K < N; one clear line otherwise."""
    from common.errors import UserError

    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        k, n = -1, 0
    if not 0 <= k < n:
        raise UserError(f"--shard {text!r} must be K/N with 0 <= K < N, e.g. 0/2 and 1/2 for two processes")
    return k, n


def main(argv: list[str] | None = None) -> int:
    import warnings

    from common.cli_io import warning_line
    from common.errors import UserError

    warnings.showwarning = warning_line  # a failed table's warning in the run's log: one line, as in cli.py
    args = parse_args(argv)
    try:
        if args.cmd == "retarget":
            if args.processes < 1:
                raise UserError(f"--processes {args.processes} must be at least 1")
            restore_work(args.records, args.work)  # the probe's reference, which the measurements compare against
            retarget(args.records, args.work, args.processes, args.tolerance)
            return 0
        if args.cmd == "keep":
            copied = workstate.keep(args.work, state_dir(args.records))
            print(f"kept {len(copied)} changed working files of {args.work} in {state_dir(args.records)}")
            return 0
        if args.cmd == "report":
            rep = summarize(args.records)
            rep["progress"] = progress(args.records, args.work)
            if args.plot:
                rep["plot"] = str(plot(rep, args.plot))
            if not args.json:
                print("\n".join(rep["progress"]) + "\n")
            print(json.dumps(rep, indent=1, default=str) if args.json else markdown(rep))
            if not args.json:
                for k in ("vs_best_reference", "vs_random", "netadapt_target_met", "target_side_by_side",
                          "netadapt_vs_width"):
                    if k in rep:
                        print(f"{k}: {rep[k]}")
            return 0
        settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
        settings.check()
        stages = [x.strip() for x in args.stages.split(",") if x.strip()]
        unknown = [x for x in stages if x not in STAGES]
        if unknown:
            raise UserError(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
        if not Path(args.data).is_dir():
            raise UserError(f"--data {args.data}: no such folder; extract ../shared/data/cifar10-jpg.tar.gz there")
        shard = parse_shard(args.shard)
        check_settings(settings, args.records)
        os.environ["HWNAS_RESULTS"] = str(args.work)  # before Ray starts, so that its workers inherit it
        restore_work(args.records, args.work)
        for line in progress(args.records, args.work):
            log(line)
        # One keeper: shards of the final stage (which keeps its work as records) leave it to shard 0.
        keeper = workstate.Keeper(args.work, state_dir(args.records)).start() if shard[0] == 0 else None
        try:
            for st in STAGES:
                if st in stages:
                    repo_first()
                    STAGE_FNS[st](Ctx(settings, args.records, args.data, args.work, shard, args.accept_failed_table))
        finally:
            if keeper is not None:
                keeper.stop()
        log("done: " + ", ".join(stages))
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
