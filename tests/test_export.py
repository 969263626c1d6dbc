"""`cli.py export`: ONNX from a spec, its weights, or a run folder; bad input refused cleanly."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import torch

from space.builder import build_model
from space.references import mobilenet_v3_small
from tests.cli_helpers import assert_one_line_error, run_cli


def _small():
    return replace(mobilenet_v3_small(), resolution=32, num_classes=10)


def test_export_with_weights_beside_spec(tmp_path):
    spec = _small()
    spec.save(tmp_path / "seed.json")
    torch.manual_seed(3)
    model = build_model(spec).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    torch.save(model.state_dict(), tmp_path / "seed.pt")
    out = run_cli("export", str(tmp_path / "seed.json"), "--onnx", str(tmp_path / "m.onnx"), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["weights"].endswith("seed.pt") and doc["max_abs_diff"] < 1e-4 and doc["max_rel_diff"] < 1e-5
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_export_run_folder(tmp_path):
    run = tmp_path / "run"
    _small().save(run / "netadapt.json")
    out = run_cli("export", str(run), "--onnx", str(tmp_path / "n.onnx"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "n.onnx").stat().st_size > 1000


def test_export_bad_input(tmp_path):
    spec = _small()
    spec.save(tmp_path / "a.json")
    other = replace(spec, num_classes=7)
    torch.save(build_model(other).state_dict(), tmp_path / "other.pt")
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"old")
    assert_one_line_error(run_cli("export", str(tmp_path / "a.json"), "--weights", str(tmp_path / "other.pt"),
                                  "--onnx", str(target)), "do not fit")
    assert target.read_bytes() == b"old"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(run_cli("export", str(tmp_path / "a.json"), "--weights", str(tmp_path / "junk.pt"),
                                  "--onnx", str(target)), "not a readable weights file")
    assert_one_line_error(run_cli("export", str(tmp_path), "--onnx", str(target)), "holds none of")
    assert_one_line_error(run_cli("export", "mobilenet_v9", "--onnx", str(target)), "mobilenet_v9")
    assert_one_line_error(run_cli("export", "mobilenet_v3_small", "--onnx", str(tmp_path)), "is a folder")
    assert target.read_bytes() == b"old"


def test_export_search_trial(tmp_path):
    import csv

    run = tmp_path / "run"
    run.mkdir()
    spec = _small()
    torch.save(build_model(spec).state_dict(), run / "w.pt")
    with (run / "trials.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["trial_id", "status", "arch", "weights"])
        w.writeheader()
        w.writerow({"trial_id": "abc_00001", "status": "ok", "arch": spec.to_json(indent=None), "weights": str(run / "w.pt")})
    out = run_cli("export", str(run), "--trial", "abc_00001", "--onnx", str(tmp_path / "t.onnx"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["weights"].endswith("w.pt")
    assert_one_line_error(run_cli("export", str(run), "--trial", "zzz", "--onnx", str(tmp_path / "u.onnx")), "zzz")
    assert not (tmp_path / "u.onnx").exists()


def test_export_as_trained_gives_the_network_the_weights_were_trained_as(tmp_path):
    """`--as-trained 8`: the digits' network a trial trains (early strides at 1), with its weights."""
    from space.proxy import proxy_spec

    spec = replace(mobilenet_v3_small(), num_classes=10, in_channels=1)
    trained, _ = proxy_spec(spec, 8)
    spec.save(tmp_path / "seed.json")
    torch.manual_seed(4)
    model = build_model(trained).eval()
    torch.save(model.state_dict(), tmp_path / "seed.pt")
    out = run_cli("export", str(tmp_path / "seed.json"), "--onnx", str(tmp_path / "m.onnx"), "--as-trained", "8", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)["as_trained"]
    assert (plan["total_stride"], plan["deploy_total_stride"], plan["final_map"]) == (4, 32, 2)
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), atol=1e-4)
    assert_one_line_error(run_cli("export", str(tmp_path / "seed.json"), "--onnx", str(tmp_path / "n.onnx"),
                                  "--as-trained", "8", "--resolution", "8"), "not allowed with")
    assert_one_line_error(run_cli("export", str(tmp_path / "seed.json"), "--onnx", str(tmp_path / "n.onnx"),
                                  "--as-trained", "1"), "too small")
    assert not (tmp_path / "n.onnx").exists()
