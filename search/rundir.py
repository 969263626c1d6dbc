"""The folder of a search run: a new one, or the one ``--resume`` continues (checked to be a search run)."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

from common.errors import UserError
from common.paths import results_dir
from search.options import SearchOptions

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
    tune_dir = d / "tune"
    if not (tune_dir / "tuner.pkl").exists() or not any(tune_dir.glob("experiment_state-*.json")):
        raise UserError(f"--resume: {d} has no Tune checkpoint (the run stopped before its first one); "
                        "start it again under another --name")
    _check_searcher_state(d)
    if any(tune_dir.glob("searcher-state-*.pkl")) and not (d / "searcher.json").exists() \
            and not any(tune_dir.glob("searcher-state-*.json")):
        raise UserError(f"--resume: {d} was written by an older hwnas whose searcher checkpoint is a pickle, "
                        "which is no longer loaded (it could run code); start a new run")


def _check_searcher_state(d: Path) -> None:
    """A searcher.json of an older format (before strategies) cannot be continued."""
    from search.searcher import STATE_FORMAT

    try:
        own = json.loads((d / "searcher.json").read_text()) if (d / "searcher.json").is_file() else {}
    except (OSError, ValueError):
        return  # unreadable: restore falls back on Tune's copy, or says the run cannot be resumed
    if isinstance(own, dict) and own.get("format", STATE_FORMAT) != STATE_FORMAT:
        raise UserError(f"--resume: {d} was written by an older hwnas (searcher state {own.get('format')}, this one "
                        f"reads {STATE_FORMAT}); start a new run")


def restore_options(opts: SearchOptions, run_dir: Path) -> SearchOptions:
    saved = json.loads((run_dir / "options.json").read_text())
    keep = {"resume": True, "name": run_dir.name, "address": opts.address, "dashboard_host": opts.dashboard_host,
            "progress": opts.progress}
    allowed = {f.name for f in fields(SearchOptions)}
    return SearchOptions(**{**{k: v for k, v in saved.items() if k in allowed}, **keep})
