"""The NetAdapt loop (Yang et al. 2018, Algorithm 1) in MobileNetV3's variant (Howard et al. 2019).

Starting from a trained seed network, iteration i sets the latency constraint
``current - delta_i`` with ``delta_i = delta * seed_latency * decay ** (i - 1)`` (never cutting
below the target; halved while no single group can cut it), proposes for every group the fewest filters to remove that meet it (from the
latency predictor), trims each proposal keeping the largest-L2 filters, fine-tunes it for ``T``
steps, and measures its accuracy on the validation split. Proposals of one iteration run in
parallel as Ray tasks; a proposal that fails is skipped. The kept proposal is the most accurate
one (NetAdapt) or the one with the largest accuracy change per ms saved, dAcc / |dLatency|
(MobileNetV3). The loop stops at the target, then the result is fine-tuned for longer.

Every finished iteration is a checkpoint (ArchSpec JSON + weights + ``state.json``), so a run
that stops can be resumed from its last finished iteration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import UserError
from netadapt.config import NetAdaptConfig
from netadapt.outputs import HISTORY_COLUMNS, PROPOSAL_COLUMNS, frame, plot_progress, read_rows, write_csv, write_json
from netadapt.proposals import Proposal, make_proposals, smallest_network
from netadapt.resource import predict_ms
from netadapt.runner import ProposalRunner, first_line, model_for_data
from space.archspec import ArchSpec


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


class NetAdaptRun:
    """A NetAdapt run in ``run_dir``; :meth:`run` goes from the seed (or the last checkpoint) to the end."""

    def __init__(self, run_dir: Path, config: NetAdaptConfig, data, predictor, progress: Callable[[str], None] = log,
                 measure_fn: Callable[..., Any] | None = None) -> None:
        self.dir = Path(run_dir)
        self.config = config
        self.data = data
        self.predictor = predictor
        self.log = progress
        self.measure_fn = measure_fn
        self.history: list[dict[str, Any]] = []
        self.proposal_rows: list[dict[str, Any]] = []

    # -- paths
    def ckpt(self, i: int) -> tuple[Path, Path]:
        return self.dir / "checkpoints" / f"iter_{i:03d}.json", self.dir / "checkpoints" / f"iter_{i:03d}.pt"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    # -- start / resume
    def resolve_target(self, seed_spec: ArchSpec) -> tuple[float, float]:
        """(seed's predicted ms, target ms); a target that cannot be met is a :class:`UserError`."""
        cfg = self.config
        seed_pred = float(predict_ms(self.predictor, [seed_spec])[0])
        target = cfg.target_ms if cfg.target_ms is not None else cfg.target_ratio * seed_pred
        if target >= seed_pred:
            raise UserError(f"target {target:.3f} ms is not below the seed's predicted latency {seed_pred:.3f} ms; "
                            "pass a smaller --target-ms or a --target-ratio below 1")
        floor = float(predict_ms(self.predictor, [smallest_network(seed_spec, cfg.min_channels)])[0])
        if target < floor:
            raise UserError(f"target {target:.3f} ms is below anything reachable by trimming this seed (about "
                            f"{floor:.3f} ms with every group at its smallest); pass a larger --target-ms")
        return seed_pred, float(target)

    def start(self, seed_spec: ArchSpec, seed_state: dict[str, torch.Tensor] | None) -> RunState:
        """Prepare iteration 0 from the seed: train it if it has no weights, check the target."""
        from train.loop import evaluate, train_model
        from train.weights import check_fits, save_weights

        cfg = self.config
        seed_pred, target = self.resolve_target(seed_spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the seed's initial weights, when it has to be trained
            model = model_for_data(seed_spec, self.data, cfg.proxy_min_map)
        if seed_state is None:
            self.log(f"seed has no weights: training it for {cfg.seed_epochs:g} epochs first")
            r = train_model(model, self.data, epochs=cfg.seed_epochs, lr=cfg.seed_lr, optimizer=cfg.optimizer,
                            batch_size=cfg.batch_size, seed=cfg.seed, augment=cfg.augment, eval_limit=cfg.eval_limit,
                            progress=lambda p: self.log(f"  seed training step {p.step}/{p.steps} loss {p.loss:.3f}"),
                            log_every=max(1, int(cfg.seed_epochs * len(self.data.train) / cfg.batch_size) // 5))
            self.log(f"seed trained: val accuracy {r.accuracy:.4f} ({r.seconds:.1f} s)")
        else:
            check_fits(model, seed_state, "seed weights")
            model.load_state_dict(seed_state)
        acc = evaluate(model, self.data, "val", limit=cfg.eval_limit)
        spec_path, w_path = self.ckpt(0)
        seed_spec.save(spec_path)
        save_weights(model, w_path)
        st = RunState(0, str(spec_path), str(w_path), seed_pred, acc, seed_pred, acc, float(target))
        self._save_state(st)
        self.log(f"seed: predicted {seed_pred:.3f} ms, val accuracy {acc:.4f}; target {target:.3f} ms")
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
        ft = {"steps": cfg.steps, "lr": cfg.lr, "optimizer": cfg.optimizer, "batch_size": cfg.batch_size,
              "threads": cfg.threads, "augment": cfg.augment, "eval_limit": cfg.eval_limit,
              "proxy_min_map": cfg.proxy_min_map}
        with ProposalRunner(cfg.workers, self.data, cfg.address) as runner:
            while st.phase == "adapt":
                if st.predicted_ms <= st.target_ms:
                    st.phase, st.stop_reason = "final", "target met"
                    break
                if st.iteration >= cfg.max_iterations:
                    st.phase, st.stop_reason = "final", f"stopped after {cfg.max_iterations} iterations"
                    break
                i = st.iteration + 1
                t0 = time.perf_counter()
                delta = min(cfg.delta * st.seed_predicted_ms * cfg.decay ** (i - 1), st.predicted_ms - st.target_ms)
                constraint = st.predicted_ms - delta
                proposals, unreachable = make_proposals(spec, self.predictor, constraint, cfg.min_channels)
                # Late in a run no single group may be able to cut delta_i any more; halve it (down to
                # 1% of the first delta) before concluding that nothing can shrink.
                floor_delta = 0.01 * cfg.delta * st.seed_predicted_ms
                while not proposals and delta / 2 >= floor_delta:
                    delta /= 2
                    constraint = st.predicted_ms - delta
                    proposals, unreachable = make_proposals(spec, self.predictor, constraint, cfg.min_channels)
                self.log(f"[iteration {i}] delta {delta:.3f} ms -> constraint {constraint:.3f} ms: "
                         f"{len(proposals)} proposals" + (f", {len(unreachable)} groups cannot reach it" if unreachable else ""))
                if not proposals:
                    st.phase, st.stop_reason = "final", f"no group can cut {delta:.4f} ms"
                    break
                results: list[tuple[Proposal, dict[str, Any]]] = []

                def on_result(p: Proposal, res: dict[str, Any], i=i, st=st, results=results) -> None:
                    ok = "error" not in res
                    score = self._score(p, res, st) if ok else None
                    self.proposal_rows.append({
                        "iteration": i, "group": p.group, "channels_before": p.channels_before,
                        "channels_after": p.channels_after, "predicted_ms": p.predicted_ms,
                        "accuracy_before": res.get("accuracy_before"), "accuracy_after": res.get("accuracy_after"),
                        "score": score, "status": "ok" if ok else "failed", "error": res.get("error", ""),
                        "seconds": res.get("seconds"), "node": res.get("node", ""),
                    })
                    if ok:
                        results.append((p, res))
                        self.log(f"  {p.group:>10} {p.channels_before:>4} -> {p.channels_after:<4} predicted "
                                 f"{p.predicted_ms:8.3f} ms  val acc {res['accuracy_before']:.4f} -> "
                                 f"{res['accuracy_after']:.4f}  ({res['seconds']:.1f} s)")
                    else:
                        self.log(f"  {p.group:>10} failed, skipped: {res['error']}")

                seeds = [cfg.seed + 1000 * i + k for k in range(len(proposals))]
                runner.run(spec, state, proposals, ft, seeds, on_result)
                if not results:
                    st.phase, st.stop_reason = "final", f"all {len(proposals)} proposals of iteration {i} failed"
                    self._write_tables()
                    break
                best_p, best = max(results, key=lambda pr: (self._score(pr[0], pr[1], st), -pr[0].predicted_ms))
                spec, state = best_p.spec, best["state"]
                measured = self._measure_quick(spec) if cfg.measure_iterations else None
                spec_path, w_path = self.ckpt(i)
                spec.save(spec_path)
                from train.weights import save_weights

                save_weights(state, w_path)
                self.history.append({
                    "iteration": i, "group": best_p.group, "channels_before": best_p.channels_before,
                    "channels_after": best_p.channels_after, "filters_removed": best_p.removed,
                    "delta_ms": delta, "constraint_ms": constraint, "predicted_ms": best_p.predicted_ms,
                    "measured_ms": measured, "accuracy_before": best["accuracy_before"],
                    "accuracy_after": best["accuracy_after"], "proposals": len(proposals),
                    "failed": len(proposals) - len(results), "seconds": time.perf_counter() - t0,
                })
                st.iteration, st.spec_path, st.weights_path = i, str(spec_path), str(w_path)
                st.predicted_ms, st.accuracy = best_p.predicted_ms, best["accuracy_after"]
                self._write_tables()
                self._save_state(st)
                self._plot(st)
                self.log(f"[iteration {i}] kept {best_p.group} {best_p.channels_before} -> {best_p.channels_after}: "
                         f"predicted {best_p.predicted_ms:.3f} ms" + (f" (measured {measured:.3f} ms)" if measured else "")
                         + f", val accuracy {best['accuracy_after']:.4f} ({time.perf_counter() - t0:.1f} s)")
        if st.phase == "adapt":
            st.phase = "final"
        self._save_state(st)
        return st

    def _score(self, p: Proposal, res: dict[str, Any], st: RunState) -> float:
        if self.config.select == "accuracy":
            return float(res["accuracy_after"])
        saved = max(st.predicted_ms - p.predicted_ms, 1e-9)
        return (float(res["accuracy_after"]) - st.accuracy) / saved

    def _measure_quick(self, spec: ArchSpec) -> float | None:
        try:
            return float(self._measure(spec, warmup=3, runs=15, rounds=1).median_ms)
        except Exception as e:  # a measurement problem must not lose the iteration
            self.log(f"  (latency measurement failed: {first_line(e)})")
            return None

    def _measure(self, spec: ArchSpec, **kw):
        if self.measure_fn is not None:
            return self.measure_fn(spec, **kw)
        from latency.measure import measure

        return measure(spec, threads=1, **kw)

    def _write_tables(self) -> None:
        write_csv(frame(self.history, HISTORY_COLUMNS), self.dir / "history.csv")
        write_csv(frame(self.proposal_rows, PROPOSAL_COLUMNS), self.dir / "proposals.csv")

    def _plot(self, st: RunState, seed_measured_ms: float | None = None) -> None:
        seed_point = {"predicted_ms": st.seed_predicted_ms, "accuracy": st.seed_accuracy,
                      "measured_ms": seed_measured_ms}
        plot_progress(self.history, seed_point, st.target_ms, self.dir / "progress.png")

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
        if cfg.final_epochs:
            self.log(f"long-term fine-tune: {cfg.final_epochs:g} epochs")
            r = train_model(model, self.data, epochs=cfg.final_epochs, lr=cfg.lr, optimizer=cfg.optimizer,
                            batch_size=cfg.batch_size, seed=cfg.seed + 7, augment=cfg.augment,
                            eval_limit=cfg.eval_limit, warmup=0.0)
            self.log(f"  val accuracy {r.accuracy:.4f} ({r.seconds:.1f} s)")
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
        seed_meas = self._measure(seed_spec)
        final_meas = self._measure(spec)
        final_pred = float(predict_ms(self.predictor, [spec])[0])
        pred_err = abs(final_meas.median_ms / final_pred - 1.0)
        seed_err = abs(seed_meas.median_ms / st.seed_predicted_ms - 1.0)
        err = max(pred_err, seed_err)
        summary = {
            "seed": seed_spec.name, "run_dir": str(self.dir), "target_ms": st.target_ms,
            "seed_latency_ms": seed_meas.median_ms, "seed_predicted_ms": st.seed_predicted_ms,
            "final_latency_ms": final_meas.median_ms, "final_predicted_ms": final_pred,
            "final_latency_p10_ms": final_meas.p10_ms, "final_latency_p90_ms": final_meas.p90_ms,
            "predictor_error": pred_err,
            "target_met_predicted": final_pred <= st.target_ms * (1 + 1e-9),
            "target_met_measured": final_meas.median_ms <= st.target_ms,
            "target_met_within_predictor_error": final_meas.median_ms <= st.target_ms * (1 + err),
            "speedup_measured": seed_meas.median_ms / final_meas.median_ms,
            "seed_accuracy": seed_test, "final_accuracy": final_test,
            "seed_val_accuracy": st.seed_accuracy, "final_val_accuracy": final_val,
            "accuracy_split": "test", "iterations": st.iteration, "stop_reason": st.stop_reason,
            "select": cfg.select, "arch": str(self.dir / "netadapt.json"), "weights": str(weights),
            "onnx": onnx["onnx"], "history": str(self.dir / "history.csv"), "plot": str(self.dir / "progress.png"),
            "data": self.data.describe(), "latency": {
                "threads": final_meas.threads, "provider": final_meas.provider, "ort_version": final_meas.ort_version,
                "runs": final_meas.runs},
        }
        self._plot(st, seed_meas.median_ms)  # the seed is measured only now: its point joins the plot
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
