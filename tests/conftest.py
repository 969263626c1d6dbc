"""Shared test set-up: every test writes under its own temporary results folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_RESULTS", str(tmp_path / "results"))
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a whole module (``pytestmark = pytest.mark.usefixtures(...)``): on a
    busy 2-core machine more threads only spin-wait for each other, and results are reproducible
    for a given thread count. Module scope, so module-scoped runs and fixtures get it too."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_predictor(tmp_path_factory):
    """A real latency predictor measured on this machine (mnasnet space at 32x32, small table).

    Use it on ``get_space("mnasnet").decode(tokens, resolution=32, ...)`` specs and pruned
    variants of them; ``tiny_predictor.predict(spec)`` returns milliseconds.
    """
    from latency.testing import build_tiny_predictor

    return build_tiny_predictor(tmp_path_factory.mktemp("tiny_latency"))
