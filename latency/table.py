"""The latency table: one row per measured unit (stem, body layer at its input size, head), a pandas
DataFrame with explicit columns, saved as CSV beside a JSON file of metadata (device, CPU,
onnxruntime version, threads, provider, optimisation level, date) that also holds the CSV's
SHA-256 so a truncated or edited file is refused instead of silently used.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.atomic import atomic_write_text
from common.errors import UserError
from latency.signature import KEY_COLUMNS, Sig

if TYPE_CHECKING:
    import pandas as pd

STAT_COLUMNS = ("latency_ms", "median_ms", "p10_ms", "p90_ms", "spread", "session_spread", "runs")
COLUMNS = KEY_COLUMNS + STAT_COLUMNS
DTYPES = {
    "op": str, "kernel": int, "stride": int, "in_ch": int, "out_ch": int, "exp_ch": int, "se_ch": int,
    "act": str, "residual": bool, "res": int, "fc_ch": int, "pw_act": bool, "gate": str,
    "latency_ms": float, "median_ms": float, "p10_ms": float, "p90_ms": float, "spread": float,
    "session_spread": float, "runs": int,
}
FORMAT_VERSION = 2  # 2: latency_ms (several sessions, the fastest fifth of the blocks), session_spread
def empty_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=t if t is not str else object) for c, t in DTYPES.items()})


@dataclass
class LatencyTable:
    """Measured units (``frame``) plus where and how they were measured (``meta``)."""

    frame: Any = field(default_factory=empty_frame)  # pandas DataFrame with COLUMNS
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    def lookup(self) -> dict[Sig, float]:
        """Signature -> latency ms (the last measurement wins on duplicates)."""
        f = self.frame
        keys = zip(*(f[c].tolist() for c in KEY_COLUMNS))
        return {Sig(*k): float(v) for k, v in zip(keys, f["latency_ms"].tolist())}

    def add(self, rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        new = pd.DataFrame(rows, columns=list(COLUMNS))
        frame = new if self.frame.empty else pd.concat([self.frame, new], ignore_index=True)
        self.frame = frame.drop_duplicates(list(KEY_COLUMNS), keep="last").reset_index(drop=True).astype(DTYPES)

    # ---- persistence ---------------------------------------------------------------------
    def save(self, csv_path: str | Path) -> Path:
        """Write ``X.csv`` and ``X.json`` (metadata + checksum), each atomically; the CSV first so a
        crash between the two leaves a checksum mismatch, which loading refuses, not a wrong table."""
        p = Path(csv_path)
        text = self.frame.to_csv(index=False, float_format="%.6g")
        meta = {**self.meta, "format": FORMAT_VERSION, "rows": len(self.frame),
                "sha256": hashlib.sha256(text.encode()).hexdigest()}
        atomic_write_text(p, text)
        atomic_write_text(p.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
        self.meta = meta
        return p

    @classmethod
    def load(cls, csv_path: str | Path) -> LatencyTable:
        import pandas as pd

        p = Path(csv_path)
        mp = p.with_suffix(".json")
        if not p.is_file() or not mp.is_file():
            raise UserError(f"{p}: latency table (or its .json metadata) not found")
        text = p.read_text()
        try:
            meta = json.loads(mp.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{mp}: metadata is not valid JSON; delete {p.parent} and rebuild the table") from None
        if not isinstance(meta, dict) or meta.get("sha256") != hashlib.sha256(text.encode()).hexdigest():
            raise UserError(f"{p}: table is corrupted or truncated (checksum mismatch); delete {p.parent} and rebuild it")
        if meta.get("format", 1) < FORMAT_VERSION:
            raise UserError(f"{p}: measured with the previous method (one session per pass, no latency_ms column); "
                            f"delete {p.parent} and rebuild it with `python cli.py latency build`")
        try:
            frame = pd.read_csv(io.StringIO(text))
            missing = [c for c in COLUMNS if c not in frame.columns]
            if missing:
                raise ValueError(f"missing columns {missing}")
            frame = frame[list(COLUMNS)].astype(DTYPES)
        except (ValueError, pd.errors.ParserError) as e:
            raise UserError(f"{p}: table is malformed ({e}); delete {p.parent} and rebuild it") from None
        return cls(frame, meta)


def check_same_device(meta: dict[str, Any], device: str, where: str) -> None:
    """Refuse a table filed under ``device`` whose metadata names another device (a copied or renamed folder)."""
    if meta.get("device") != device:
        raise UserError(f"{where}: was measured on device {meta.get('device')!r}, not {device!r}; move it back to "
                        f"the folder of its device or rebuild it with `python cli.py latency build --device {device}`")


def check_meta(meta: dict[str, Any], device: str, where: str, strict_version: bool = False) -> None:
    """Refuse a table of another device; warn (or refuse) when onnxruntime's version changed."""
    from latency.measure import ort_version

    check_same_device(meta, device, where)
    have = ort_version()
    if meta.get("ort_version") and meta.get("ort_version") != have:
        msg = (f"{where}: measured with onnxruntime {meta.get('ort_version')}, this is {have}; delete "
               f"{Path(where).parent} and rebuild it with `python cli.py latency build --device {device}`")
        if strict_version:
            raise UserError(msg)
        warnings.warn(msg, stacklevel=2)
