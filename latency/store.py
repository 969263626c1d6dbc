"""Where a device's latency data lives and how it is built, extended, imported and loaded.

Under ``results/latency/<device>/``:

``units.csv`` + ``units.json``
    the latency table (every measured stem, body layer and head) and its metadata;
``networks.csv`` + ``networks.json``
    whole networks measured end to end (the calibration set), one ArchSpec JSON per row;
``predictor-<space>-r<resolution>.json``
    the fitted predictor, refitted automatically when the table or the networks change.

A build goes through the same export -> runner -> import path as a remote device: the units
and networks are exported to ONNX files with a manifest, :mod:`latency.runner` times them, and
the measurements are merged into the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from latency.predictor import Predictor
from latency.signature import KEY_COLUMNS, Sig
from latency.units import MEASURE_PASSES, NET_ROUNDS, NET_RUNS, NET_WARMUP, UNIT_ROUNDS, UNIT_RUNS, UNIT_WARMUP
from space.archspec import ArchSpec
from space.atomic import atomic_write_text
from space.errors import UserError

LOCAL_DEVICE = "local-cpu"
# Every unit of the space: 7-8 minutes for ``mnasnet`` at 224 on 2 cores, and no per-op model error
# on the networks a search scores. A search that finds no table builds the quick one (about 4.5
# minutes), so that a first run on a fresh clone stays within its 15 minutes; `latency build`
# later extends it to the full table.
DEFAULT_MODE = "full"
AUTO_BUILD_MODE = "quick"
QUICK_NETWORKS, FULL_NETWORKS = 60, 100  # 60 >= 50: the calibration fits per-op scales
CALIBRATION_SEED = 7_000_000  # calibration networks come from their own seed stream


def device_dir(device: str) -> Path:
    from latency.table import device_dir as _dd

    return _dd(device)


def units_path(device: str) -> Path:
    return device_dir(device) / "units.csv"


def networks_path(device: str) -> Path:
    return device_dir(device) / "networks.csv"


def predictor_path(device: str, space: str, resolution: int) -> Path:
    return device_dir(device) / f"predictor-{space}-r{resolution}.json"


def how_to_build(device: str) -> str:
    return f"build one with `python cli.py latency build --device {device}`"


# ---- networks (calibration set) ------------------------------------------------------------

NET_COLUMNS = ("space", "resolution", "spec", "median_ms", "p10_ms", "p90_ms", "spread", "runs")


def load_networks(device: str):
    """The device's whole-network measurements as a (DataFrame, meta) pair; empty when none."""
    import io

    import pandas as pd

    p = networks_path(device)
    if not p.exists():
        return pd.DataFrame({c: [] for c in NET_COLUMNS}), {}
    text = p.read_text()
    meta = _read_meta(p)
    if meta.get("sha256") != hashlib.sha256(text.encode()).hexdigest():
        raise UserError(f"{p}: network measurements are corrupted or truncated (checksum mismatch); delete {p.parent} and rebuild it")
    try:
        df = pd.read_csv(io.StringIO(text))
        df = df[list(NET_COLUMNS)]
    except (ValueError, KeyError, pd.errors.ParserError) as e:
        raise UserError(f"{p}: network measurements are malformed ({e}); delete {p.parent} and rebuild it") from None
    return df, meta


