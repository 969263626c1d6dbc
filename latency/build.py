"""Building a device's table on this machine: choose the units and calibration networks a space
needs, export them, time them with the runner, import the times and fit the predictor, under a lock
so that parallel builds of one device wait for each other.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
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
from latency.signature import Sig
from latency.transfer import export_folder, import_measurements, merge_builds
from latency.units import NET_RUNS, UNIT_RUNS
from space.archspec import ArchSpec

# Every unit of the space: 7-8 minutes for ``mnasnet`` at 224 on 2 cores, and no per-op model error
# on the networks a search scores. A search that finds no table builds the quick one (about 4.5
# minutes), so that a first run on a fresh clone stays within its 15 minutes; `latency build`
# later extends it to the full table.
DEFAULT_MODE = "full"
AUTO_BUILD_MODE = "quick"
QUICK_NETWORKS, FULL_NETWORKS = 60, 100  # 60 >= 50: the calibration fits per-op scales
CALIBRATION_SEED = 7_000_000  # calibration networks come from their own seed stream


def calibration_specs(space_name: str, resolution: int, n: int, seed: int = CALIBRATION_SEED) -> list[ArchSpec]:
    from space.searchspace import get_space

    space = get_space(space_name)
    rng = np.random.default_rng(seed + resolution)
    seen: dict[str, ArchSpec] = {}
    while len(seen) < n:
        spec = space.decode(space.sample(rng), resolution=resolution)
        seen.setdefault(spec.name, spec)
    return list(seen.values())


def build(device: str = LOCAL_DEVICE, space: str = "mnasnet", resolution: int = 224, mode: str = DEFAULT_MODE,
          threads: int = 1, provider: str = "cpu", n_networks: int | None = None,
          sample: dict[str, int | None] | None = None, progress: bool = True, unit_runs: int = UNIT_RUNS,
          net_runs: int = NET_RUNS) -> Predictor:
    """Measure what ``space`` at ``resolution`` needs on this machine and fit the predictor.

    Units already in the device's table are not measured again, so builds extend each other.
    Concurrent builds of one device (e.g. parallel trials) wait for each other. ``sample``
    overrides :func:`latency.sampling.units_to_measure`'s sample sizes (``per_stage``,
    ``conv_per_stage``, ``trimmed_per_stage``).
    """
    _check_build(device, space, mode, threads, provider)  # bad input creates nothing, not even the lock file
    with build_lock(device):
        return build_unlocked(device, space, resolution, mode, threads, provider, n_networks, sample, progress,
                      unit_runs, net_runs)


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


def build_unlocked(device: str, space: str, resolution: int, mode: str, threads: int, provider: str, n_networks: int | None,
           sample: dict[str, int | None] | None, progress: bool, unit_runs: int, net_runs: int) -> Predictor:
    from latency.runner import run_folder
    from latency.sampling import units_to_measure
    from latency.table import LatencyTable
    from space.searchspace import get_space

    _check_build(device, space, mode, threads, provider)
    sp = get_space(space)
    t0 = time.time()
    wanted = units_to_measure(sp, resolution, mode, **(sample or {}))
    have: set[Sig] = set()
    if units_path(device).exists():
        have = set(LatencyTable.load(units_path(device)).lookup())
    units = [s for s in wanted if s not in have]
    n_net = n_networks if n_networks is not None else (QUICK_NETWORKS if mode == "quick" else FULL_NETWORKS)
    nets_df, _ = load_networks(device)
    done = set(nets_df["spec"]) if len(nets_df) else set()
    specs = [s for s in calibration_specs(space, resolution, n_net) if s.to_json(indent=None) not in done]
    if progress:
        print(f"latency build ({device}, space {space}, resolution {resolution}, {mode}): "
              f"{len(units)} units and {len(specs)} networks to measure", file=sys.stderr)
    if units or specs:
        with tempfile.TemporaryDirectory(prefix="hwnas-latency-") as tmp:
            # Units and calibration networks go through the same passes (quietest kept), so the table and
            # the networks it is calibrated on see the same machine.
            export_folder(tmp, units, [(space, resolution, s) for s in specs], progress=progress,
                          unit_runs=unit_runs, net_runs=net_runs,
                          builds=[{"space": space, "resolution": resolution, "mode": mode}])
            csv_path = _run_with_bar(run_folder, tmp, threads, provider, progress)
            import_measurements(csv_path, device, tmp)
    else:
        _record_build(device, {"space": space, "resolution": resolution, "mode": mode})
    pred = fit_predictor(device, space, resolution)
    if progress:
        print(f"latency build done in {time.time() - t0:.0f} s", file=sys.stderr)
        if mode == "quick":
            print(f"this is the quick table (sampled units + per-op model); `python cli.py latency build --device "
                  f"{device} --space {space} --resolution {resolution}` extends it to the full one", file=sys.stderr)
    return pred


def _record_build(device: str, b: dict[str, Any]) -> None:
    from latency.table import LatencyTable

    table = LatencyTable.load(units_path(device))
    if b not in table.meta.get("builds", []):
        table.meta["builds"] = merge_builds(table.meta.get("builds", []), [b])
        table.save(units_path(device))


def _run_with_bar(run_folder, folder: str, threads: int, provider: str, progress: bool) -> Path:
    """Run the runner with a tqdm bar over the manifest's items (the runner itself prints plain lines)."""
    if not progress:
        return run_folder(folder, threads=threads, provider=provider, progress=False)
    from tqdm import tqdm

    from latency import runner

    manifest = runner.read_manifest(Path(folder))
    bar = tqdm(total=len(manifest["items"]) * int(manifest.get("passes", 1)), desc="measuring", unit="model",
               file=sys.stderr)
    orig = runner.make_session

    def counting(*a, **k):
        bar.update(1)
        return orig(*a, **k)

    runner.make_session = counting
    try:
        return run_folder(folder, threads=threads, provider=provider, progress=False)
    finally:
        runner.make_session = orig
        bar.close()


@contextlib.contextmanager
def build_lock(device: str):
    import fcntl

    d = device_dir(device)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
