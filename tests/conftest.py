"""Shared test set-up: every test writes under its own temporary results folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_RESULTS", str(tmp_path / "results"))
    yield
