"""JSON for checkpoint state that holds tensors: exact, and reading it can never run code.

The searcher's state (controller weights, optimiser, RNG, pending samples, records) used to be a
pickle; a pickle runs whatever it names when loaded, so a run folder from elsewhere could execute
code on ``--resume``. This encoding keeps the same values, bit for bit, in plain JSON. ``--resume``
reads the run's ``searcher.json`` and ``trials/*.json`` through it and unpickles nothing; the new
Tune experiment it starts reads nothing of an earlier one (:mod:`search.searcher`, docs/search.md):

* a tensor is ``{"__tensor__": "float32", "shape": [...], "data": "<base64 of the little-endian bytes>"}``
  (only the dtypes in :data:`DTYPES`);
* a tuple is ``{"__tuple__": [...]}``;
* a dict whose keys are not all strings (the optimiser's state is keyed by parameter index) is
  ``{"__items__": [[key, value], ...]}``;
* a float JSON cannot hold (nan, inf) is ``{"__float__": "nan"}``, so the file stays strict JSON.

Reading accepts these forms and plain JSON values only.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.atomic import atomic_write_text

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}
_MARKERS = ("__tensor__", "__tuple__", "__items__", "__float__")
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode(obj: Any) -> Any:
    """``obj`` (tensors, dicts, lists, tuples, numbers, strings, None) as plain JSON values."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if t.dtype not in _NAMES:
            raise TypeError(f"cannot store a {t.dtype} tensor in a JSON checkpoint")
        arr = t.numpy()
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        return {"__tensor__": _NAMES[t.dtype], "shape": list(t.shape), "data": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, np.generic):  # numpy scalars (a metric computed with numpy) as Python numbers
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v) for v in obj]}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k in _MARKERS for k in obj):
            return {k: encode(v) for k, v in obj.items()}
        return {"__items__": [[encode(k), encode(v)] for k, v in obj.items()]}
    raise TypeError(f"cannot store a {type(obj).__name__} in a JSON checkpoint")


def decode(obj: Any) -> Any:
    """The inverse of :func:`encode`; anything else than its forms is a ``ValueError``."""
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return _tensor(obj)
    if "__tuple__" in obj:
        return tuple(decode(v) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_hashable(decode(k)): decode(v) for k, v in obj["__items__"]}
    if "__float__" in obj:
        if obj["__float__"] not in _FLOATS:
            raise ValueError(f"bad float {obj['__float__']!r}")
        return _FLOATS[obj["__float__"]]
    return {k: decode(v) for k, v in obj.items()}


def _hashable(k: Any) -> Any:
    if isinstance(k, (list, dict)):
        raise ValueError("a dict key in a checkpoint must be a number, string or tuple")
    return k


def _tensor(d: dict[str, Any]) -> torch.Tensor:
    name, shape = d["__tensor__"], d["shape"]
    if name not in DTYPES:
        raise ValueError(f"tensor dtype {name!r} is not allowed in a checkpoint")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"bad tensor shape {shape!r}")
    raw = base64.b64decode(d["data"], validate=True)
    dt = np.dtype(str(torch.empty(0, dtype=DTYPES[name]).numpy().dtype)).newbyteorder("<")
    if len(raw) != dt.itemsize * math.prod(shape):
        raise ValueError(f"tensor data holds {len(raw)} bytes, not {dt.itemsize * math.prod(shape)} for {shape}")
    arr = np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="), copy=True).reshape(shape)
    return torch.from_numpy(arr)


def dumps(obj: Any) -> str:
    """Strict JSON text (no NaN/Infinity literals) of ``obj``."""
    return json.dumps(encode(obj), allow_nan=False, separators=(",", ":"))


def loads(text: str) -> Any:
    return decode(json.loads(text))


def write(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file, then rename)."""
    return atomic_write_text(path, dumps(obj) + "\n")


def read(path: str | os.PathLike) -> Any:
    return loads(Path(path).read_text())
