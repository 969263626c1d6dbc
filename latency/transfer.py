"""Moving measurements between machines: ONNX files of units and networks with a manifest and the
standalone runner (``latency export``), and the runner's CSV merged back into a device's table and
networks (``latency import``). A local build takes the same path on this machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_bytes, atomic_write_text
from common.errors import UserError
from latency.files import (
    check_compatible,
    check_device_name,
    device_dir,
    load_networks,
    save_networks,
    units_path,
)
from latency.signature import KEY_COLUMNS, Sig
from latency.table import STAT_COLUMNS
from latency.units import MEASURE_PASSES, NET_BLOCKS, NET_RUNS, NET_WARMUP, UNIT_BLOCKS, UNIT_RUNS, UNIT_WARMUP
from space.archspec import ArchSpec


def export_folder(out: str | Path, units: list[Sig], networks: list[tuple[str, str, ArchSpec]],
                  progress: bool = True, unit_warmup: int = UNIT_WARMUP, unit_runs: int = UNIT_RUNS,
                  net_warmup: int = NET_WARMUP, net_runs: int = NET_RUNS, builds: list[dict] | None = None,
                  passes: int = MEASURE_PASSES, check_seed: int | None = None) -> Path:
    """Write ONNX files for ``units`` and whole ``networks`` (family, role, spec; the role is
    ``calibration`` or ``check``: a self-check network, scored but never fitted on), the manifest
    (``passes``: how often the runner goes over the list) and a copy of the standalone runner into
    ``out``."""
    import shutil

    from latency.onnx_units import network_onnx_bytes, unit_onnx_bytes

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; pass a folder path")
    check_room(export_bytes(units, [spec for _, _, spec in networks]), free_bytes(out), out)
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
            family, role, spec = obj
            name = f"networks/n{i:05d}.onnx"
            atomic_write_bytes(out / name, network_onnx_bytes(spec, seed=i))
            items.append({"kind": "network", "file": name, "family": family, "role": role, "spec": spec.to_dict()})
    manifest = {"format": 1, "id": hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16],
                "key_columns": list(KEY_COLUMNS), "unit_warmup": unit_warmup, "unit_runs": unit_runs,
                "network_warmup": net_warmup, "network_runs": net_runs,
                "unit_blocks": UNIT_BLOCKS, "network_blocks": NET_BLOCKS, "passes": passes, "builds": builds or [],
                "check_seed": check_seed,
                "items": items}
    atomic_write_text(out / "manifest.json", json.dumps(manifest) + "\n")
    shutil.copyfile(Path(__file__).with_name("runner.py"), out / "runner.py")
    return out


# An ONNX file of a model holds its float32 weights and a few kB of graph (measured: within 4% of
# this for units of 5,000 weights and more).
FILE_OVERHEAD_BYTES = 4096


def export_bytes(units: list[Sig], specs: list[ArchSpec]) -> int:
    """About how many bytes the ONNX files of ``units`` and whole networks ``specs`` take."""
    from latency.signature import sig_params
    from space.cost import cost

    weights = sum(map(sig_params, units)) + sum(cost(s).params for s in specs)
    return 4 * weights + FILE_OVERHEAD_BYTES * (len(units) + len(specs))


def free_bytes(path: Path) -> int:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent)."""
    import shutil

    p = path.resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def check_room(need: int, free: int, where: Path) -> None:
    """Refuse, before a file is written, an export that would fill the disk midway (a full table of
    a wide space at 32x32 holds some 13 billion weights: about 53 GB of ONNX files)."""
    if need > free:
        raise UserError(f"{where}: the models to measure need about {need / 1e9:.1f} GB of ONNX files and "
                        f"{free / 1e9:.1f} GB is free there; make room, point TMPDIR (latency build) or --out "
                        "(latency export) at a larger disk, or measure fewer units (quick mode)")


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


