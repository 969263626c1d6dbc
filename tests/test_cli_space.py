"""`cli.py space ...` end to end in a subprocess: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import assert_one_line_error, run_cli


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "space" in out.stdout


@pytest.mark.parametrize("name,params", [("mobilenet_v3_large", 5483032), ("mobilenet_v3_small", 2542856),
                                         ("mobilenet_v2", 3504872)])
def test_show_json_params(name, params):
    out = run_cli("space", "show", name, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["params"] == params and doc["macs"] > 0 and len(doc["layers"]) > 10


def test_show_table_and_overrides():
    out = run_cli("space", "show", "mobilenet_v2", "--resolution", "32", "--classes", "10")
    assert out.returncode == 0
    assert "32x32x3 -> 10 classes" in out.stdout and "params 2,236,682" in out.stdout


def test_sample_writes_valid_specs(tmp_path):
    out = run_cli("space", "sample", "--n", "3", "--seed", "5", "--out", str(tmp_path / "s"), "--json")
    assert out.returncode == 0, out.stderr
    files = json.loads(out.stdout)["files"]
    assert len(files) == 3
    shown = run_cli("space", "show", files[0], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["params"] > 0
    again = run_cli("space", "sample", "--n", "3", "--seed", "5", "--out", str(tmp_path / "t"), "--json")
    assert Path(json.loads(again.stdout)["files"][2]).read_text() == Path(files[2]).read_text()


def test_bad_specs_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"stem": {"out_ch": 16}, "layers": [{"op": "warp", "kernel": 3, "stride": 1, '
                   '"in_ch": 16, "out_ch": 16, "exp_ch": 16}]}')
    assert_one_line_error(run_cli("space", "show", str(bad)), "layers[0].op", "warp")
    trunc = tmp_path / "trunc.json"
    trunc.write_text('{"stem": {"out_ch": 16')
    assert_one_line_error(run_cli("space", "show", str(trunc)), "not valid JSON")
    assert_one_line_error(run_cli("space", "show", str(tmp_path / "none.json")), "no such file")
    assert_one_line_error(run_cli("space", "show", "resnet50"), "resnet50")
    assert_one_line_error(run_cli("space", "sample", "--space", "nas", "--out", str(tmp_path)), "unknown search space")


def test_sample_out_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    assert_one_line_error(run_cli("space", "sample", "--out", str(f)), "not a folder")
    assert f.read_text() == "keep me"


def test_argparse_rejects_non_positive():
    out = run_cli("space", "sample", "--n", "0", "--out", "x")
    assert out.returncode == 2 and "must be >= 1" in out.stderr and "Traceback" not in out.stderr


def test_list_names_every_space_in_one_aligned_column():
    from space.searchspace import SPACES

    out = run_cli("space", "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    rows = lines[1:1 + len(SPACES)]
    assert [r.split()[0] for r in rows] == list(SPACES)
    assert len({r.index(" decisions,") for r in rows if int(r.split()[1]) >= 10}) == 1  # two-digit counts align
