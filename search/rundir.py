"""The folder of a search run: a new one, or the one ``--resume`` continues (checked to be a search run, not
running, and given no option that would change what the run is)."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

from common.errors import UserError
from common.paths import results_dir
from common.runstatus import refuse_if_running
from search.options import DEMO_MIN_TRIALS, SearchOptions

COMMAND = "search"  # the marker options.json carries, so that no other command's folder is taken for a search run


def run_folder(opts: SearchOptions) -> Path:
    runs = results_dir() / "runs"
    if opts.resume:
        if opts.name:
            d = runs / opts.name
            if not d.is_dir():
                raise UserError(f"--resume: there is no search run {d}; check --name (runs are in {runs})")
        else:  # the most recent run
            cands = sorted((p for p in runs.glob("*") if (p / "options.json").exists()), key=lambda p: p.stat().st_mtime)
            if not cands:
                raise UserError(f"--resume: no run to resume under {runs}; start one without --resume")
            d = cands[-1]
        check_search_run(d)
        return d
    name = opts.name or time.strftime("search-%Y%m%d-%H%M%S")
    d = runs / name
    if d.exists():
        raise UserError(f"run folder {d} already exists; pass --resume to continue it or another --name")
    return d


def check_search_run(d: Path) -> None:
    """Refuse, with one line, a folder that is not a resumable search run (another command's, or none)."""
    if (d / "state.json").exists() and (d / "config.json").exists():
        raise UserError(f"--resume: {d} is a NetAdapt run, not a search run; resume it with "
                        f"`python cli.py netadapt --resume --name {d.name}`")
    if not (d / "options.json").is_file():
        raise UserError(f"--resume: {d} is not a search run folder (it has no options.json); check --name")
    try:
        saved = json.loads((d / "options.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--resume: {d / 'options.json'} is unreadable ({e}); this run cannot be resumed") from None
    if not isinstance(saved, dict) or saved.get("command", COMMAND) != COMMAND:
        what = saved.get("command") if isinstance(saved, dict) else None
        raise UserError(f"--resume: {d} holds a {what or 'different'} run, not a search run; check --name")
    _check_searcher_state(d)
    if any((d / "tune").glob("searcher-state-*.pkl")) and not (d / "searcher.json").exists():
        raise UserError(f"--resume: {d} was written by an older hwnas whose searcher checkpoint is a pickle, "
                        "which is no longer loaded (it could run code); start a new run")
    if (d / "searcher.json").exists():
        from search.searcher import read_state

        if read_state(d / "searcher.json") is None:
            raise UserError(f"--resume: {d / 'searcher.json'} is unreadable or was written by an older hwnas; this run "
                            "cannot be resumed, start a new one")
    refuse_if_running(d)


def _check_searcher_state(d: Path) -> None:
    """A searcher.json of an older format (before strategies) cannot be continued."""
    from search.searcher import STATE_FORMAT

    try:
        own = json.loads((d / "searcher.json").read_text()) if (d / "searcher.json").is_file() else {}
    except (OSError, ValueError):
        return  # unreadable: said below
    if isinstance(own, dict) and own.get("format", STATE_FORMAT) != STATE_FORMAT:
        raise UserError(f"--resume: {d} was written by an older hwnas (searcher state {own.get('format')}, this one "
                        f"reads {STATE_FORMAT}); start a new run")


# Options that say how this sitting runs, not what the run is: taken from the command line on --resume.
SITTING_OPTIONS = ("address", "dashboard_host", "progress", "time_budget_s", "mlflow")
# The command-line spelling of the options whose field names differ.
OPTION_NAMES = {"controller_method": "--controller", "time_budget_s": "--time-budget", "w": "--w"}


def _flag(field: str) -> str:
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def restore_options(opts: SearchOptions, run_dir: Path, given: tuple[str, ...] = ()) -> SearchOptions:
    """The run's own options (``options.json``) for a resumed sitting.

    ``given`` names the options the command line gave (field names). Those that say how this sitting runs
    (:data:`SITTING_OPTIONS`) are taken; a larger ``trials`` raises the budget; any other one that differs
    from the run's value is refused with one line naming it and both values.
    """
    saved = json.loads((run_dir / "options.json").read_text())
    allowed = {f.name for f in fields(SearchOptions)}
    run = {k: v for k, v in saved.items() if k in allowed}
    for name in given:
        if name in SITTING_OPTIONS or name in ("resume", "name") or name not in allowed:
            continue
        mine, theirs = getattr(opts, name), run.get(name)
        if name == "trials" and mine > theirs:
            run["trials"] = mine  # a larger budget: the run goes on to it
            continue
        if mine != theirs:
            why = ("only a larger --trials is taken" if name == "trials" else
                   "a run keeps the options it started with; start a new run (another --name) to change it")
            raise UserError(f"--resume: {_flag(name)} {_show(mine)} differs from this run's {_show(theirs)}; {why}")
    keep = {"resume": True, "name": run_dir.name, **{k: getattr(opts, k) for k in SITTING_OPTIONS}}
    return SearchOptions(**{**run, **keep})


def _show(v: object) -> str:
    return "(not set)" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def describe(run_dir: Path) -> dict:
    """What ``cli.py runs`` shows of a search run, from its JSON files alone (plain JSON reads, quick)."""
    from common.runstatus import current, read_json

    opts = read_json(run_dir / "options.json")
    state = read_json(run_dir / "searcher.json")
    records = state.get("records", [])
    ok = [r for r in records if r.get("status") == "ok" and isinstance(r.get("reward"), (int, float))]
    best = max(ok, key=lambda r: r["reward"]) if ok else None
    argv = opts.get("argv") or ["search", "--target-ms", str(opts.get("target_ms", "?"))]
    seed = run_dir / "seed.json"
    return {"run": run_dir.name, "kind": "search", "path": str(run_dir), "status": current(run_dir),
            "done": len(records), "budget": opts.get("trials"),
            "demonstration": isinstance(opts.get("trials"), int) and opts["trials"] < DEMO_MIN_TRIALS, "best_reward": best["reward"] if best else None,
            "best_trial": best["sample"] if best else None, "seed": str(seed) if seed.exists() else None,
            "command": "python cli.py " + " ".join(argv)}
