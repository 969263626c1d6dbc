"""The NetAdapt loop (Yang et al. 2018, Algorithm 1) in MobileNetV3's variant (Howard et al. 2019).

Starting from a trained seed network, iteration i cuts ``delta_i = delta * seed_latency *
decay ** (i - 1)`` off the current network's *measured* latency (never more than what is left to
``steer.AIM_BELOW`` under the target; halved while no single group can cut it). The predictor sizes
the cut: for every group it finds the fewest filters to remove so that the predicted latency falls by
``delta_i`` over the measured ms one predicted ms buys: the current network's measured / predicted
ratio until the measured latency has fallen far enough to fit a slope through the kept networks
(:func:`netadapt.steer.ms_per_predicted_ms`). Each proposal is trimmed
(keeping the most important filters, :mod:`netadapt.surgery`), fine-tuned for ``T`` steps (every
proposal of an iteration on the same batches) and scored on the validation split. Proposals of one
iteration run in parallel as Ray tasks; a proposal that fails is skipped. The kept proposal is the
most accurate one (NetAdapt) or the one with the largest accuracy change per ms saved,
dAcc / |dLatency| (MobileNetV3); it is measured with onnxruntime, and the loop stops when that
measurement meets the target. Then the result is fine-tuned for longer.

Every finished iteration is a checkpoint (ArchSpec JSON + weights + ``state.json``), so a run
that stops can be resumed from its last finished iteration. A stop asked for (the first Ctrl-C sets
``stop``) ends the run at once where nothing finished is lost: an iteration's proposals are dropped
and run again on ``--resume``, a seed training or the final fine-tune starts again from its beginning;
:class:`common.interrupt.Interrupted` is raised after the tables are written.

This module is long because the loop, its resume and its clean stop are one sequence of steps, each
of which must leave a state that ``--resume`` continues.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import UserError
from common.interrupt import Interrupted, until_stopped
from netadapt import outputs, steer
from netadapt.compare import Scored, gap, score
from netadapt.config import NetAdaptConfig
from netadapt.outputs import HISTORY_COLUMNS, PROPOSAL_COLUMNS, frame, plot_progress, read_rows, write_csv, write_json
from netadapt.proposals import Proposal, make_proposals, smallest_network
from netadapt.resource import predict_ms
from netadapt.runner import ProposalRunner, model_for_data, per_image_correct
from space.archspec import ArchSpec


class SeedWithinTarget(UserError):
    """The target is not below the seed's latency: nothing to trim. ``seed_ms`` is the figure it was
    compared with (``basis`` "measured" or "predicted"), so that a caller can keep the seed as it is
    without measuring it again."""

    def __init__(self, message: str, seed_ms: float, basis: str) -> None:
        super().__init__(message)
        self.seed_ms, self.basis = seed_ms, basis


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- the run -------------------------------------------------------------------------------------

@dataclass
class RunState:
    iteration: int
    spec_path: str
    weights_path: str
    predicted_ms: float
    accuracy: float
    seed_predicted_ms: float
    seed_accuracy: float
    target_ms: float
    phase: str = "adapt"      # adapt -> final -> done
    stop_reason: str = ""
    # Measured with onnxruntime (None when the run steers by the prediction alone): the current
    # network, and the seed. With measurements the target is a measured latency.
    measured_ms: float | None = None
    seed_measured_ms: float | None = None

    @property
    def latency_ms(self) -> float:
        """What the run steers by: the current network's measured latency, else its predicted one."""
        return self.measured_ms if self.measured_ms is not None else self.predicted_ms



