"""``cli.py search`` refuses bad input with one line and exit code 2, before starting any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "search", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("args,needle", [
    (["--target-ms", "0"], "target-ms"),
    (["--target-ms", "nan"], "target-ms"),
    (["--target-ms", "1e9"], "absurd"),
    (["--target-ms", "15", "--w", "0.3"], "<= 0"),
    (["--target-ms", "15", "--data", "/no/such/folder"], "/no/such/folder"),
    (["--target-ms", "15", "--device", "pixel-9", "--data-limit", "20"], "pixel-9"),
    (["--target-ms", "15", "--address", "127.0.0.1:1"], "--address"),
    (["--target-ms", "15", "--address", "nonsense"], "--address"),
    (["--target-ms", "15", "--resume", "--name", "nothing-here"], "--resume"),
    (["--target-ms", "15", "--name", "../escape"], "--name"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr
    assert needle in lines[-1], lines


def test_help_lists_the_options():
    r = _cli("--help")
    assert r.returncode == 0
    for opt in ("--target-ms", "--trials", "--epochs", "--data", "--w", "--alpha", "--beta", "--seed",
                "--concurrency", "--device", "--address", "--resume", "--name", "--json", "--measure"):
        assert opt in r.stdout
