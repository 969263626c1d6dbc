"""``status.json`` in a run folder: whether the run is running, finished, interrupted or stopped, and by
which process, so that ``cli.py runs`` can say what became of a run left alone overnight and
``--resume`` does not start a second process on a run that is still going.

A run that was killed outright (SIGKILL, power loss, the machine's OOM killer) cannot say so itself:
its file still says ``running`` but names a process that no longer exists, which :func:`current`
reports as ``killed``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_text
from common.errors import UserError

FILE = "status.json"


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell it from a later one with its id."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _start_ticks(pid) in (None, start)


def mark(run_dir: Path, status: str, **extra: Any) -> None:
    """Record ``status`` (running, finished, interrupted, stopped, failed) for this process."""
    pid = os.getpid()
    doc = {"status": status, "pid": pid, "pid_start": _start_ticks(pid), "host": socket.gethostname(),
           "updated": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    atomic_write_text(Path(run_dir) / FILE, json.dumps(doc, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON object file, or {} when it is missing, unreadable or not an object (for listings
    that must go on past a broken run)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read(run_dir: Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / FILE) or None


def current(run_dir: Path) -> str:
    """The run's status now: what it recorded, ``killed`` for a run whose process died while running,
    ``running on HOST`` for one recorded as running by another machine, ``unknown`` without a record."""
    doc = read(run_dir)
    if doc is None:
        return "unknown"
    status = str(doc.get("status", "unknown"))
    if status != "running":
        return status
    if doc.get("host") != socket.gethostname():
        return f"running on {doc.get('host')}"
    return "running" if _alive(int(doc.get("pid", -1)), doc.get("pid_start")) else "killed"


def refuse_if_running(run_dir: Path) -> None:
    """One line instead of a second process writing into a run that another one is running."""
    now = current(run_dir)
    if now.startswith("running"):
        doc = read(run_dir) or {}
        raise UserError(f"--resume: {run_dir} is {now} (process {doc.get('pid')}); stop it first (Ctrl-C in its "
                        "terminal) or wait for it to end")
