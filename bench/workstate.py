"""A long benchmark's resumable working files, kept beside its records and put back on a fresh checkout.

A benchmark that runs for many hours keeps each finished unit as a record under ``bench/records/``,
which is committed. The work in progress (the latency table a search steers by, a search's state, a
NetAdapt run's current checkpoint) lives under ``results/``, which is not: on a machine that does
not keep ``results/`` between sittings, hours of an unfinished search would be lost. ``keep``
mirrors the files a resume reads into ``<records>/state/`` (which can be committed); ``restore``
puts back what the working folder lacks before a sitting starts.

Of a NetAdapt run's weights (about 20 MB each for this benchmark's networks) only those a resume
loads are kept: the seed's, the checkpoint its ``state.json`` names, and the final ``netadapt.pt``
once ``result.json`` exists. Paths are relative to the working folder, so the state resumes a run
whose working folder is given by the same relative path (``--work``).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
from pathlib import Path

from common.atomic import atomic_path

# What a resume reads, as patterns on paths relative to the working folder.
KEEP = (
    r"latency/[^/.]+/[^/]+\.(json|csv|jsonl)",  # the device's table (not a table moved aside as *.failed-*)
    r"latency/probe\.json",  # the probe's reference level, which gated measurements compare against
    r"runs/[^/]+/(options|searcher|stopping)\.json",  # a search: options, every trial heard, ASHA's pairs
    r"runs/[^/]+/trials/net_[^/]+\.json",  # each finished trial's result: a trial handed out again reads it
    r"netadapt/[^/]+/[^/]+\.(json|csv)",  # a NetAdapt run: config, state, history
    r"netadapt/[^/]+/checkpoints/iter_\d+\.json",  # every kept network as an ArchSpec
)
MAX_BYTES = 8 << 20  # a JSON or CSV file over this is no resume state (this space's table is about 1 MB)


def _netadapt_weights(work: Path, states: Path | None = None) -> list[Path]:
    """The weights each NetAdapt run under ``work`` loads on resume, relative to ``work``: those its
    ``state.json`` names, read under ``states`` (the kept copy) when given, else under ``work``."""
    out = []
    for run in sorted(p for p in (work / "netadapt").glob("*") if p.is_dir()):
        names = ["checkpoints/iter_000.pt"]
        try:
            st = json.loads(((states / run.relative_to(work) if states else run) / "state.json").read_text())
            names.append(f"checkpoints/iter_{int(st['iteration']):03d}.pt")
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no state yet (the seed is training), or one being replaced: the next keep reads it
        if (run / "result.json").exists():
            names.append("netadapt.pt")
        out += [(run / n).relative_to(work) for n in dict.fromkeys(names) if (run / n).is_file()]
    return out


def selected(work: Path) -> list[Path]:
    """The files of ``work`` that ``keep`` copies, relative to it, sorted. Dot-files (another writer's
    temporary files) are never selected."""
    if not work.is_dir():
        return []
    rels = []
    for p in work.rglob("*"):
        r = p.relative_to(work)
        if p.name.startswith(".") or not any(re.fullmatch(k, r.as_posix()) for k in KEEP):
            continue
        try:
            if p.is_file() and p.stat().st_size <= MAX_BYTES:
                rels.append(r)
        except FileNotFoundError:  # replaced while we looked
            continue
    return sorted(set(rels + _netadapt_weights(work)))


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:  # a reader never sees half a file; its dot-named temporary is never selected
        shutil.copy2(src, tmp)


def _same(a: Path, b: Path) -> bool:
    return b.exists() and a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def keep(work: Path, state: Path) -> list[Path]:
    """Mirror the selected files of ``work`` into ``state``: copy those that changed, drop those no longer
    selected (an older checkpoint's weights). Returns the paths copied."""
    want = selected(work)
    copied = []

    def mirror(rels: list[Path]) -> None:
        for r in rels:
            try:
                if not _same(work / r, state / r):
                    _copy(work / r, state / r)
                    copied.append(r)
            except FileNotFoundError:  # gone since it was selected (replaced by its writer): the next keep has it
                continue

    mirror(want)
    # A NetAdapt iteration that finished between choosing the weights and copying its state.json leaves
    # a kept state.json naming a checkpoint not chosen: keep the weights the kept state.json names too.
    wanted = set(want)
    late = [r for r in _netadapt_weights(work, state) if r not in wanted]
    mirror(late)
    wanted.update(late)
    if state.is_dir():
        for p in sorted(state.rglob("*"), reverse=True):
            if p.name.startswith("."):  # another process's copy in flight
                continue
            try:
                if p.is_file() and p.relative_to(state) not in wanted:
                    p.unlink()
                elif p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            except OSError:
                continue
    return copied


def restore(state: Path, work: Path) -> list[Path]:
    """Copy every kept file that ``work`` lacks back into it. A file ``work`` already has is left as it
    is (a sitting on this machine wrote it after the state was kept), with a warning when it differs.
    Returns the paths restored."""
    if not state.is_dir():
        return []
    restored, differ = [], []
    for p in sorted(state.rglob("*")):
        r = p.relative_to(state)
        if not p.is_file() or p.name.startswith("."):
            continue
        if (work / r).exists():
            if not _same(p, work / r):
                differ.append(r)
            continue
        _copy(p, work / r)
        restored.append(r)
    if differ:
        print(f"warning: {len(differ)} working files differ from those kept in {state} (e.g. {differ[0]}); "
              f"the working folder's are used", file=sys.stderr)
    return restored


class Keeper:
    """Keeps ``work`` into ``state`` every ``every_s`` seconds from a daemon thread, and once more on
    ``stop``: a sitting that is cut off loses at most the last interval."""

    def __init__(self, work: Path, state: Path, every_s: float = 300.0) -> None:
        self.work, self.state, self.every_s = work, state, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="workstate-keeper", daemon=True)

    def _keep(self) -> list[Path]:
        try:
            return keep(self.work, self.state)
        except Exception as e:  # never the reason a benchmark stops: the next interval tries again
            print(f"warning: keeping {self.work} in {self.state} failed this time ({e})", file=sys.stderr)
            return []

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._keep()

    def start(self) -> Keeper:
        self._thread.start()
        return self

    def stop(self) -> list[Path]:
        self._stop.set()
        self._thread.join()
        return self._keep()
