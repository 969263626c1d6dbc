"""A long benchmark's resumable working files, kept beside its records and put back on a fresh checkout.

A benchmark that runs for many hours keeps each finished unit as a record under ``bench/records/``,
which is committed. The work in progress (the latency table a search steers by, a search's
``searcher.json``, a NetAdapt run's last checkpoint) lives under ``results/``, which is not: on a
machine that does not keep ``results/`` between sittings, hours of an unfinished search would be
lost. ``keep`` mirrors the few small files a resume reads into ``<records>/state/`` (which can be
committed); ``restore`` puts back what the working folder lacks before a sitting starts. Of a NetAdapt
run's weights only the seed's and the newest checkpoint's are kept: a resume reads no other.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from pathlib import Path

# What a resume reads, as patterns on paths relative to the working folder.
KEEP = (
    r"latency/[^/]+/[^/]+\.(json|csv|jsonl)",  # the device's table: units, meta, calibration
    r"latency/probe\.json",  # the probe's reference level, which gated measurements compare against
    r"runs/[^/]+/(options|searcher)\.json",  # a search: its options and every trial heard
    r"netadapt/[^/]+/[^/]+\.(json|csv)",  # a NetAdapt run: config, state, history
    r"netadapt/[^/]+/checkpoints/iter_\d+\.json",  # every kept network as an ArchSpec
)
NEWEST_WEIGHTS = r"netadapt/[^/]+/checkpoints/iter_(\d+)\.pt"
MAX_BYTES = 8 << 20  # a file over this is no resume state (a table of this space is well under 1 MB)


def selected(work: Path) -> list[Path]:
    """The files of ``work`` that ``keep`` copies, relative to it, sorted."""
    if not work.is_dir():
        return []
    rels = [p.relative_to(work) for p in work.rglob("*") if p.is_file() and p.stat().st_size <= MAX_BYTES]
    keep = [r for r in rels if any(re.fullmatch(k, r.as_posix()) for k in KEEP)]
    newest: dict[Path, tuple[int, Path]] = {}  # checkpoints folder -> newest iteration's weights
    for r in rels:
        m = re.fullmatch(NEWEST_WEIGHTS, r.as_posix())
        if m and int(m.group(1)) >= newest.get(r.parent, (-1, r))[0]:
            newest[r.parent] = (int(m.group(1)), r)
    seeds = [r for r in rels if re.fullmatch(NEWEST_WEIGHTS, r.as_posix()) and r.name == "iter_000.pt"]
    return sorted(set(keep + seeds + [r for _, r in newest.values()]))


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")  # two sharded processes may keep at once
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)  # a reader never sees half a file


def keep(work: Path, state: Path) -> list[Path]:
    """Mirror the selected files of ``work`` into ``state``: copy those that changed, drop those no longer
    selected (an older checkpoint's weights). Returns the paths copied."""
    want = selected(work)
    copied = []
    for r in want:
        src, dst = work / r, state / r
        if not dst.exists() or src.stat().st_size != dst.stat().st_size or src.read_bytes() != dst.read_bytes():
            _copy(src, dst)
            copied.append(r)
    if state.is_dir():
        wanted = set(want)
        for p in sorted(state.rglob("*"), reverse=True):
            if p.is_file() and p.relative_to(state) not in wanted:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return copied


def restore(state: Path, work: Path) -> list[Path]:
    """Copy every kept file that ``work`` lacks back into it (a file already there is newer or the same:
    never overwritten). Returns the paths restored."""
    if not state.is_dir():
        return []
    restored = []
    for p in sorted(state.rglob("*")):
        r = p.relative_to(state)
        if p.is_file() and not p.name.startswith(".") and not (work / r).exists():
            _copy(p, work / r)
            restored.append(r)
    return restored


class Keeper:
    """Keeps ``work`` into ``state`` every ``every_s`` seconds from a daemon thread, and once more on
    ``stop``: a sitting that is cut off loses at most the last interval."""

    def __init__(self, work: Path, state: Path, every_s: float = 300.0) -> None:
        self.work, self.state, self.every_s = work, state, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="workstate-keeper", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                keep(self.work, self.state)
            except Exception as e:  # e.g. a file that vanished mid-copy: the next interval tries again
                print(f"warning: keeping {self.work} in {self.state} failed this time ({e})", file=sys.stderr)

    def start(self) -> Keeper:
        self._thread.start()
        return self

    def stop(self) -> list[Path]:
        self._stop.set()
        self._thread.join()
        return keep(self.work, self.state)
