"""Ctrl-C for long runs: the first SIGINT (or SIGTERM) asks the run to stop cleanly, the second stops it
at once.

A search or a NetAdapt run may go on for hours; stopping it must not cost what it has done. Inside
:class:`Interruption`, the first signal only sets :attr:`Interruption.requested` (and says so on
stderr): the run stops launching work, records what was running as interrupted, writes its results
and returns; the command then prints how to continue and exits with 130. A second signal raises
:class:`KeyboardInterrupt` wherever the program is: every file a run writes is written to a temporary
name and renamed (:mod:`common.atomic`), so stopping between two writes leaves each file whole, and
the run's state is the last one written.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised by a run's own code where it stops cleanly after the first signal (e.g. mid-training)."""


class Interruption:
    """Context manager: within it, the first SIGINT/SIGTERM sets :attr:`requested`, the second raises
    :class:`KeyboardInterrupt`. Outside the main thread (where Python cannot set handlers) it does nothing."""

    def __init__(self, what: str = "the run") -> None:
        self.what = what
        self.requested = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interruption:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()
        name = signal.Signals(signum).name
        print(f"{name}: stopping {self.what} after recording what is running (press Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def check(self) -> None:
        """Raise :class:`Interrupted` when a stop was asked for (for loops that stop between steps)."""
        if self.requested.is_set():
            raise Interrupted


def until_stopped(stop: threading.Event, then: Callable[[Any], None] | None = None,
                  every: int = 1) -> Callable[[Any], None]:
    """A training ``progress`` callback (called every step, ``p.step`` of ``p.steps``) that raises
    :class:`Interrupted` once ``stop`` is set, and calls ``then`` every ``every`` steps."""

    def progress(p: Any) -> None:
        if stop.is_set():
            raise Interrupted
        if then is not None and (p.step % every == 0 or p.step == p.steps):
            then(p)

    return progress
