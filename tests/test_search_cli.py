"""``cli.py search`` refuses bad input with one line and exit code 2, before starting any work."""

from __future__ import annotations

import pytest

import cli


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["search", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


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
def test_bad_input_is_one_line_exit_2(capsys, args, needle):
    code, _, err = _cli(capsys, *args)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert needle in lines[-1], lines


def test_help_lists_the_options(capsys):
    code, out, _ = _cli(capsys, "--help")
    assert code == 0
    for opt in ("--target-ms", "--trials", "--epochs", "--data", "--w", "--alpha", "--beta", "--seed",
                "--concurrency", "--device", "--address", "--resume", "--name", "--json", "--measure"):
        assert opt in out
