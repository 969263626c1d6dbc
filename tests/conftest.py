"""Shared test set-up: every test writes under its own temporary results folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_RESULTS", str(tmp_path / "results"))
    yield


@pytest.fixture(scope="session")
def tiny_predictor(tmp_path_factory):
    """A real latency predictor measured on this machine (mnasnet space at 32x32, small table).

    Use it on ``get_space("mnasnet").decode(tokens, resolution=32, ...)`` specs and pruned
    variants of them; ``tiny_predictor.predict(spec)`` returns milliseconds.
    """
    from latency.testing import build_tiny_predictor

    return build_tiny_predictor(tmp_path_factory.mktemp("tiny_latency"))
