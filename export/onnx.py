"""ArchSpec (+ trained weights) -> a runnable ONNX model, checked against torch with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.errors import UserError
from space.archspec import ArchSpec

OPSET = 17
MAX_REL_DIFF = 1e-3


def export_onnx(spec: ArchSpec, out: str | os.PathLike, weights: str | os.PathLike | None = None,
                batch: int = 1, check: bool = True, seed: int = 0) -> dict:
    """Export ``spec`` (with ``weights`` when given, else seeded random weights) to ``out``.

    The model is written to a temporary file and renamed, so a failed export leaves ``out`` as
    it was. With ``check``, onnxruntime runs the file on a random input and its output is
    compared with torch's: the largest absolute difference and that difference relative to the
    largest output are returned, and a relative difference above 1e-3 is refused (``out`` is then
    left as it was). The relative figure is the one to read: a network trained on small images
    and fed a 224x224 random input can have logits of 1e8, where float32 rounding alone differs
    by hundreds.
    """
    import torch

    from space.builder import build_model
    from train.weights import load_into

    torch.manual_seed(seed)
    model = build_model(spec).eval()
    if weights is not None:
        load_into(model, weights)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(seed))
    with atomic_path(out) as tmp:
        # The TorchScript exporter (dynamo=False) is ~30x faster than the dynamo one for these
        # small graphs; its deprecation warning and progress chatter are silenced.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), tmp, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        result = {"onnx": str(out), "opset": OPSET, "input_shape": list(x.shape), "weights": str(weights) if weights else None}
        if check:
            import onnxruntime as ort

            sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
            got = sess.run(None, {"input": x.numpy()})[0]
            with torch.no_grad():
                want = model(x).numpy()
            diff = float(np.max(np.abs(got - want)))
            rel = diff / max(float(np.max(np.abs(want))), 1e-12)
            result["max_abs_diff"], result["max_rel_diff"] = diff, rel
            if not rel <= MAX_REL_DIFF:
                raise UserError(f"{out}: onnxruntime's output differs from torch's by {rel:.1e} of the largest "
                                f"logit (limit {MAX_REL_DIFF:g}); nothing written. Report this network's ArchSpec, "
                                "or pass --no-check to write it anyway")
    return result
