"""Weights files: a torch ``state_dict`` written atomically, read back with ``weights_only=True``.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only, so a weights file
from elsewhere cannot run code when it is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from common.atomic import atomic_path
from common.errors import UserError


def save_weights(model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a state_dict (tensors moved to CPU) via a temp file in the same folder and a rename."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    state = {k: v.detach().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
    return Path(path)


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict written by :func:`save_weights`, any plain tensor dict, or a checkpoint that
    holds one under ``state_dict``."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a weights file; pass the state_dict .pt file")
    if not p.is_file():
        raise UserError(f"{p}: no such weights file; check the path")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or non-weights files
        raise UserError(f"{p}: not a readable weights file ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{p}: does not hold a state_dict of tensors")
    return dict(state)


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], where: str = "weights") -> None:
    """Raise a one-line :class:`UserError` unless ``state`` has exactly the model's keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise UserError(f"{where} do not fit the network: {what} ({len(missing)} missing, {len(extra)} unexpected "
                        "keys); were they saved for another ArchSpec?")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{where} do not fit the network: {k} has shape {tuple(state[k].shape)}, "
                            f"the network needs {tuple(v.shape)}")


def load_into(model: nn.Module, path_or_state: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load weights (a path or a state_dict) into ``model`` after checking that they fit it."""
    if isinstance(path_or_state, Mapping):
        state, where = path_or_state, "weights"
    else:
        state, where = load_weights(path_or_state), f"weights {path_or_state}"
    check_fits(model, state, where)
    model.load_state_dict(state)
    return model
