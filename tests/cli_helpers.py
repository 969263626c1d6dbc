"""Run ``cli.py`` (in a subprocess, or in this process for speed) and check the one-line error contract."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env=env)


def run_main(*args: str) -> subprocess.CompletedProcess:
    """``cli.main(args)`` in this process, with what it prints captured as a subprocess would see it:
    argparse's exits become the return code, and warnings (which pytest would otherwise record
    silently) are appended to stderr, where a user would see them."""
    import torch

    import cli

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()  # commands may change it; later tests must not inherit that
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli.main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception:  # what the interpreter does with an uncaught exception: traceback, exit 1
            traceback.print_exc()
            code = 1
    torch.set_num_threads(threads)
    warned = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return subprocess.CompletedProcess(["cli.py", *args], code, out.getvalue(), err.getvalue() + warned)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, exactly one stderr line starting with 'error: ', no traceback, naming ``needles``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
