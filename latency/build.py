"""Building a device's table on this machine: choose the units and calibration networks a space
needs, export them, time them with the runner, import the times and fit the predictor, under a lock
so that parallel builds of one device wait for each other.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import UserError
from latency import families, selfcheck
from latency.files import (
    LOCAL_DEVICE,
    check_compatible,
    device_dir,
    load_networks,
    local_environment,
    units_path,
)
from latency.load import fit_predictor
from latency.predictor import Predictor
from latency.sampling import RANGE_SEED
from latency.signature import Sig
from latency.transfer import export_folder, import_measurements, merge_builds
from latency.units import MEASURE_PASSES
from space.archspec import ArchSpec

if TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_MODE = "full"
AUTO_BUILD_MODE = "quick"
CALIBRATION_SEED = 7_000_000  # calibration networks come from their own seed stream


@dataclass(frozen=True)
class Plan:
    """What a build measures beside the space's grid units (:func:`latency.sampling.units_to_measure`):
    the units of ``range_per_family`` networks of every family, ``adaptive`` more units near those
    the per-op models predict worst, ``calibration_per_family`` whole networks of each of
    ``families`` for the calibration, and ``check_per_family`` fresh ones for the self-check.
    ``family_resolution`` draws the movable families (:func:`latency.families.movable`) at another
    input size (small test tables); ``own`` is the built space and resolution (:func:`for_space`),
    whose family is drawn at that resolution; ``passes``: fresh sessions of every model;
    ``wait_fast_s``: how long each round may wait for the machine's fast mode before it starts;
    ``near_ms`` (lo, hi): draw the calibration and self-check networks among those whose plain unit
    sum (:meth:`~latency.predictor.Predictor.unit_sum`, after the units are measured) lies in that
    range, the nearest to it where too few do, so that the calibration is fitted where the table is
    used (a search near its latency budget) rather than over the space's random samples."""

    range_per_family: int
    adaptive: int
    calibration_per_family: int
    check_per_family: int
    families: tuple[str, ...] = families.FAMILIES
    family_resolution: int | None = None
    passes: int = MEASURE_PASSES
    own: tuple[str, int] | None = None
    wait_fast_s: float = 0.0
    near_ms: tuple[float, float] | None = None


# full: every unit of the space plus about 1,300 more over the range users' networks take (target:
# under 20 minutes on the 2-core development machine). quick: what a first search builds on a
# fresh clone, which must leave the search most of its 15 minutes: fewer samples, two sessions.
# Both wait up to a minute for a slow spell to pass before each round: a round that starts in one
# can lie in it throughout, and gating (:func:`_run_with_bar`) then has no fast block to keep.
PLANS = {"full": Plan(40, 200, 30, 2, wait_fast_s=60.0), "quick": Plan(6, 40, 10, 1, passes=2, wait_fast_s=60.0)}


def held_out_references() -> set[str]:
    """The reference networks at width 1.0 and 224x224: never fitted on, so that each can be checked
    against its own measurement."""
    from space.references import REFERENCES

    return {families.key(families.scaled(n, 1.0, families.RESOLUTION)) for n in REFERENCES}


def for_space(plan: Plan, space: str, resolution: int) -> Plan:
    """``plan`` for a table of ``space`` at ``resolution``: the space's own samples at that resolution
    are one of its families, so that the calibration is fitted, and the self-check scored, on the
    networks the table will score. (A space other than the default families', such as
    ``mnasnet_cifar`` at 32x32, would otherwise be calibrated on networks it never scores.)"""
    from dataclasses import replace

    fams = plan.families if space in plan.families else (*plan.families, space)
    return replace(plan, families=fams, own=(space, resolution))


NEAR_CANDIDATES = 40  # with ``near_ms``, candidates drawn per network kept


def _draw(plan: Plan, per_family: int, seed: int, exclude: set[str],
          unit_sum: Predictor | None = None) -> list[tuple[str, ArchSpec]]:
    out, taken = [], set(exclude)
    near = plan.near_ms is not None and unit_sum is not None
    for f in plan.families:
        if plan.own is not None and f == plan.own[0]:
            res = plan.own[1] if plan.own[1] != families.RESOLUTION else None
        else:
            res = plan.family_resolution if families.movable(f) else None
        specs = families.draw(f, per_family * (NEAR_CANDIDATES if near else 1), seed, taken, res)
        if near:
            specs = families.nearest(specs, unit_sum.unit_sum_many(specs), plan.near_ms)[:per_family]
        for spec in specs:
            out.append((f, spec))
            taken.add(families.key(spec))
    return out


