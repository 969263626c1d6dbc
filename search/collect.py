"""Trained weights travel from the trial to the driver inside the trial's result; the driver writes them.

On a Ray cluster a trial runs on another machine, whose disk the driver cannot read, so a trial
never writes files. :func:`search.trial.run_candidate` returns the ``state_dict`` serialised under
:data:`search.trial.WEIGHTS_BLOB`; :class:`WeightsToDriver`, a Tune callback in the driver, takes it
out of the result (Tune lets callbacks edit a result in place, and user callbacks run before Tune's
loggers, so the bytes never reach ``result.json`` or the experiment state) and writes
``<run>/weights/<trial_id>.pt``, recording that path as the result's ``weights``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from search.trial import WEIGHTS_BLOB
from space.atomic import atomic_write_bytes


def weights_path(trial: Any) -> Path:
    """``<run>/weights/<trial_id>.pt``: the trial's folder is ``<run>/tune/trial_<id>``, wherever the run
    folder is now (a resumed run may have been moved)."""
    return Path(trial.path).parent.parent / "weights" / f"{trial.trial_id}.pt"


class WeightsToDriver(Callback):
    """Write each trial's weights under the run folder on the driver's disk."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        blob = result.pop(WEIGHTS_BLOB, None)
        if blob:
            result["weights"] = str(atomic_write_bytes(weights_path(trial), blob))
