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


def _searcher(tmp_path, predictor, window: int, name: str = "searcher.json") -> ControllerSearcher:
    task = NetworkTask(_settings(tmp_path), num_classes=10, in_channels=1, device="tiny-cpu", predictor=predictor)
    return ControllerSearcher(task, ControllerConfig(batch_size=2), state_path=tmp_path / name, window=window)


def test_searcher_suggests_and_feeds_back_in_sample_order(tmp_path, tiny_predictor):
    space = get_space("mnasnet")
    s = _searcher(tmp_path, tiny_predictor, window=2)
    cfgs = {tid: s.suggest(tid) for tid in ("a", "b")}
    for cfg in cfgs.values():
        assert cfg["tokens"] == space.canonical(cfg["tokens"])
        spec = space.decode(cfg["tokens"], resolution=32, num_classes=10, in_channels=1)
        assert cfg["latency_ms"] == pytest.approx(tiny_predictor.predict(spec))
    assert s.suggest("c") is None  # two trials out: the third waits for the first one's reward
    s.on_trial_complete("b", {"reward": 0.5, "status": "ok", "accuracy": 0.5})  # the younger one ends first ...
    assert s.suggest("c") is None and s.controller.feedbacks == 0  # ... and the third still waits for the older
    s.on_trial_complete("a", error=True)  # a crashed trial counts as reward 0 and the search goes on
    assert s.suggest("c")["sample"] == 2
    assert s.controller.feedbacks == 1 and s.samples_heard == 1  # sample 2 is drawn having heard sample 0 only
    assert [(r["trial_id"], r["status"], r["reward"]) for r in s.records] == [("b", "ok", 0.5), ("a", "error", 0.0)]
    assert s.records[0]["accuracy"] == 0.5
    s.hear_all()  # the end of a budget: every reward that arrived
    assert s.controller.feedbacks == 2 and s.controller.updates == 1
    assert s.controller.history[0]["mean_reward"] == pytest.approx(0.25)


def test_the_networks_drawn_do_not_depend_on_when_trials_finish(tmp_path, tiny_predictor):
    rewards = {"a": 0.1, "b": 0.4, "c": 0.2, "d": 0.3, "e": 0.25}

    def done(s, *tids):
        for t in tids:
            s.on_trial_complete(t, {"reward": rewards[t], "status": "ok"})

    # One run: trials end in the order they started, Tune asks for the next one at once.
    one = _searcher(tmp_path, tiny_predictor, window=2, name="one.json")
    one.suggest("a"), one.suggest("b")
    done(one, "a")
    one.suggest("c")
    done(one, "b")
    one.suggest("d")
    done(one, "c", "d")
    one.suggest("e")
    # Another: the younger trial ends first, two at once, and Tune asks late.
    two = _searcher(tmp_path, tiny_predictor, window=2, name="two.json")
    two.suggest("a"), two.suggest("b")
    done(two, "b")
    assert two.suggest("c") is None
    done(two, "a")
    two.suggest("c")
    done(two, "c")
    assert two.suggest("d") is not None  # b's reward was there: sample 3 is drawn after update 1, as in `one`
    done(two, "d")
    two.suggest("e")
    for t in "abcde":
        assert one.suggested[t] == two.suggested[t], t
    assert one.controller.history == two.controller.history and one.controller.updates == 1


def test_resume_hands_out_what_was_running_again_then_goes_on(tmp_path, tiny_predictor):
    s = _searcher(tmp_path, tiny_predictor, window=3)
    cfgs = {tid: s.suggest(tid) for tid in ("a", "b", "c")}
    s.on_trial_complete("a", {"reward": 0.5, "status": "ok"})
    # The run stops here (Ctrl-C or a kill): b and c were running. A new searcher continues from searcher.json.
    t = _searcher(tmp_path, tiny_predictor, window=3)
    t.resume()
    assert t.replay == ["b", "c"] and t.controller.feedbacks == 0 and [r["trial_id"] for r in t.records] == ["a"]
    x, y = t.suggest("x"), t.suggest("y")
    assert (x["sample"], x["tokens"]) == (cfgs["b"]["sample"], cfgs["b"]["tokens"])
    assert (y["sample"], y["tokens"]) == (cfgs["c"]["sample"], cfgs["c"]["tokens"])
    t.on_trial_complete("x", {"reward": float("nan")})
    assert t.records[-1]["reward"] == 0.0 and not math.isnan(t.records[-1]["reward"])
    t.on_trial_complete("y", {"reward": 0.25})
    s.on_trial_complete("b", {"reward": 0.0})
    s.on_trial_complete("c", {"reward": 0.25})
    assert s.suggest("d")["tokens"] == t.suggest("z")["tokens"]  # same controller state, same next sample
