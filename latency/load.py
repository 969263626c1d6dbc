"""The predictor of a device: fitted from its table and calibration networks, saved beside them, loaded
while both are unchanged, refitted when either changed, built first where that is allowed."""

from __future__ import annotations

import warnings
from typing import Any

from common.errors import UserError
from latency.files import (
    LOCAL_DEVICE,
    check_compatible,
    check_device_name,
    device_dir,
    how_to_build,
    load_networks,
    local_environment,
    networks_path,
    predictor_path,
    read_meta,
    units_path,
    verify,
)
from latency.predictor import Predictor
from latency.selfcheck import warn_if_needed
from space.archspec import ArchSpec


def fit_predictor(device: str, space: str, resolution: int, save: bool = True,
                  exclude: set[str] | None = None) -> Predictor:
    """Fit the per-op models on the device's table and the calibration on all its networks (every
    family, every resolution: the calibration is meant to transfer); save it."""
    from latency.table import LatencyTable

    table = LatencyTable.load(units_path(device))
    nets, nmeta = load_networks(device)
    pairs = _calibration_pairs(nets, exclude or set())
    groups = [str(f) for s, f in zip(nets["spec"], nets["family"]) if s not in (exclude or set())] if len(nets) else None
    meta = {**table.meta, "device_dir": str(device_dir(device)), "space": space, "resolution": resolution,
            "calibration_networks": len(pairs),
            "table_sha256": table.meta.get("sha256"), "networks_sha256": nmeta.get("sha256")}
    pred = Predictor.fit(table, pairs, meta, groups)
    if save:
        pred.save(predictor_path(device, space, resolution))
    return pred


def _calibration_pairs(nets, exclude: set[str]) -> list[tuple[ArchSpec, float]]:
    if not len(nets):
        return []
    return [(ArchSpec.from_json(s), float(m)) for s, m in zip(nets["spec"], nets["latency_ms"]) if s not in exclude]


def _covers(meta: dict[str, Any], space: str, resolution: int) -> bool:
    return any(b.get("space") == space and b.get("resolution") == resolution for b in meta.get("builds", []))


def check_table(device: str = LOCAL_DEVICE, space: str = "mnasnet", resolution: int = 224,
                build_if_missing: bool = False, strict_version: bool | None = None) -> dict[str, Any] | None:
    """What :func:`load_predictor` would refuse, found without fitting or building anything, so that a
    command can check its input before any work: the device name, a missing, corrupted or foreign
    table, and for ``local-cpu`` one that this machine cannot extend (another onnxruntime, CPU, ...).
    ``strict_version`` refuses a table of another onnxruntime (default: for ``local-cpu`` only).
    Returns the table's metadata (None when the table will be built on first use)."""
    from latency.table import check_meta

    check_device_name(device)
    upath, local = units_path(device), device == LOCAL_DEVICE
    if not upath.exists():
        if build_if_missing and local:
            return None  # built on first use
        raise UserError(f"no latency table for device {device!r} in {device_dir(device)}; {how_to_build(device)}")
    tmeta = read_meta(upath)
    verify(upath, tmeta)
    check_meta(tmeta, device, str(upath), strict_version=local if strict_version is None else strict_version)
    if build_if_missing and local and not _covers(tmeta, space, resolution):
        check_compatible(upath, tmeta, local_environment(device), f"delete {device_dir(device)} to rebuild it here")
    if networks_path(device).exists():
        verify(networks_path(device), read_meta(networks_path(device)))
    return tmeta


def load_predictor(device: str = LOCAL_DEVICE, space: str = "mnasnet", resolution: int = 224,
                   build_if_missing: bool = False, progress: bool = True) -> Predictor:
    """The predictor for ``device``: loaded when saved and current, refitted when the data changed,
    built (:data:`AUTO_BUILD_MODE`, on this machine) when ``build_if_missing`` and ``device`` is ``local-cpu``;
    otherwise a missing table is a :class:`UserError` saying how to build one."""
    from latency.table import check_meta

    check_device_name(device)
    upath = units_path(device)
    if build_if_missing and device == LOCAL_DEVICE and \
            (not upath.exists() or not _covers(read_meta(upath), space, resolution)):
        from latency.build import AUTO_BUILD_MODE, build_lock, build_unlocked

        with build_lock(device):  # parallel workers: one builds, the others wait and load
            if not upath.exists() or not _covers(read_meta(upath), space, resolution):
                return build_unlocked(device, space, resolution, AUTO_BUILD_MODE, 1, "cpu", None, None, progress)
    if not upath.exists():
        raise UserError(f"no latency table for device {device!r} in {device_dir(device)}; {how_to_build(device)}")
    tmeta = read_meta(upath)
    verify(upath, tmeta)
    # local-cpu is this machine: its table must be of this onnxruntime (another device's has its own).
    check_meta(tmeta, device, str(upath), strict_version=device == LOCAL_DEVICE)
    warn_if_needed(tmeta, device)
    if not _covers(tmeta, space, resolution):
        warnings.warn(f"the {device} table has no build for space {space!r} at resolution {resolution}; "
                      f"predictions extrapolate (run `python cli.py latency build --device {device} --space {space} "
                      f"--resolution {resolution}`)", stacklevel=2)
    nmeta = read_meta(networks_path(device)) if networks_path(device).exists() else {}
    if nmeta:
        verify(networks_path(device), nmeta)
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
