"""ASHA's rungs and the correction of what the strategy learns from stopped trials (search.stopping)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from ray.tune.search import Searcher  # noqa: E402

from search.reward import Reward  # noqa: E402
from search.stopping import StopCorrection, asha_rungs, asha_scheduler, read_state  # noqa: E402
from space.searchspace import get_space  # noqa: E402


class Heard(Searcher):
    """A strategy that only remembers what it was told."""

    def __init__(self) -> None:
        super().__init__(metric="reward", mode="max")
        self.told: list[tuple[str, float | None, bool]] = []
        self.n = 0

    def suggest(self, trial_id):
        self.n += 1
        return {"n": self.n}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append((trial_id, None if error or not result else result["reward"], error))


RW = Reward(10.0)


def _report(epochs, acc, lat=10.0, **kw):
    return {"epochs": epochs, "accuracy": acc, "latency_ms": lat, "reward": RW(acc, lat), "status": "ok", **kw}


def test_rungs_are_those_of_tunes_asha():
    assert asha_rungs(0.5, 3, 2.0) == [0.5, 1.5]
    assert asha_rungs(0.5, 2, 2.0) == [0.5, 1.0]
    assert asha_rungs(1, 4, 2.0) == [1.0]
    sched = asha_scheduler(0.5, 2, 2.0)
    tune_rungs = sorted(m for m, _ in sched._brackets[0]._rungs)
    assert [m for m in tune_rungs if m < 2.0] == asha_rungs(0.5, 2, 2.0)


def test_stopped_trials_learn_the_projected_reward_once_a_finished_trial_gives_the_gain(tmp_path):
    inner = Heard()
    s = StopCorrection(inner, full_epochs=2.0, reward=RW, state_path=tmp_path / "stopping.json")
    for t in "abcd":
        s.suggest(t)
    s.on_trial_result("a", _report(0.5, 0.40))
    s.on_trial_complete("b", _report(0.5, 0.30))  # stopped at the first rung: no finished trial yet
    assert inner.told == [] and "b" in s.held
    s.on_trial_complete("a", _report(2.0, 0.80))  # finished: gained 0.40 from 0.5 epochs
    assert inner.told[0] == ("a", pytest.approx(RW(0.80, 10.0)), False)
    assert inner.told[1] == ("b", pytest.approx(RW(0.70, 10.0)), False)  # 0.30 + 0.40
    assert s.fed["b"] == {"learned_reward": pytest.approx(RW(0.70, 10.0)), "estimated_accuracy": pytest.approx(0.70),
                          "corrected": True}
    s.on_trial_complete("c", error=True)  # failures pass through as they are
    assert inner.told[2] == ("c", None, True)
    # Stopped at a rung no finished trial reported at: held while a trial runs, then sent uncorrected.
    s.on_trial_complete("d", _report(1.0, 0.50))
    assert inner.told[-1] == ("d", pytest.approx(RW(0.50, 10.0)), False) and s.fed["d"]["corrected"] is False
    assert not s.held and not s.live
    # Every trial was heard exactly once, and the state is on disk for --resume.
    assert sorted(t for t, _, _ in inner.told) == ["a", "b", "c", "d"]
    again = StopCorrection(Heard(), 2.0, RW, state_path=tmp_path / "stopping.json")
    again.set_state(read_state(tmp_path / "stopping.json"))
    assert again.fed == s.fed and again.points == s.points


def test_the_projection_keeps_the_order_asha_saw_at_the_rung():
    inner = Heard()
    s = StopCorrection(inner, 2.0, RW)
    for t in ("a", "b", "x", "y"):
        s.suggest(t)
    for t, rung, final in (("a", 0.40, 0.80), ("b", 0.50, 0.70)):
        s.on_trial_result(t, _report(0.5, rung))
        s.on_trial_complete(t, _report(2.0, final))
    assert s.gain(0.5) == pytest.approx(0.30)  # median of 0.40 and 0.20
    s.on_trial_complete("x", _report(0.5, 0.35, lat=20.0))
    s.on_trial_complete("y", _report(0.5, 0.20, lat=5.0))
    assert s.fed["x"]["estimated_accuracy"] == pytest.approx(0.65)
    assert s.fed["y"]["estimated_accuracy"] == pytest.approx(0.50)
    assert s.fed["y"]["learned_reward"] == pytest.approx(RW(0.50, 5.0))  # its own latency term


class TinyTask:
    """The tiny space (12 networks), every network 10 ms."""

    space = get_space("tiny")

    def candidate(self, tokens):
        return {"latency_ms": 10.0}

    def shared(self):
        return {}


def test_resume_keeps_a_held_trial_held_and_hands_out_only_what_was_running(tmp_path):
    from search.strategies import make_searcher

    def fresh():
        inner = make_searcher("random", TinyTask(), seed=1, window=2, state_path=tmp_path / "searcher.json")
        return StopCorrection(inner, 2.0, RW, state_path=tmp_path / "stopping.json")

    s = fresh()
    a, b = s.suggest("a"), s.suggest("b")
    s.on_trial_result("a", _report(0.5, 0.40))
    s.on_trial_complete("b", _report(0.5, 0.30))  # stopped by ASHA while a runs: held for an estimate
    assert "b" in s.held and s.finished == 1 and s.searcher.records == []
    # The run stops (Ctrl-C or a kill) with a still running; a new sitting builds everything from the JSON.
    t = fresh()
    t.resume()
    assert t.searcher.replay == ["a"] and list(t.held) == ["b"] and t.live == [] and t.finished == 1
    x = t.suggest("x")  # nothing runs that could give b's estimate: b goes uncorrected, then a is handed out again
    assert (x["sample"], x["tokens"]) == (a["sample"], a["tokens"]) and not t.held
    assert [(r["trial_id"], r["sample"]) for r in t.searcher.records] == [("b", b["sample"])]
    assert t.fed["b"]["corrected"] is False and t.searcher.records[0]["reward_at_stop"] == pytest.approx(RW(0.30, 10.0))
    t.on_trial_complete("x", _report(2.0, 0.80))
    t.searcher.hear_all()
    assert t.finished == 2 and t.searcher.samples_heard == 2 and t.searcher.live == {}