def calibration_specs(plan: Plan, exclude: set[str] = frozenset(), seed: int = CALIBRATION_SEED,
                      unit_sum: Predictor | None = None) -> list[tuple[str, ArchSpec]]:
    """The plan's calibration networks as (family, spec), none of the :func:`held_out_references`;
    with ``plan.near_ms``, chosen by ``unit_sum``'s plain sums."""
    return _draw(plan, plan.calibration_per_family, seed, set(exclude) | held_out_references(), unit_sum)


def check_specs(plan: Plan, seed: int, exclude: set[str], unit_sum: Predictor | None = None) -> list[tuple[str, ArchSpec]]:
    """Fresh self-check networks as (family, spec), none in ``exclude``; with ``plan.near_ms``, chosen
    as the calibration networks are."""
    return _draw(plan, plan.check_per_family, seed, exclude, unit_sum)


def _unit_sums(device: str) -> Predictor:
    """The per-op models of the device's table with no calibration: plain unit sums."""
    from latency.table import LatencyTable

    return Predictor.fit(LatencyTable.load(units_path(device)))


def build(device: str = LOCAL_DEVICE, space: str = "mnasnet", resolution: int = 224, mode: str = DEFAULT_MODE,
          threads: int = 1, provider: str = "cpu", n_networks: int | None = None,
          sample: dict[str, int | None] | None = None, progress: bool = True, plan: Plan | None = None) -> Predictor:
    """Measure what ``space`` at ``resolution`` needs on this machine and fit the predictor.

    Units already in the device's table are not measured again, so builds extend each other.
    Concurrent builds of one device (e.g. parallel trials) wait for each other. ``plan`` (default:
    the mode's) says what else is measured; ``n_networks`` overrides its calibration networks per
    family. ``sample`` overrides :func:`latency.sampling.units_to_measure`'s sample sizes
    (``per_stage``, ``conv_per_stage``, ``trimmed_per_stage``).
    """
    _check_build(device, space, mode, threads, provider)  # bad input creates nothing, not even the lock file
    with build_lock(device):
        return build_unlocked(device, space, resolution, mode, threads, provider, n_networks, sample, progress, plan)


def _check_build(device: str, space: str, mode: str, threads: int, provider: str) -> None:
    from latency.files import check_device_name
    from latency.table import LatencyTable
    from space.searchspace import get_space

    check_device_name(device)
    env = local_environment(device, threads, provider)
    if mode not in ("quick", "full"):
        raise UserError(f"unknown build mode {mode!r}; choose quick or full")
    get_space(space)
    if units_path(device).exists():
        # Import would refuse the new measurements only after minutes of measuring them.
        check_compatible(units_path(device), LatencyTable.load(units_path(device)).meta, env,
                         f"use another --device name or delete {device_dir(device)}")


