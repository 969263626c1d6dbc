"""What ``cli.py export`` can export: a reference name, an ArchSpec file (weights beside it), a search run,
a NetAdapt run or one trial of a search run, each resolved to (ArchSpec, weights file or None)."""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError

# (spec file, weights file) pairs that runs leave behind, most final first.
RUN_ARTIFACTS = (("netadapt.json", "netadapt.pt"), ("seed.json", "seed.pt"), ("arch.json", "weights.pt"))


def _trial_source(run: Path, trial: str, weights: str | None) -> tuple[object, Path | None]:
    """A search trial's ArchSpec and weights, read from the run's trials.csv (columns trial_id, arch, weights)."""
    import csv

    from space.archspec import ArchSpec

    table = run / "trials.csv"
    if not table.is_file():
        raise UserError(f"{run}: has no trials.csv, so it is not a search run; --trial needs one")
    try:
        with table.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("trial_id") == trial]
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{table}: not a readable trials table ({type(e).__name__}); pass a search run folder") from None
    if not rows or not rows[0].get("arch"):
        raise UserError(f"{table}: no finished trial {trial!r}; pick a trial_id from that file")
    spec = ArchSpec.from_json(rows[0]["arch"], source=f"{table} trial {trial}")
    w = Path(weights) if weights else (Path(rows[0]["weights"]) if rows[0].get("weights") else None)
    if w is not None and not weights and not w.is_file():
        w = None  # trials off the Pareto front have their weights pruned after the run
    return spec, w


def resolve_export_source(arg: str, weights: str | None, trial: str | None = None,
                          width: float | None = None) -> tuple[object, Path | None]:
    """(ArchSpec, weights path or None) from a name (scaled by ``width``), a spec file, a run folder
    or a search trial."""
    from space.archspec import ArchSpec
    from space.resolve import load_spec

    p = Path(arg)
    if width is not None and p.is_dir():
        raise UserError(f"--width {width:g} applies to reference networks, not to the run folder {arg}; drop --width")
    if trial is not None:
        if not p.is_dir():
            raise UserError(f"--trial needs a search run folder, and {arg!r} is not a folder")
        return _trial_source(p, trial, weights)
    if p.is_dir():
        for spec_name, weights_name in RUN_ARTIFACTS:
            if (p / spec_name).is_file():
                w = Path(weights) if weights else (p / weights_name if (p / weights_name).is_file() else None)
                return ArchSpec.load(p / spec_name), w
        raise UserError(f"{p}: is a folder but holds none of {', '.join(s for s, _ in RUN_ARTIFACTS)}; "
                        "pass a search run, a NetAdapt run, a trial folder or an ArchSpec file")
    spec = load_spec(arg, width)
    if weights:
        return spec, Path(weights)
    beside = p.with_suffix(".pt")
    return spec, beside if p.suffix == ".json" and beside.is_file() else None
