"""Where a device's latency data lives, and the checks every reader of it makes.

Under ``results/latency/<device>/``:

``units.csv`` + ``units.json``
    the latency table (every measured stem, body layer and head) and its metadata;
``networks.csv`` + ``networks.json``
    whole networks measured end to end (the calibration set), one ArchSpec JSON per row;
``predictor-<space>-r<resolution>.json``
    the fitted predictor, refitted automatically when the table or the networks change.

Each CSV's metadata holds its SHA-256, so a truncated or edited file is refused, and the
environment it was measured in (:data:`ENVIRONMENT_KEYS`), so measurements of different machines,
onnxruntime versions or thread counts are never mixed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.atomic import atomic_write_text
from common.errors import UserError
from common.paths import results_dir

if TYPE_CHECKING:
    import pandas as pd

LOCAL_DEVICE = "local-cpu"
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def check_device_name(device: str) -> str:
    if not _DEVICE_RE.match(device):
        raise UserError(f"device name {device!r} is not usable as a folder name; use letters, digits, '-', '_', '.'")
    return device


def device_dir(device: str) -> Path:
    return results_dir() / "latency" / check_device_name(device)


def units_path(device: str) -> Path:
    return device_dir(device) / "units.csv"


def networks_path(device: str) -> Path:
    return device_dir(device) / "networks.csv"


def predictor_path(device: str, space: str, resolution: int) -> Path:
    return device_dir(device) / f"predictor-{space}-r{resolution}.json"


def how_to_build(device: str) -> str:
    return f"build one with `python cli.py latency build --device {device}`"


NET_COLUMNS = ("family", "resolution", "spec", "latency_ms", "median_ms", "p10_ms", "p90_ms", "spread", "session_spread",
               "runs")


def load_networks(device: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The device's whole-network measurements as a (DataFrame, meta) pair; empty when none."""
    import io

    import pandas as pd

    p = networks_path(device)
    if not p.exists():
        return pd.DataFrame({c: [] for c in NET_COLUMNS}), {}
    text = p.read_text()
    meta = read_meta(p)
    if meta.get("sha256") != hashlib.sha256(text.encode()).hexdigest():
        raise UserError(f"{p}: network measurements are corrupted or truncated (checksum mismatch); delete {p.parent} and rebuild it")
    try:
        df = pd.read_csv(io.StringIO(text))
        if "latency_ms" not in df.columns:
            raise UserError(f"{p}: measured with the previous method (one session per pass, no latency_ms column); "
                            f"delete {p.parent} and rebuild it")
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


def read_meta(p: Path) -> dict[str, Any]:
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


def verify(p: Path, meta: dict[str, Any]) -> None:
    """Refuse a file whose checksum differs from its metadata's (truncated, edited, half-written)."""
    if hashlib.sha256(p.read_bytes()).hexdigest() != meta.get("sha256"):
        raise UserError(f"{p}: corrupted or truncated (checksum mismatch); delete {p.parent} and rebuild it "
                        "with `python cli.py latency build`")


# What a measurement depends on: a table only takes (or is compared with) measurements that agree on all.
ENVIRONMENT_KEYS = ("device", "ort_version", "threads", "provider", "clock", "cpu", "method")


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