def build_unlocked(device: str, space: str, resolution: int, mode: str, threads: int, provider: str,
                   n_networks: int | None, sample: dict[str, int | None] | None, progress: bool,
                   plan: Plan | None = None) -> Predictor:
    from dataclasses import replace

    from latency.sampling import range_units, units_to_measure
    from latency.suite import fresh_seed
    from latency.table import LatencyTable
    from space.searchspace import get_space

    _check_build(device, space, mode, threads, provider)
    plan = for_space(plan or PLANS[mode], space, resolution)
    if n_networks is not None:
        plan = replace(plan, calibration_per_family=n_networks)
    t0, loads = time.time(), [selfcheck.machine_load()]
    probes = [_probe(threads, provider)]
    _record_probe(probes[0], threads, provider)  # the rounds below gate their blocks against it
    waited = [_wait_for_fast(threads, provider, plan.wait_fast_s)]
    grid = units_to_measure(get_space(space), resolution, mode, **(sample or {}))
    units = _missing(device, grid + range_units(plan.range_per_family))
    nets_df, _ = load_networks(device)
    have_nets = {families.key(ArchSpec.from_json(s)) for s in nets_df["spec"]} if len(nets_df) else set()
    record = {"space": space, "resolution": resolution, "mode": mode}
    near = plan.near_ms is not None
    first = _Measured(np.zeros(0), [])
    if near:  # the units first: the calibration networks are chosen by their unit sums
        if progress:
            print(f"latency build ({device}, space {space}, resolution {resolution}, {mode}): {len(units)} units to "
                  f"measure, then {plan.calibration_per_family} calibration networks per family whose unit sum lies "
                  f"near {plan.near_ms[0]:g}-{plan.near_ms[1]:g} ms", file=sys.stderr)
        first = _measure(device, units, [], threads, provider, progress, record, plan.passes)
        units, record = [], None  # measured and recorded: the next round times networks only
    # No unit is measured between here and the self-check's draw, so one fit serves both.
    sums = _unit_sums(device) if near else None
    calib = [(f, s) for f, s in calibration_specs(plan, unit_sum=sums) if families.key(s) not in have_nets]
    if progress and not near:
        print(f"latency build ({device}, space {space}, resolution {resolution}, {mode}): {len(units)} units and "
              f"{len(calib)} calibration networks to measure, then up to {plan.adaptive} units where the per-op models "
              f"err most and {plan.check_per_family * len(plan.families)} self-check networks", file=sys.stderr)
    spreads = _measure(device, units, [(f, "calibration", s) for f, s in calib], threads, provider, progress, record,
                       plan.passes)
    loads.append(selfcheck.machine_load())
    probes.append(_probe(threads, provider))
    adaptive, cv = _adaptive_units(device, set(grid), plan.adaptive)
    seed = fresh_seed()
    used = have_nets | {families.key(s) for _, s in calib} | range_keys(plan)
    checks = check_specs(plan, seed, used, sums)
    waited.append(_wait_for_fast(threads, provider, plan.wait_fast_s))
    got = _measure(device, adaptive, [(f, "check", s) for f, s in checks], threads, provider, progress, None,
                   plan.passes)
    loads.append(selfcheck.machine_load())
    probes.append(_probe(threads, provider))
    used_before = LatencyTable.load(units_path(device)).meta.get("used_networks", [])
    drawn = [s for f in families.FAMILIES for s in families.draw(f, plan.range_per_family, RANGE_SEED)]
    _update_meta(device, {"adaptive": {"units": len(adaptive), "cv_error_before": cv},
                          "calibration_near_ms": list(plan.near_ms) if near else None,
                          "probe": {"levels_ms": [round(v, 5) for v in probes], "reference_ms": _record_probe(
                              min(probes), threads, provider), "waited_s": waited},
                          "used_networks": list(dict.fromkeys(used_before + [families.fingerprint(s) for s in drawn] +
                                                              [families.fingerprint(s) for _, s in checks]))})
    pred = fit_predictor(device, space, resolution)
    rec = record_self_check(device, pred, got.checks, seed, np.concatenate([first.units, spreads.units, got.units]), loads,
                            round(time.time() - t0, 1))
    if progress:
        print(selfcheck.summary(rec), file=sys.stderr)
        print(f"latency build done in {time.time() - t0:.0f} s", file=sys.stderr)
        if mode == "quick":
            print(f"this is the quick table (sampled units + per-op model); `python cli.py latency build --device "
                  f"{device} --space {space} --resolution {resolution}` extends it to the full one", file=sys.stderr)
    selfcheck.warn_if_needed({"self_check": rec}, device, busy_too=True)
    return pred


def _probe(threads: int, provider: str) -> float:
    """The probe's level now (:mod:`latency.probe`): a build times it at its start, between its rounds
    and at its end, and lowers the machine's reference with the fastest."""
    from latency import probe
    from latency.measure import resolve_clock
    from latency.runner import fast_mean

    return fast_mean(probe.time_probe(0.5, threads, provider, resolve_clock("auto", threads, provider)))


def _wait_for_fast(threads: int, provider: str, max_s: float) -> float:
    """Seconds spent (at most about ``max_s``) waiting until most of the probe's blocks over 0.3 s
    run within :data:`latency.runner.PROBE_TOLERANCE` of the machine's reference (one fast block in
    a slow spell is common); 0 without a reference."""
    from latency import probe
    from latency.measure import resolve_clock
    from latency.runner import PROBE_TOLERANCE

    clock = resolve_clock("auto", threads, provider)
    ref = probe.reference_ms(threads, provider, clock)
    t0 = time.monotonic()
    while ref is not None and time.monotonic() - t0 < max_s:
        if np.median(probe.time_probe(0.3, threads, provider, clock)) <= ref * (1 + PROBE_TOLERANCE):
            break
    return round(time.monotonic() - t0, 1)


def _record_probe(level: float, threads: int, provider: str) -> float:
    from latency import probe
    from latency.measure import resolve_clock

    return probe.record(level, threads, provider, resolve_clock("auto", threads, provider))


@dataclass
class _Measured:
    units: np.ndarray  # session spreads of the units measured
    checks: list[dict[str, Any]]


def _missing(device: str, wanted: list[Sig]) -> list[Sig]:
    from latency.table import LatencyTable

    have = set(LatencyTable.load(units_path(device)).lookup()) if units_path(device).exists() else set()
    return [s for s in dict.fromkeys(wanted) if s not in have]


