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
handed out again after a kill returns that stored result where it can read it
(:func:`search.trial.run_candidate`), so a finished trial keeps its figures. A trial that fails in
Tune (it raised, or its worker died) gets its one-line error from Tune's ``error.txt``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ray.tune import Callback

from common.atomic import atomic_write_bytes
from search import jsonstate
from search.trial import RESULT_KEYS, WEIGHTS_BLOB, stored_result_path


def error_line(text: str) -> str:
    """One short line of a Tune trial error (the text Tune keeps in the trial's ``error.txt``): the
    exception the trial raised (``Type: message``), or for a worker that died, the first sentence Ray
    gives, e.g. ``The actor died because its worker process has died.``"""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Failure # ")]  # Tune's own header
    exc = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:", line)]
    if exc:
        return exc[-1][:200]
    last = lines[-1] if lines else "no error text"
    return (last.split(". ")[0].rstrip(".") + ".")[:200]


class WeightsToDriver(Callback):
    """Write each trial's weights under the run folder on the driver's disk, store each sample's first
    result, and give the searcher the one-line error of a trial that failed."""

    def __init__(self, run_dir: Path, searcher: Any = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.searcher = searcher

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        blob = result.pop(WEIGHTS_BLOB, None)
        if blob:
            path = self.run_dir / "weights" / f"{trial.trial_id}.pt"
            result["weights"] = str(atomic_write_bytes(path, blob))
        sample = (trial.config or {}).get("sample")
        # A trial's last result is the one with done set: its end, or where ASHA stopped it (Tune marks the
        # result done before the callbacks see it); earlier reports are not kept.
        if sample is None or "status" not in result or not result.get("tokens") or not result.get("done"):
            return
        path = stored_result_path(self.run_dir / "trials", result["tokens"])
        if not path.exists():  # the first result of a network is the one the strategy heard
            jsonstate.write(path, {"sample": sample, **{k: result.get(k, "") for k in RESULT_KEYS}})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.searcher is None:
            return
        # Tune writes the error as text (error.txt) and as a pickle; only the text is read.
        text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).exists() else ""
        self.searcher.note_error(trial.trial_id, error_line(text))
