"""Trained weights travel from the trial to the driver inside the trial's result; the driver writes them,
and keeps each finished result.

On a Ray cluster a trial runs on another machine, whose disk the driver cannot read, so a trial
never writes files. :func:`search.trial.run_candidate` returns the ``state_dict`` serialised under
:data:`search.trial.WEIGHTS_BLOB`; :class:`WeightsToDriver`, a Tune callback in the driver, takes it
out of the result (Tune lets callbacks edit a result in place, and user callbacks run before Tune's
loggers, so the bytes never reach ``result.json`` or the experiment state) and writes
``<run>/weights/<trial_id>.pt``, recording that path as the result's ``weights``. It also stores
a trial's last result (the trial's own keys; the end of its training, or the report at which ASHA
stopped it) as ``<run>/trials/net_<tokens>.json``, the first such result of a network only: a trial
Tune runs again after a kill returns that stored result where it can read it
(:func:`search.trial.run_candidate`), so a finished trial keeps its figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from common.atomic import atomic_write_bytes
from search import jsonstate
from search.trial import RESULT_KEYS, WEIGHTS_BLOB, stored_result_path


def run_folder(trial: Any) -> Path:
    """The trial's folder is ``<run>/tune/trial_<id>``, wherever the run folder is now (a resumed run
    may have been moved)."""
    return Path(trial.path).parent.parent


def weights_path(trial: Any) -> Path:
    """``<run>/weights/<trial_id>.pt``."""
    return run_folder(trial) / "weights" / f"{trial.trial_id}.pt"


class WeightsToDriver(Callback):
    """Write each trial's weights under the run folder on the driver's disk."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        blob = result.pop(WEIGHTS_BLOB, None)
        if blob:
            result["weights"] = str(atomic_write_bytes(weights_path(trial), blob))
        sample = (trial.config or {}).get("sample")
        # A trial's last result is the one with done set: its end, or where ASHA stopped it (Tune marks the
        # result done before the callbacks see it); earlier reports are not kept.
        if sample is None or "status" not in result or not result.get("tokens") or not result.get("done"):
            return
        path = stored_result_path(run_folder(trial) / "trials", result["tokens"])
        if not path.exists():  # the first result of a network is the one the strategy heard
            jsonstate.write(path, {"sample": sample, **{k: result.get(k, "") for k in RESULT_KEYS}})
