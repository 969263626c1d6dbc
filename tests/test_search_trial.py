"""The trial (proxy training + scoring) and the Tune searcher, without starting Ray."""

from __future__ import annotations

import math

import pytest
import torch

from search.controller import ControllerConfig
from search.reward import reward
from search.strategies.controller import ControllerSearcher
from search.task import NetworkTask
from search.trial import TrialSettings, run_candidate
from space.searchspace import get_space

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_data():
    from train.data import load_data

    return load_data("digits", seed=0, limit=64, eval_limit=40)


def _settings(tmp_path, **kw) -> TrialSettings:
    base = dict(space="mnasnet", epochs=1.0, batch_size=64, lr=0.02, latency_resolution=32, target_ms=2.0)
    return TrialSettings(**{**base, **kw})


def test_trial_measures_latency_when_asked(tmp_path, tiny_data):
    tokens = get_space("mnasnet").sample(0)
    out = run_candidate({"tokens": tokens, "latency_ms": 123.0, "settings": _settings(tmp_path, measure=True).to_dict()},
                        tiny_data)
    assert out["status"] == "ok" and out["steps"] == 1 and 0 <= out["accuracy"] <= 1
    assert 0 < out["measured_ms"] < 100 and out["latency_ms"] == out["measured_ms"]  # measured replaces predicted
    assert out["reward"] == pytest.approx(reward(out["accuracy"], out["latency_ms"], 2.0))
    # what was trained: the proxy network at the data's 8 px, strides reduced to keep a 2x2 last map
    assert (out["train_resolution"], out["final_map"]) == (8, 2) and out["proxy_strides"].startswith("stem,layers[")
    # The weights come back in the result (the driver writes them; on a cluster the trial's disk is elsewhere).
    import io

    from search.trial import WEIGHTS_BLOB

    state = torch.load(io.BytesIO(out[WEIGHTS_BLOB]), weights_only=True)
    spec = get_space("mnasnet").decode(tokens, resolution=8, num_classes=10, in_channels=1)
    from space.builder import build_model

    build_model(spec).load_state_dict(state)  # the deployment strides: the proxy's weights fit unchanged
    assert not any(tmp_path.rglob("*.pt")) and "weights" not in out


def test_searcher_suggests_feeds_back_and_round_trips(tmp_path, tiny_predictor):
    space = get_space("mnasnet")
    task = NetworkTask(_settings(tmp_path), num_classes=10, in_channels=1, device="tiny-cpu", predictor=tiny_predictor)
    s = ControllerSearcher(task, ControllerConfig(batch_size=2))
    cfgs = {tid: s.suggest(tid) for tid in ("a", "b", "c")}
    for cfg in cfgs.values():
        assert cfg["tokens"] == space.canonical(cfg["tokens"])
        spec = space.decode(cfg["tokens"], resolution=32, num_classes=10, in_channels=1)
        assert cfg["latency_ms"] == pytest.approx(tiny_predictor.predict(spec))
    s.on_trial_complete("a", {"reward": 0.5, "status": "ok"})
    s.on_trial_complete("b", error=True)  # a crashed trial counts as reward 0 and the search goes on
    assert s.controller.updates == 1 and s.controller.history[0]["mean_reward"] == pytest.approx(0.25)
    path = tmp_path / "searcher.pkl"
    s.save(str(path))
    t = ControllerSearcher(task, ControllerConfig(batch_size=2))
    t.restore(str(path))
    assert list(t.live) == ["c"] and [r["trial_id"] for r in t.records] == ["a", "b"]
    t.on_trial_complete("c", {"reward": float("nan")})
    assert t.records[-1]["reward"] == 0.0 and not math.isnan(t.records[-1]["reward"])
    assert s.suggest("d")["tokens"] == t.suggest("d")["tokens"]  # same controller state, same next sample
