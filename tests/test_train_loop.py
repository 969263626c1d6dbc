"""Training loop, evaluation, BN re-estimation, weights files and the shared CLI options."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from common.errors import UserError
from space.archspec import ArchSpec, Head, Layer, Stem
from space.builder import build_model
from train.cli_args import add_data_args, data_from_args
from train.data import load_data
from train.loop import TrainingDiverged, evaluate, lr_at, recalibrate_bn, train_model
from train.weights import load_into, load_weights, save_weights


def small_spec(num_classes: int = 10, in_channels: int = 1) -> ArchSpec:
    return ArchSpec(
        Stem(16, 3, 1, "relu"),
        (
            Layer("mbconv", 3, 2, 16, 24, 48, 12, "hswish"),
            Layer("mbconv", 3, 1, 24, 24, 72, 0, "relu", residual=True),
            Layer("dwconv", 3, 1, 24, 32, 24, 0, "relu"),
        ),
        Head(64, "hswish", "avg", 0), resolution=8, in_channels=in_channels, num_classes=num_classes,
        dropout=0.0, name="small",
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_a_few_epochs_on_digits_learn_and_are_deterministic(digits):
    torch.manual_seed(123)
    outer = torch.rand(1)
    a, b = build_model(small_spec()), build_model(small_spec())
    b.load_state_dict(a.state_dict())
    ra = train_model(a, digits, epochs=3, batch_size=64, seed=7)
    rb = train_model(b, digits, epochs=3, batch_size=64, seed=7)
    assert ra.accuracy > 0.7  # chance is 0.1
    assert ra.steps == 3 * math.ceil(len(digits.train) / 64) and ra.epochs == pytest.approx(3)
    assert ra.accuracy == rb.accuracy and ra.loss == rb.loss
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    # the caller's random stream is left alone
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), outer)
    assert 0.0 <= evaluate(a, digits, "test") <= 1.0 and evaluate(a, digits, "test") > 0.7


def test_steps_option_and_progress_callback(digits):
    seen = []
    r = train_model(build_model(small_spec()), digits, steps=6, batch_size=32, seed=0,
                    progress=seen.append, log_every=2, eval_split=None)
    assert r.steps == 6 and [p.step for p in seen] == [2, 4, 6]
    assert all(p.steps == 6 and math.isfinite(p.loss) for p in seen)
    assert math.isnan(r.accuracy)
    with pytest.raises(ValueError):
        train_model(build_model(small_spec()), digits)


def test_nan_loss_raises_training_diverged(digits):
    m = build_model(small_spec())
    with torch.no_grad():
        m.head.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="step 1"):
        train_model(m, digits, steps=3)


def test_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.0)


def test_bn_recalibration_gives_exact_batch_statistics(digits):
    m = build_model(small_spec())
    n = len(digits.train)
    recalibrate_bn(m, digits, batches=1, batch_size=n)
    x = digits.prepare(digits.train.x)
    with torch.no_grad():
        conv_out = m.stem.conv(x)
    assert torch.allclose(m.stem.bn1.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(m.stem.bn1.running_var, conv_out.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert m.stem.bn1.momentum == pytest.approx(0.01)


def test_weights_round_trip_and_mismatch(tmp_path):
    m = build_model(small_spec())
    p = save_weights(m, tmp_path / "w" / "seed.pt")
    assert [q.name for q in p.parent.iterdir()] == ["seed.pt"]
    other = load_into(build_model(small_spec()), p)
    for va, vb in zip(m.state_dict().values(), other.state_dict().values()):
        assert torch.equal(va, vb)
    with pytest.raises(UserError, match="do not fit the network: head.classifier.weight"):
        load_into(build_model(small_spec(num_classes=7)), p)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable weights file"):
        load_weights(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="no such weights file"):
        load_weights(tmp_path / "nope.pt")


def test_shared_cli_options():
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    args = parser.parse_args(["--data", "digits", "--data-limit", "40", "--eval-limit", "10",
                              "--train-resolution", "12", "--batch-size", "16"])
    d = data_from_args(args, progress=False)
    assert (len(d.train), len(d.val), d.resolution, args.batch_size, args.split_seed) == (40, 10, 12, 16, 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--data-limit", "0"])


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("rmsprop", 0.01)])
def test_other_optimizers_train_too(digits, optimizer, lr):
    r = train_model(build_model(small_spec()), digits, epochs=2, batch_size=64, lr=lr, optimizer=optimizer, seed=0)
    assert r.accuracy > 0.3
    with pytest.raises(ValueError, match="unknown optimizer"):
        train_model(build_model(small_spec()), digits, steps=1, optimizer="lbfgs")


def test_a_report_for_a_rung_has_trained_at_least_that_far(digits):
    """ASHA decides at a rung only once the reported epochs reach it: 17 steps an epoch (1,078 images,
    batch 64), so half an epoch is step 9 (0.53 epochs), not step 8 (0.47), the nearest."""
    from train.loop import Training

    run = Training(build_model(small_spec()), digits, epochs=2, batch_size=64, seed=0)
    assert run.per_epoch == 17 and run.steps_for(0.5) == 9 and run.steps_for(1.0) == 17 and run.steps_for(9) == 34
    for rung in (0.5, 1.0, 1.5, 0.25):
        steps = run.steps_for(rung)
        assert steps / run.per_epoch >= rung > (steps - 1) / run.per_epoch


def test_training_in_pieces_scored_along_the_way_ends_as_one_run(digits):
    from train.loop import Training

    a, b = build_model(small_spec()), build_model(small_spec())
    b.load_state_dict(a.state_dict())
    whole = train_model(a, digits, epochs=2, batch_size=64, seed=3)
    run = Training(b, digits, epochs=2, batch_size=64, seed=3)
    seen = []
    for e in (0.5, 1.0, 1.5):
        run.advance(run.steps_for(e))
        assert run.epochs == pytest.approx(run.steps_for(e) / run.per_epoch)
        seen.append(run.score("val")[0])
    pieces = run.finish()
    assert pieces.accuracy == whole.accuracy and pieces.loss == whole.loss and pieces.steps == whole.steps
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert 0.1 < seen[-1] and all(0.0 <= s <= 1.0 for s in seen)


def test_a_training_killed_part_way_goes_on_from_its_kept_state_and_ends_as_one_run(digits, tmp_path):
    """The kept state carries the weights, the optimizer, the step, the losses and both random streams
    (the batch order and augmentation, and dropout): killed in its third epoch and taken up by a fresh
    process's network, a training ends bit for bit as one that ran through."""
    import dataclasses

    from train.loop import Training, finish_keeping_state, resume

    spec = dataclasses.replace(small_spec(), dropout=0.3)
    torch.manual_seed(0)
    a = build_model(spec)
    b, c = build_model(spec), build_model(spec)
    b.load_state_dict(a.state_dict())
    settings = dict(epochs=3, batch_size=64, seed=4, augment=True)
    whole = train_model(a, digits, **settings)
    path = tmp_path / "kept" / "run.pt"

    class Killed(Exception):
        pass

    def kill(p):
        if p.step == 2 * run.per_epoch + 3:
            raise Killed

    run = Training(b, digits, progress=kill, log_every=1, **settings)
    assert not resume(run, path)
    with pytest.raises(Killed):
        finish_keeping_state(run, path)
    assert path.exists() and not list(path.parent.glob(".*"))  # the state and no temp file
    state = torch.load(path, weights_only=True)
    assert state["step"] == 2 * run.per_epoch and len(state["losses"]) == state["step"]

    again = Training(c, digits, **settings)  # another network's initial weights: all come from the state
    assert resume(again, path) and again.step == 2 * again.per_epoch
    pieces = finish_keeping_state(again, path)
    assert not path.exists()
    assert pieces.accuracy == whole.accuracy and pieces.loss == whole.loss and pieces.steps == whole.steps
    for (k, va), vb in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va, vb), k

    # within an epoch there is no state to keep; another training's state is refused
    run = Training(build_model(spec), digits, **settings)
    run.advance(5)
    with pytest.raises(ValueError, match="epoch's end"):
        run.state_dict()
    other = Training(build_model(spec), digits, **{**settings, "seed": 5})
    with pytest.raises(ValueError, match="another training"):
        other.load_state_dict(state)
    head = dataclasses.fields(spec.head)[0].name  # the head's width: another network of the same training
    wider = dataclasses.replace(spec, head=dataclasses.replace(spec.head, **{head: 2 * getattr(spec.head, head)}))
    with pytest.raises(ValueError, match="another network"):
        Training(build_model(wider), digits, **settings).load_state_dict(state)

    # a file that holds no state, even an empty one (torch.load's EOFError has no message), is a ValueError
    for junk in (b"not a state", b""):
        bad = tmp_path / "junk.pt"
        bad.write_bytes(junk)
        with pytest.raises(ValueError, match="no readable training state"):
            resume(run, bad)