def _measure(device: str, units: list[Sig], networks: list[tuple[str, str, ArchSpec]], threads: int, provider: str,
             progress: bool, build_record: dict[str, Any] | None, passes: int = MEASURE_PASSES) -> _Measured:
    """Export, time and import one round of a build; units and networks share its passes."""
    from latency.runner import read_manifest, run_folder
    from latency.transfer import read_measurements

    if not units and not networks:
        if build_record:
            _record_build(device, build_record)
        return _Measured(np.zeros(0), [])
    with tempfile.TemporaryDirectory(prefix="hwnas-latency-") as tmp:
        export_folder(tmp, units, networks, progress=progress, builds=[build_record] if build_record else [],
                      passes=passes)
        csv_path = _run_with_bar(run_folder, tmp, threads, provider, progress)
        got = import_measurements(csv_path, device, tmp)
        kinds = {it["file"]: it["kind"] for it in read_manifest(Path(tmp))["items"]}
        rows = read_measurements(csv_path)[1]
    spreads = np.array([r["session_spread"] for r in rows if kinds[r["file"]] == "unit"])
    return _Measured(spreads, got["checks"])


def _adaptive_units(device: str, grid: set[Sig], n: int) -> tuple[list[Sig], dict[str, float]]:
    """Up to ``n`` new units near the off-grid units the per-op models predict worst in 5-fold
    cross-validation, and that error (mean |log(predicted / measured)| per op) before they are added."""
    from latency.opmodel import cv_errors
    from latency.sampling import adaptive_units
    from latency.table import LatencyTable

    if n <= 0:
        return [], {}
    lookup = LatencyTable.load(units_path(device)).lookup()
    sigs = list(lookup)
    err = cv_errors(sigs, np.array([lookup[s] for s in sigs]))
    off = {s: float(e) for s, e in zip(sigs, err) if s not in grid}
    by_op = {op: round(float(np.mean([e for s, e in off.items() if s.op == op])), 4)
             for op in dict.fromkeys(s.op for s in off)}
    return adaptive_units(off, n, set(lookup)), by_op


def range_keys(plan: Plan) -> set[str]:
    """Keys of the networks whose units the plan's range sample holds."""
    return {families.key(s) for f in families.FAMILIES for s in families.draw(f, plan.range_per_family, RANGE_SEED)}


def record_self_check(device: str, pred: Predictor, checks: list[dict[str, Any]], seed: int,
                      spreads: np.ndarray | None = None, loads: list[float] | None = None,
                      seconds: float | None = None) -> dict[str, Any]:
    """Score the self-check networks with ``pred`` and file the result in the table's metadata."""
    rec = selfcheck.evaluate(pred, checks, seed, np.zeros(0) if spreads is None else spreads, loads or [])
    if seconds is not None:
        rec["seconds"] = seconds
    _update_meta(device, {"self_check": rec})
    pred.meta["self_check"] = rec
    return rec


def _update_meta(device: str, fields: dict[str, Any]) -> None:
    from latency.table import LatencyTable

    table = LatencyTable.load(units_path(device))
    table.meta = {**table.meta, **fields}
    table.save(units_path(device))


def _record_build(device: str, b: dict[str, Any]) -> None:
    from latency.table import LatencyTable

    table = LatencyTable.load(units_path(device))
    if b not in table.meta.get("builds", []):
        table.meta["builds"] = merge_builds(table.meta.get("builds", []), [b])
        table.save(units_path(device))


def _run_with_bar(run_folder, folder: str, threads: int, provider: str, progress: bool) -> Path:
    """Run the runner with a tqdm bar over the manifest's items (the runner itself prints plain lines),
    its blocks gated by the machine's probe (:mod:`latency.probe`): a table describes the machine's
    fast mode, as :func:`latency.measure.measure` does, even when a slow spell covers a whole round."""
    from latency import probe
    from latency.measure import resolve_clock

    gated = {"probe": probe.probe_model(),
             "reference": probe.reference_ms(threads, provider, resolve_clock("auto", threads, provider))}
    if not progress:
        return run_folder(folder, threads=threads, provider=provider, progress=False, **gated)
    from tqdm import tqdm

    from latency import runner

    manifest = runner.read_manifest(Path(folder))
    bar = tqdm(total=len(manifest["items"]) * int(manifest.get("passes", 1)), desc="measuring", unit="model",
               file=sys.stderr)
    try:
        return run_folder(folder, threads=threads, provider=provider, progress=False, on_session=bar.update, **gated)
    finally:
        bar.close()


@contextlib.contextmanager
def build_lock(device: str) -> Iterator[None]:
    import fcntl

    d = device_dir(device)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
