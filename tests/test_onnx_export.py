"""Built networks export to ONNX and onnxruntime agrees with torch."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import torch

from space.builder import build_model
from space.references import mobilenet_v3_small
from space.searchspace import get_space


def _export_and_compare(spec, tmp_path, res):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    # Non-trivial BN statistics so the comparison exercises them.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, spec.in_channels, res, res)
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_sample_matches_onnxruntime(tmp_path):
    space = get_space("mnasnet")
    for seed in (0, 1):
        _export_and_compare(space.decode(space.sample(seed), resolution=64, num_classes=10), tmp_path, 64)


def test_reference_matches_onnxruntime(tmp_path):
    _export_and_compare(mobilenet_v3_small(), tmp_path, 96)
