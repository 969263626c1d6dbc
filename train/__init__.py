"""Data and training shared by the search trial and NetAdapt.

Names are resolved lazily so that ``train.cli_args`` (imported when the CLI registers its
commands) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataBundle": "train.data", "Split": "train.data", "load_data": "train.data",
    "TrainingDiverged": "train.loop", "TrainResult": "train.loop", "train_model": "train.loop",
    "evaluate": "train.loop", "evaluate_metrics": "train.loop", "recalibrate_bn": "train.loop",
    "save_weights": "train.weights", "load_weights": "train.weights", "load_into": "train.weights",
    "check_fits": "train.weights",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'train' has no attribute {name!r}")