def save_networks(device: str, df, meta: dict[str, Any]) -> None:
    p = networks_path(device)
    text = df[list(NET_COLUMNS)].to_csv(index=False, float_format="%.6g")
    meta = {**meta, "rows": len(df), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    atomic_write_text(p, text)
    atomic_write_text(p.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")


def _read_meta(p: Path) -> dict[str, Any]:
    mp = p.with_suffix(".json")
    try:
        meta = json.loads(mp.read_text())
    except FileNotFoundError:
        raise UserError(f"{mp}: metadata missing; delete {mp.parent} and rebuild it") from None
    except json.JSONDecodeError:
        raise UserError(f"{mp}: metadata is not valid JSON; delete {mp.parent} and rebuild it") from None
    if not isinstance(meta, dict):
        raise UserError(f"{mp}: metadata is not a JSON object; delete {mp.parent} and rebuild it")
    return meta


# ---- export / import -----------------------------------------------------------------------

def export_folder(out: str | Path, units: list[Sig], networks: list[tuple[str, int, ArchSpec]],
                  progress: bool = True, unit_warmup: int = UNIT_WARMUP, unit_runs: int = UNIT_RUNS,
                  net_warmup: int = NET_WARMUP, net_runs: int = NET_RUNS, builds: list[dict] | None = None,
                  passes: int = MEASURE_PASSES) -> Path:
    """Write ONNX files for ``units`` and whole ``networks`` (space, resolution, spec), the
    manifest (``passes``: how often the runner goes over the list) and a copy of the standalone
    runner into ``out``."""
    import shutil

    from latency.onnx_units import network_onnx_bytes, unit_onnx_bytes
    from space.atomic import atomic_write_bytes

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; pass a folder path")
    out.mkdir(parents=True, exist_ok=True)
    items: list[dict[str, Any]] = []
    todo = _interleave([("unit", s) for s in units], [("network", n) for n in networks])
    it = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(todo, desc="exporting", unit="model", file=sys.stderr)
    for i, (kind, obj) in enumerate(it):
        if kind == "unit":
            name = f"units/u{i:05d}.onnx"
            atomic_write_bytes(out / name, unit_onnx_bytes(obj, seed=i))
            items.append({"kind": "unit", "file": name, "sig": list(obj)})
        else:
            space, res, spec = obj
            name = f"networks/n{i:05d}.onnx"
            atomic_write_bytes(out / name, network_onnx_bytes(spec, seed=i))
            items.append({"kind": "network", "file": name, "space": space, "resolution": res,
                          "spec": spec.to_dict()})
    manifest = {"format": 1, "id": hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16],
                "key_columns": list(KEY_COLUMNS), "unit_warmup": unit_warmup, "unit_runs": unit_runs,
                "network_warmup": net_warmup, "network_runs": net_runs,
                "unit_rounds": UNIT_ROUNDS, "network_rounds": NET_ROUNDS, "passes": passes, "builds": builds or [],
                "items": items}
    atomic_write_text(out / "manifest.json", json.dumps(manifest) + "\n")
    shutil.copyfile(Path(__file__).with_name("runner.py"), out / "runner.py")
    return out


def _interleave(units: list, networks: list) -> list:
    """Networks spread evenly between the units, so that both are measured under the same mix of
    machine load and the calibration learns what a unit sum misses, not a drift of the load."""
    if not units or not networks:
        return units + networks
    out, j = [], 0
    for i, u in enumerate(units):
        while j < len(networks) and (j + 0.5) * len(units) / len(networks) <= i:
            out.append(networks[j])
            j += 1
        out.append(u)
    return out + networks[j:]


def read_measurements(csv_path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The runner's CSV: (environment header, rows)."""
    import csv

    p = Path(csv_path)
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{p}: no such measurements file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read the measurements file ({type(e).__name__}); pass the CSV runner.py wrote") from None
    if not lines or not lines[0].startswith("# hwnas-latency-runner "):
        raise UserError(f"{p}: not a measurements CSV written by latency/runner.py (missing its header line)")
    try:
        env = json.loads(lines[0][len("# hwnas-latency-runner "):])
        rows = list(csv.DictReader(lines[1:]))
        for r in rows:
            for c in ("median_ms", "p10_ms", "p90_ms", "spread"):
                r[c] = float(r[c])
            r["runs"] = int(r["runs"])
    except (json.JSONDecodeError, KeyError, ValueError, TypeError) as e:
        raise UserError(f"{p}: measurements CSV is malformed ({e})") from None
    if not isinstance(env, dict):
        raise UserError(f"{p}: measurements CSV is malformed (its header is not a JSON object); measure again")
    for r in rows:
        # NaN, inf, zero or negative times would poison the table and every fit made from it.
        bad = [c for c in ("median_ms", "p10_ms", "p90_ms") if not (math.isfinite(r[c]) and r[c] > 0)]
        if bad or not math.isfinite(r["spread"]) or r["runs"] < 1:
            what = f"{bad[0]}={r[bad[0]]}" if bad else f"spread={r['spread']}, runs={r['runs']}"
            raise UserError(f"{p}: row for {r.get('file')!r} has an impossible measurement ({what}); measure again")
    return env, rows


def import_measurements(csv_path: str | Path, device: str, manifest_dir: str | Path | None = None,
                        builds: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Merge a runner CSV (and the manifest beside it) into ``device``'s table and networks."""
    import pandas as pd

    from latency.runner import RunnerError, read_manifest
    from latency.table import check_device_name

    check_device_name(device)
    p = Path(csv_path)
    env, rows = read_measurements(p)
    mdir = Path(manifest_dir) if manifest_dir else p.parent
    if mdir.exists() and not mdir.is_dir():
        raise UserError(f"--manifest {mdir}: is a file; pass the folder written by `cli.py latency export`")
    try:
        manifest = read_manifest(mdir)
    except RunnerError as e:
        raise UserError(str(e)) from None
    _check_items(manifest["items"], mdir / "manifest.json")
    if env.get("manifest_id") and env["manifest_id"] != manifest.get("id"):
        raise UserError(f"{p}: measured from another export (manifest id {env['manifest_id']}, {mdir} has "
                        f"{manifest.get('id')}); pass --manifest with the folder it was measured from")
    by_file = {it["file"]: it for it in manifest["items"]}
    meta = {"device": device, **{k: env.get(k) for k in ("cpu", "machine", "system", "cores", "ort_version", "threads",
                                                        "provider", "clock", "opt_level", "date")}}
    table = _load_or_new_table(device, meta)
    nets, nmeta = load_networks(device)
    unit_rows, net_rows = [], []
    for r in rows:
        item = by_file.get(r["file"])
        if item is None:
            raise UserError(f"{p}: row for {r['file']!r} is not in the manifest of {mdir}")
        stats = {c: r[c] for c in ("median_ms", "p10_ms", "p90_ms", "spread", "runs")}
        if item["kind"] == "unit":
            sig = item["sig"]
            unit_rows.append({**dict(zip(KEY_COLUMNS, sig)), **stats})
        else:
            spec = ArchSpec.from_dict(item["spec"])
            net_rows.append({"space": item["space"], "resolution": item["resolution"],
                             "spec": spec.to_json(indent=None), **stats})
    if unit_rows:
        try:
            table.add(unit_rows)
        except (ValueError, TypeError) as e:
            raise UserError(f"{mdir / 'manifest.json'}: unit signatures are malformed ({str(e).splitlines()[0][:100]}); "
                            "export the folder again with `cli.py latency export`") from None
    builds = manifest.get("builds", []) if builds is None else builds
    table.meta = {**table.meta, **meta, "builds": _merge_builds(table.meta.get("builds", []), builds)}
    table.save(units_path(device))
    if net_rows:
        nets = pd.concat([nets, pd.DataFrame(net_rows)], ignore_index=True) if len(nets) else pd.DataFrame(net_rows)
        # A network measured more than once (several passes) keeps its quietest measurement.
        nets = nets.sort_values("median_ms", kind="stable").drop_duplicates("spec", keep="first")
        nets = nets.sort_index().reset_index(drop=True)
        save_networks(device, nets, {**nmeta, **meta})
    return {"units": len(unit_rows), "networks": len(net_rows), "table_rows": len(table)}


def _check_items(items: list[Any], where: Path) -> None:
    """Every manifest item names its file and what it is (a unit signature or a network's spec)."""
    for i, it in enumerate(items):
        ok = isinstance(it, dict) and isinstance(it.get("file"), str)
        if ok and it.get("kind") == "unit":
            ok = isinstance(it.get("sig"), list) and len(it["sig"]) == len(KEY_COLUMNS)
        elif ok:
            ok = it.get("kind") == "network" and isinstance(it.get("spec"), dict) and "space" in it and "resolution" in it
        if not ok:
            raise UserError(f"{where}: item {i} is malformed ({json.dumps(it)[:80]}); export the folder again "
                            "with `cli.py latency export`")


def _merge_builds(old: list[dict], new: list[dict]) -> list[dict]:
    out = [b for b in old if b not in new]
    return out + new


def _load_or_new_table(device: str, meta: dict[str, Any]):
    from latency.table import LatencyTable

    p = units_path(device)
    if not p.exists():
        return LatencyTable(meta=dict(meta))
    table = LatencyTable.load(p)
    check_compatible(p, table.meta, meta, f"use another --device name or delete {device_dir(device)}")
    return table


# What a measurement depends on: a table only takes (or is compared with) measurements that agree on all.
ENVIRONMENT_KEYS = ("device", "ort_version", "threads", "provider", "clock", "cpu")


def check_compatible(p: Path, table_meta: dict[str, Any], new: dict[str, Any], todo: str) -> None:
    """Refuse to mix the table at ``p`` with measurements made in another environment ``new``."""
    for key in ENVIRONMENT_KEYS:
        if table_meta.get(key) != new.get(key):
            raise UserError(f"{p}: existing table was measured with {key}={table_meta.get(key)!r}, new data has "
                            f"{new.get(key)!r}; {todo}")


def local_environment(device: str, threads: int = 1, provider: str = "cpu") -> dict[str, Any]:
    """The environment measurements made here would record (see :func:`latency.runner.environment`)."""
    from latency.measure import resolve_clock, resolve_provider
    from latency.runner import environment

    resolve_provider(provider)  # an unavailable provider is a UserError, not the runner's error
    return {"device": device, **environment(threads, provider, resolve_clock("auto", threads, provider))}


# ---- build (export + run + import on this machine) -----------------------------------------------

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
    with _build_lock(device):
        return _build(device, space, resolution, mode, threads, provider, n_networks, sample, progress,
                      unit_runs, net_runs)


def _check_build(device: str, space: str, mode: str, threads: int, provider: str) -> None:
    from latency.table import LatencyTable, check_device_name
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


def _build(device: str, space: str, resolution: int, mode: str, threads: int, provider: str, n_networks: int | None,
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
        table.meta["builds"] = _merge_builds(table.meta.get("builds", []), [b])
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


# ---- fitting and loading ---------------------------------------------------------------------

def fit_predictor(device: str, space: str, resolution: int, save: bool = True,
                  exclude: set[str] | None = None) -> Predictor:
    """Fit the per-op models on the device's table and the calibration on its networks at
    ``resolution`` (all networks when none were measured at that resolution); save it."""
    from latency.table import LatencyTable

    table = LatencyTable.load(units_path(device))
    nets, nmeta = load_networks(device)
    pairs = _calibration_pairs(nets, resolution, exclude or set())
    meta = {**table.meta, "device_dir": str(device_dir(device)), "space": space, "resolution": resolution,
            "calibration_networks": len(pairs),
            "table_sha256": table.meta.get("sha256"), "networks_sha256": nmeta.get("sha256")}
    pred = Predictor.fit(table, pairs, meta)
    if save:
        pred.save(predictor_path(device, space, resolution))
    return pred


def _calibration_pairs(nets, resolution: int, exclude: set[str]) -> list[tuple[ArchSpec, float]]:
    if not len(nets):
        return []
    sel = nets[nets["resolution"] == resolution]
    if not len(sel):
        sel = nets
    return [(ArchSpec.from_json(s), float(m)) for s, m in zip(sel["spec"], sel["median_ms"]) if s not in exclude]


@contextlib.contextmanager
def _build_lock(device: str):
    import fcntl

    d = device_dir(device)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _verify(p: Path, meta: dict[str, Any]) -> None:
    """Refuse a file whose checksum differs from its metadata's (truncated, edited, half-written)."""
    if hashlib.sha256(p.read_bytes()).hexdigest() != meta.get("sha256"):
        raise UserError(f"{p}: corrupted or truncated (checksum mismatch); delete {p.parent} and rebuild it "
                        "with `python cli.py latency build`")


def _covers(meta: dict[str, Any], space: str, resolution: int) -> bool:
    return any(b.get("space") == space and b.get("resolution") == resolution for b in meta.get("builds", []))


def check_table(device: str = LOCAL_DEVICE, space: str = "mnasnet", resolution: int = 224,
                build_if_missing: bool = False, strict_version: bool | None = None) -> dict[str, Any] | None:
    """What :func:`load_predictor` would refuse, found without fitting or building anything, so that a
    command can check its input before any work: the device name, a missing, corrupted or foreign
    table, and for ``local-cpu`` one that this machine cannot extend (another onnxruntime, CPU, ...).
    ``strict_version`` refuses a table of another onnxruntime (default: for ``local-cpu`` only).
    Returns the table's metadata (None when the table will be built on first use)."""
    from latency.table import check_device_name, check_meta

    check_device_name(device)
    upath, local = units_path(device), device == LOCAL_DEVICE
    if not upath.exists():
        if build_if_missing and local:
            return None  # built on first use
        raise UserError(f"no latency table for device {device!r} in {device_dir(device)}; {how_to_build(device)}")
    tmeta = _read_meta(upath)
    _verify(upath, tmeta)
    check_meta(tmeta, device, str(upath), strict_version=local if strict_version is None else strict_version)
    if build_if_missing and local and not _covers(tmeta, space, resolution):
        check_compatible(upath, tmeta, local_environment(device), f"delete {device_dir(device)} to rebuild it here")
    if networks_path(device).exists():
        _verify(networks_path(device), _read_meta(networks_path(device)))
    return tmeta


def load_predictor(device: str = LOCAL_DEVICE, space: str = "mnasnet", resolution: int = 224,
                   build_if_missing: bool = False, progress: bool = True) -> Predictor:
    """The predictor for ``device``: loaded when saved and current, refitted when the data changed,
    built (:data:`AUTO_BUILD_MODE`, on this machine) when ``build_if_missing`` and ``device`` is ``local-cpu``;
    otherwise a missing table is a :class:`UserError` saying how to build one."""
    from latency.table import check_device_name, check_meta

    check_device_name(device)
    upath = units_path(device)
    if build_if_missing and device == LOCAL_DEVICE and \
            (not upath.exists() or not _covers(_read_meta(upath), space, resolution)):
        with _build_lock(device):  # parallel workers: one builds, the others wait and load
            if not upath.exists() or not _covers(_read_meta(upath), space, resolution):
                return _build(device, space, resolution, AUTO_BUILD_MODE, 1, "cpu", None, None, progress,
                              UNIT_RUNS, NET_RUNS)
    if not upath.exists():
        raise UserError(f"no latency table for device {device!r} in {device_dir(device)}; {how_to_build(device)}")
    tmeta = _read_meta(upath)
    _verify(upath, tmeta)
    # local-cpu is this machine: its table must be of this onnxruntime (another device's has its own).
    check_meta(tmeta, device, str(upath), strict_version=device == LOCAL_DEVICE)
    if not _covers(tmeta, space, resolution):
        warnings.warn(f"the {device} table has no build for space {space!r} at resolution {resolution}; "
                      f"predictions extrapolate (run `python cli.py latency build --device {device} --space {space} "
                      f"--resolution {resolution}`)", stacklevel=2)
    nmeta = _read_meta(networks_path(device)) if networks_path(device).exists() else {}
    if nmeta:
        _verify(networks_path(device), nmeta)
    ppath = predictor_path(device, space, resolution)
    if ppath.exists():
        try:
            pred = Predictor.load(ppath)
        except UserError:
            pred = None
        if pred is not None and pred.meta.get("table_sha256") == tmeta.get("sha256") \
                and pred.meta.get("networks_sha256") == nmeta.get("sha256"):
            return pred
    return fit_predictor(device, space, resolution)