class NetAdaptRun:
    """A NetAdapt run in ``run_dir``; :meth:`run` goes from the seed (or the last checkpoint) to the end."""

    def __init__(self, run_dir: Path, config: NetAdaptConfig, data, predictor, progress: Callable[[str], None] = log,
                 measure_fn: Callable[..., Any] | None = None, stop: threading.Event | None = None) -> None:
        self.dir = Path(run_dir)
        # Set by the first Ctrl-C (common.interrupt): the run stops where it can without losing a finished
        # iteration, and raises Interrupted.
        self.stop = stop or threading.Event()
        self.config = config
        self.data = data
        self.predictor = predictor
        self.log = progress
        self.device = steer.Device(measure_fn, progress)
        self.history: list[dict[str, Any]] = []
        self.proposal_rows: list[dict[str, Any]] = []
        self._seed_latency: tuple[float, float | None, float] | None = None
        self._correct = None  # which validation images the current network gets right

    # -- paths
    def ckpt(self, i: int) -> tuple[Path, Path]:
        return self.dir / "checkpoints" / f"iter_{i:03d}.json", self.dir / "checkpoints" / f"iter_{i:03d}.pt"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    # -- start / resume
    def resolve_target(self, seed_spec: ArchSpec) -> tuple[float, float | None, float]:
        """(seed's predicted ms, seed's measured ms or None, target ms); a target that cannot be met is
        a :class:`UserError`. With measurements the target and the reachability check are measured."""
        if self._seed_latency is not None:
            return self._seed_latency
        cfg = self.config
        seed_pred = float(predict_ms(self.predictor, [seed_spec])[0])
        seed_meas = self.device.ms(seed_spec, steer.CONFIRM_REPEATS) if cfg.measure_iterations else None
        how = "measured" if seed_meas is not None else "predicted"
        seed_ms = seed_meas if seed_meas is not None else seed_pred
        target = cfg.target_ms if cfg.target_ms is not None else cfg.target_ratio * seed_ms
        if target >= seed_ms:
            raise SeedWithinTarget(f"target {target:.3f} ms is not below the seed's {how} latency {seed_ms:.3f} ms; "
                                   "pass a smaller --target-ms or a --target-ratio below 1", seed_ms, how)
        smallest = smallest_network(seed_spec, cfg.min_channels, cfg.channel_step)
        floor = (self.device.ms(smallest) if seed_meas is not None else None) or float(predict_ms(self.predictor, [smallest])[0])
        if target < floor:
            raise UserError(f"target {target:.3f} ms is below anything reachable by trimming this seed ({floor:.3f} ms "
                            f"{how} with every group at its smallest); pass a larger --target-ms")
        self._seed_latency = seed_pred, seed_meas, float(target)
        return self._seed_latency

    def start(self, seed_spec: ArchSpec, seed_state: dict[str, torch.Tensor] | None) -> RunState:
        """Prepare iteration 0 from the seed: train it if it has no weights, check the target."""
        from train.loop import train_model
        from train.weights import check_fits, save_weights

        cfg = self.config
        seed_pred, seed_meas, target = self.resolve_target(seed_spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the seed's initial weights, when it has to be trained
            model = model_for_data(seed_spec, self.data, cfg.proxy_min_map)
        if seed_state is None:
            self.log(f"seed has no weights: training it for {cfg.seed_epochs:g} epochs first")
            r = train_model(model, self.data, epochs=cfg.seed_epochs, lr=cfg.seed_lr, optimizer=cfg.optimizer,
                            batch_size=cfg.batch_size, seed=cfg.seed, augment=cfg.augment, eval_limit=cfg.eval_limit,
                            progress=until_stopped(self.stop,
                                lambda p: self.log(f"  seed training step {p.step}/{p.steps} loss {p.loss:.3f}"),
                                every=max(1, int(cfg.seed_epochs * len(self.data.train) / cfg.batch_size) // 5)),
                            log_every=1)
            self.log(f"seed trained: val accuracy {r.accuracy:.4f} ({r.seconds:.1f} s)")
        else:
            check_fits(model, seed_state, "seed weights")
            model.load_state_dict(seed_state)
        self._correct = per_image_correct(model, self.data, cfg.eval_limit)
        acc = float(self._correct.mean())
        spec_path, w_path = self.ckpt(0)
        seed_spec.save(spec_path)
        save_weights(model, w_path)
        st = RunState(0, str(spec_path), str(w_path), seed_pred, acc, seed_pred, acc, float(target),
                      measured_ms=seed_meas, seed_measured_ms=seed_meas)
        self._save_state(st)
        self.log(f"seed: predicted {seed_pred:.3f} ms" + (f", measured {seed_meas:.3f} ms" if seed_meas else "")
                 + f", val accuracy {acc:.4f} ({len(self._correct)} images); target {target:.3f} ms "
                 + ("measured" if seed_meas else "predicted"))
        return st

    def load_state(self) -> RunState:
        import json

        try:
            d = json.loads(self.state_path.read_text())
            st = RunState(**d)
        except FileNotFoundError:
            raise UserError(f"{self.dir}: nothing to resume (no state.json); start the run without --resume") from None
        except (ValueError, TypeError) as e:
            raise UserError(f"{self.state_path}: unreadable run state ({e}); start a new run with another --name") from None
        # The checkpoint of the state's iteration in this folder, wherever the folder was when it was
        # written (a run copied or moved elsewhere resumes from its own files).
        spec_path, w_path = self.ckpt(st.iteration)
        st.spec_path, st.weights_path = str(spec_path), str(w_path)
        self.history = read_rows(self.dir / "history.csv", HISTORY_COLUMNS)[:st.iteration]
        self.proposal_rows = [r for r in read_rows(self.dir / "proposals.csv", PROPOSAL_COLUMNS)
                              if r["iteration"] is not None and int(r["iteration"]) <= st.iteration]
        return st

    def _save_state(self, st: RunState) -> None:
        write_json(asdict(st), self.state_path)

    def _current(self, st: RunState) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
        from train.weights import load_weights

        return ArchSpec.load(st.spec_path), load_weights(st.weights_path)

    # -- the loop
    def adapt(self, st: RunState) -> RunState:
        cfg = self.config
        spec, state = self._current(st)
        if self._correct is None:  # resumed: which validation images the current network gets right
            model = model_for_data(spec, self.data, cfg.proxy_min_map)
            model.load_state_dict(state)
            self._correct = per_image_correct(model, self.data, cfg.eval_limit)
        ft = {"steps": cfg.steps, "lr": cfg.lr, "optimizer": cfg.optimizer, "batch_size": cfg.batch_size,
              "threads": cfg.threads, "augment": cfg.augment, "eval_limit": cfg.eval_limit,
              "proxy_min_map": cfg.proxy_min_map, "importance": cfg.importance}
        aim = steer.AIM_BELOW if st.measured_ms is not None else 0.0
        base_ms = st.seed_measured_ms or st.seed_predicted_ms
        with ProposalRunner(cfg.workers, self.data, cfg.address) as runner:
            while st.phase == "adapt":
                if self.stop.is_set():
                    raise Interrupted
                if st.latency_ms <= st.target_ms:
                    how = "measured" if st.measured_ms is not None else "predicted"
                    st.phase, st.stop_reason = "final", f"target met ({how})"
                    break
                if st.iteration >= cfg.max_iterations:
                    st.phase, st.stop_reason = "final", f"stopped after {cfg.max_iterations} iterations"
                    break
                i = st.iteration + 1
                t0 = time.perf_counter()
                ratio = steer.correction(st, self.history)
                cut = min(steer.first_cut_ms(cfg.delta, cfg.decay, base_ms, i), st.latency_ms - st.target_ms * (1 - aim))
                constraint = steer.predicted_constraint(st.predicted_ms, ratio, cut)
                proposals, unreachable = make_proposals(spec, self.predictor, constraint, cfg.min_channels,
                                                        cfg.channel_step)
                # Late in a run no single group may be able to cut delta_i any more; halve it (down to
                # 1% of the first delta) before concluding that nothing can shrink.
                floor_cut = 0.01 * cfg.delta * base_ms
                while not proposals and cut / 2 >= floor_cut:
                    cut /= 2
                    constraint = steer.predicted_constraint(st.predicted_ms, ratio, cut)
                    proposals, unreachable = make_proposals(spec, self.predictor, constraint, cfg.min_channels,
                                                            cfg.channel_step)
                self.log(f"[iteration {i}] cut {cut:.3f} ms -> predicted constraint {constraint:.3f} ms "
                         f"({ratio:.3f} ms measured per ms predicted): {len(proposals)} proposals"
                         + (f", {len(unreachable)} groups cannot reach it" if unreachable else ""))
                if not proposals:
                    st.phase, st.stop_reason = "final", f"no group can cut {cut:.4f} ms"
                    break
                results: list[tuple[Proposal, dict[str, Any]]] = []

                def on_result(p: Proposal, res: dict[str, Any], i=i, st=st, results=results) -> None:
                    ok = "error" not in res
                    sc = score(self._scored(p, res, st), self._correct, cfg.select) if ok else None
                    self.proposal_rows.append({
                        "iteration": i, "group": p.group, "channels_before": p.channels_before,
                        "channels_after": p.channels_after, "predicted_ms": p.predicted_ms,
                        "accuracy_before": res.get("accuracy_before"), "accuracy_after": res.get("accuracy_after"),
                        "score": sc, "status": "ok" if ok else "failed", "error": res.get("error", ""),
                        "seconds": res.get("seconds"), "node": res.get("node", ""),
                    })
                    if ok:
                        results.append((p, res))
                        self.log(f"  {p.group:>10} {p.channels_before:>4} -> {p.channels_after:<4} predicted "
                                 f"{p.predicted_ms:8.3f} ms  val acc {res['accuracy_before']:.4f} -> "
                                 f"{res['accuracy_after']:.4f}  ({res['seconds']:.1f} s)")
                    else:
                        self.log(f"  {p.group:>10} failed, skipped: {res['error']}")

                # Every proposal fine-tunes on the same batches: their accuracies differ by the trim, not the draw.
                runner.run(spec, state, proposals, ft, [cfg.seed + 1000 * i] * len(proposals), on_result, stop=self.stop)
                if self.stop.is_set():
                    # The iteration is not finished: its proposals run again on --resume. Those that had finished
                    # are listed now, the others as interrupted; state.json still names the last finished iteration.
                    self.proposal_rows += outputs.interrupted_rows(i, proposals, self.proposal_rows)
                    self._write_tables()
                    raise Interrupted
                if not results:
                    st.phase, st.stop_reason = "final", f"all {len(proposals)} proposals of iteration {i} failed"
                    self._write_tables()
                    break
                ranked = sorted(results, key=lambda pr: (score(self._scored(*pr, st), self._correct, cfg.select),
                                                         -pr[0].predicted_ms), reverse=True)
                top_gap, top_se = (gap(self._scored(*ranked[0], st), self._scored(*ranked[1], st), self._correct,
                                       cfg.select) if len(ranked) > 1 else (None, None))
                if cfg.measure_iterations:
                    (best_p, best), measured, passed = steer.accept_measured(
                        ranked, lambda pr: self.device.ms(pr[0].spec), st.latency_ms)
                    if measured is not None and measured <= st.target_ms:
                        # A stop rests on the median of several measurements, not on one lucky one.
                        extra = [self.device.ms(best_p.spec) for _ in range(steer.CONFIRM_REPEATS - 1)]
                        measured = float(np.median([measured] + [m for m in extra if m is not None]))
                else:
                    (best_p, best), measured, passed = ranked[0], None, 0
                spec, state = best_p.spec, best["state"]
                self._correct = best["correct"]
                spec_path, w_path = self.ckpt(i)
                spec.save(spec_path)
                from train.weights import save_weights

                save_weights(state, w_path)
                self.history.append({
                    "iteration": i, "group": best_p.group, "channels_before": best_p.channels_before,
                    "channels_after": best_p.channels_after, "filters_removed": best_p.removed,
                    "delta_ms": cut, "correction": ratio, "constraint_ms": constraint, "predicted_ms": best_p.predicted_ms,
                    "measured_ms": measured, "accuracy_before": best["accuracy_before"],
                    "accuracy_after": best["accuracy_after"], "score_gap": top_gap, "score_gap_se": top_se,
                    "val_images": len(self._correct), "passed_over": passed, "proposals": len(proposals),
                    "failed": len(proposals) - len(results), "seconds": time.perf_counter() - t0,
                })
                st.iteration, st.spec_path, st.weights_path = i, str(spec_path), str(w_path)
                st.predicted_ms, st.accuracy = best_p.predicted_ms, best["accuracy_after"]
                if cfg.measure_iterations:
                    # A failed measurement keeps the last ratio: the prediction scaled by it stands in.
                    st.measured_ms = measured if measured is not None else best_p.predicted_ms * ratio
                self._write_tables()
                self._save_state(st)
                self._plot(st)
                self.log(f"[iteration {i}] kept {best_p.group} {best_p.channels_before} -> {best_p.channels_after}"
                         + (f" (passed over {passed} measured slower)" if passed else "")
                         + f": predicted {best_p.predicted_ms:.3f} ms" + (f", measured {measured:.3f} ms" if measured else "")
                         + f", val accuracy {best['accuracy_after']:.4f}"
                         + (f"; best two scores differ by {top_gap:.4g} (SE {top_se:.2g})" if top_gap is not None else "")
                         + f" ({time.perf_counter() - t0:.1f} s)")
        if st.phase == "adapt":
            st.phase = "final"
        self._save_state(st)
        return st

    def _scored(self, p: Proposal, res: dict[str, Any], st: RunState) -> Scored:
        return Scored(res["correct"], st.predicted_ms - p.predicted_ms)

    def _write_tables(self) -> None:
        write_csv(frame(self.history, HISTORY_COLUMNS), self.dir / "history.csv")
        write_csv(frame(self.proposal_rows, PROPOSAL_COLUMNS), self.dir / "proposals.csv")

    def _plot(self, st: RunState, seed_measured_ms: float | None = None, final: dict[str, Any] | None = None) -> None:
        seed_point = {"predicted_ms": st.seed_predicted_ms, "accuracy": st.seed_accuracy,
                      "measured_ms": seed_measured_ms or st.seed_measured_ms}
        plot_progress(self.history, seed_point, st.target_ms, self.dir / "progress.png", final=final,
                      final_epochs=self.config.final_epochs,
                      target_basis="measured" if st.seed_measured_ms is not None else "predicted")

    # -- the end
    def finish(self, st: RunState) -> dict[str, Any]:
        """Long-term fine-tune, final files, measured vs predicted latency; returns the summary."""
        from export.onnx import export_onnx
        from train.loop import evaluate, train_model
        from train.weights import save_weights

        cfg = self.config
        spec, state = self._current(st)
        model = model_for_data(spec, self.data, cfg.proxy_min_map)
        model.load_state_dict(state)
        final_steps, t0 = 0, time.perf_counter()
        if cfg.final_epochs:
            self.log(f"long-term fine-tune: {cfg.final_epochs:g} epochs")
            r = train_model(model, self.data, epochs=cfg.final_epochs, lr=cfg.lr, optimizer=cfg.optimizer,
                            batch_size=cfg.batch_size, seed=cfg.seed + 7, augment=cfg.augment,
                            eval_limit=cfg.eval_limit, warmup=0.0, progress=until_stopped(self.stop), log_every=1)
            final_steps = r.steps
            self.log(f"  val accuracy {r.accuracy:.4f} ({r.seconds:.1f} s)")
        final_seconds = time.perf_counter() - t0
        final_val = evaluate(model, self.data, "val", limit=cfg.eval_limit)
        final_test = evaluate(model, self.data, "test", limit=cfg.eval_limit)
        seed_spec, seed_state = ArchSpec.load(self.ckpt(0)[0]), None
        from train.weights import load_weights

        seed_state = load_weights(self.ckpt(0)[1])
        seed_model = model_for_data(seed_spec, self.data, cfg.proxy_min_map)
        seed_model.load_state_dict(seed_state)
        seed_test = evaluate(seed_model, self.data, "test", limit=cfg.eval_limit)

        spec.save(self.dir / "netadapt.json")
        weights = save_weights(model, self.dir / "netadapt.pt")
        onnx = export_onnx(spec, self.dir / "netadapt.onnx", weights=weights)
        self.log("measuring the seed and the final network with onnxruntime")
        seed_meas = self.device.stats(seed_spec, steer.CONFIRM_REPEATS)
        final_meas = self.device.stats(spec, steer.CONFIRM_REPEATS)
        final_pred = float(predict_ms(self.predictor, [spec])[0])
        seed_ms, final_ms = steer.figure_ms(seed_meas), steer.figure_ms(final_meas)
        pred_err = abs(final_ms / final_pred - 1.0)
        ok = [r for r in self.proposal_rows if r.get("status") == "ok"]
        gaps = [(float(r["score_gap"]), float(r["score_gap_se"])) for r in self.history
                if r.get("score_gap") is not None and r.get("score_gap_se") is not None]
        summary = {
            "seed": seed_spec.name, "run_dir": str(self.dir), "target_ms": st.target_ms,
            "target_basis": "measured" if st.seed_measured_ms is not None else "predicted",
            "seed_latency_ms": seed_ms, "seed_predicted_ms": st.seed_predicted_ms,
            "final_latency_ms": final_ms, "final_predicted_ms": final_pred,
            "final_latency_p10_ms": final_meas.p10_ms, "final_latency_p90_ms": final_meas.p90_ms,
            "final_measured_in_loop_ms": st.measured_ms, "predictor_error": pred_err,
            "target_met_predicted": final_pred <= st.target_ms * (1 + 1e-9),
            "target_met_measured": final_ms <= st.target_ms,
            "speedup_measured": seed_ms / final_ms,
            "seed_accuracy": seed_test, "final_accuracy": final_test,
            "seed_val_accuracy": st.seed_accuracy, "final_val_accuracy": final_val,
            "accuracy_split": "test", "iterations": st.iteration, "stop_reason": st.stop_reason,
            "select": cfg.select, "importance": cfg.importance,
            "choices_above_se": sum(g > se for g, se in gaps), "choices_compared": len(gaps),
            "arch": str(self.dir / "netadapt.json"), "weights": str(weights), "onnx": onnx["onnx"], "history": str(self.dir / "history.csv"),
            "plot": str(self.dir / "progress.png"), "data": self.data.describe(),
            "compute": {
                "proposals": len(self.proposal_rows), "proposal_steps": cfg.steps * len(ok),
                "proposal_images": cfg.steps * len(ok) * cfg.batch_size,
                "proposal_seconds": sum(float(r["seconds"] or 0) for r in ok),
                "adapt_seconds": sum(float(r["seconds"] or 0) for r in self.history),
                "final_steps": final_steps, "final_seconds": final_seconds},
            "latency": {
                "threads": final_meas.threads, "provider": final_meas.provider, "ort_version": final_meas.ort_version,
                "runs": final_meas.runs},
        }
        # The fine-tuned final network's point joins the plot beside the seed's.
        self._plot(st, seed_ms, final={"predicted_ms": final_pred, "measured_ms": final_ms, "accuracy": final_val})
        write_json(summary, self.dir / "result.json")
        st.phase = "done"
        self._save_state(st)
        return summary

    def run(self, seed_spec: ArchSpec | None = None, seed_state: dict[str, torch.Tensor] | None = None,
            resume: bool = False) -> dict[str, Any]:
        if resume:
            st = self.load_state()
            if st.phase == "done" and (self.dir / "result.json").exists():
                import json

                self.log(f"{self.dir}: run already finished")
                return json.loads((self.dir / "result.json").read_text())
            self.log(f"resuming {self.dir} after iteration {st.iteration} ({st.phase})")
        else:
            if seed_spec is None:
                raise ValueError("a new run needs a seed spec")
            self.resolve_target(seed_spec)
            # "command" tells --resume (and the search's --resume) whose folder this is.
            write_json({"command": "netadapt", **self.config.to_dict()}, self.dir / "config.json")
            st = self.start(seed_spec, seed_state)
        if st.phase == "adapt":
            st = self.adapt(st)
        return self.finish(st)