TIME_COLUMNS = ("latency_ms", "median_ms", "p10_ms", "p90_ms")


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
    if len(lines) > 1 and "latency_ms" not in lines[1].split(","):
        raise UserError(f"{p}: written by an older runner.py (no latency_ms column); export the folder again with "
                        "`cli.py latency export` and measure with its runner.py")
    try:
        env = json.loads(lines[0][len("# hwnas-latency-runner "):])
        rows = list(csv.DictReader(lines[1:]))
        for r in rows:
            for c in TIME_COLUMNS + ("spread", "session_spread"):
                r[c] = float(r[c])
            r["runs"] = int(r["runs"])
    except (json.JSONDecodeError, KeyError, ValueError, TypeError) as e:
        raise UserError(f"{p}: measurements CSV is malformed ({e})") from None
    if not isinstance(env, dict):
        raise UserError(f"{p}: measurements CSV is malformed (its header is not a JSON object); measure again")
    for r in rows:
        # NaN, inf, zero or negative times would poison the table and every fit made from it.
        bad = [c for c in TIME_COLUMNS if not (math.isfinite(r[c]) and r[c] > 0)]
        if bad or not (math.isfinite(r["spread"]) and math.isfinite(r["session_spread"])) or r["runs"] < 1:
            what = f"{bad[0]}={r[bad[0]]}" if bad else f"spread={r['spread']}, runs={r['runs']}"
            raise UserError(f"{p}: row for {r.get('file')!r} has an impossible measurement ({what}); measure again")
    return env, rows


def import_measurements(csv_path: str | Path, device: str, manifest_dir: str | Path | None = None,
                        builds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Merge a runner CSV (and the manifest beside it) into ``device``'s table and calibration networks.
    Returns the counts and, under ``checks``, the measured self-check networks (never filed with the
    calibration networks)."""
    import pandas as pd

    from latency.runner import RunnerError, read_manifest

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
                                                        "provider", "clock", "opt_level", "method", "date")}}
    table = _load_or_new_table(device, meta)
    nets, nmeta = load_networks(device)
    unit_rows, net_rows, checks = [], [], []
    for r in rows:
        item = by_file.get(r["file"])
        if item is None:
            raise UserError(f"{p}: row for {r['file']!r} is not in the manifest of {mdir}")
        stats = {c: r[c] for c in STAT_COLUMNS}
        if item["kind"] == "unit":
            sig = item["sig"]
            unit_rows.append({**dict(zip(KEY_COLUMNS, sig)), **stats})
        else:
            spec = ArchSpec.from_dict(item["spec"])
            row = {"family": item["family"], "resolution": spec.resolution, "spec": spec.to_json(indent=None), **stats}
            (checks if item.get("role") == "check" else net_rows).append(row)
    if unit_rows:
        try:
            table.add(unit_rows)
        except (ValueError, TypeError) as e:
            raise UserError(f"{mdir / 'manifest.json'}: unit signatures are malformed ({str(e).splitlines()[0][:100]}); "
                            "export the folder again with `cli.py latency export`") from None
    builds = manifest.get("builds", []) if builds is None else builds
    table.meta = {**table.meta, **meta, "builds": merge_builds(table.meta.get("builds", []), builds)}
    table.save(units_path(device))
    if net_rows:
        nets = pd.concat([nets, pd.DataFrame(net_rows)], ignore_index=True) if len(nets) else pd.DataFrame(net_rows)
        # A network measured again (in another export) keeps its fastest measurement.
        nets = nets.sort_values("latency_ms", kind="stable").drop_duplicates("spec", keep="first")
        nets = nets.sort_index().reset_index(drop=True)
        save_networks(device, nets, {**nmeta, **meta})
    return {"units": len(unit_rows), "networks": len(net_rows), "table_rows": len(table), "checks": checks,
            "check_seed": manifest.get("check_seed")}


def _check_items(items: list[Any], where: Path) -> None:
    """Every manifest item names its file and what it is (a unit signature or a network's spec)."""
    for i, it in enumerate(items):
        ok = isinstance(it, dict) and isinstance(it.get("file"), str)
        if ok and it.get("kind") == "unit":
            ok = isinstance(it.get("sig"), list) and len(it["sig"]) == len(KEY_COLUMNS)
        elif ok:
            ok = it.get("kind") == "network" and isinstance(it.get("spec"), dict) and isinstance(it.get("family"), str)
        if not ok:
            raise UserError(f"{where}: item {i} is malformed ({json.dumps(it)[:80]}); export the folder again "
                            "with `cli.py latency export`")


def merge_builds(old: list[dict], new: list[dict]) -> list[dict]:
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
