"""The run driver: data, latency predictor, Ray, ``tune.Tuner`` with the controller searcher, results.

Layout of a run (``results/runs/<name>/``)::

    options.json      the options the run started with (``--resume`` reads them back; "command": "search")
    searcher.json     the searcher's state (controller, samples, rewards), rewritten after every change
    tune/             Ray Tune's experiment folder (trial states, Tune's copies of the searcher state)
    trials/           each finished trial's result, so a resumed run never trains a finished trial again
    weights/          trained weights of the best and the Pareto trials
    trials.csv  pareto.csv  reward.png  pareto.png  seed.json  seed.pt  summary.json

and the best network also goes to ``results/seed.json`` + ``results/seed.pt`` for NetAdapt.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from search.reward import Reward
from space.atomic import atomic_write_text
from space.errors import UserError
from space.paths import results_dir
from space.ray_cluster import attach, check_reachable, token_location

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class SearchOptions:
    """Everything a search run depends on; the CLI fills it from its options."""

    target_ms: float = 15.0
    trials: int = 16
    epochs: float = 2.0
    w: float | None = None
    alpha: float | None = None
    beta: float | None = None
    seed: int = 0
    concurrency: int = 2
    device: str = "local-cpu"
    space: str = "mnasnet"
    latency_resolution: int = 224
    measure: bool = False
    address: str | None = None
    dashboard_host: str = "127.0.0.1"  # where a Ray this run starts serves its dashboard (not with address)
    resume: bool = False
    name: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    lr: float = 3e-3
    controller_method: str = "ppo"
    controller_batch: int | None = None  # None: the concurrency (one update per wave of trials)
    time_budget_s: float | None = None
    # data (train.cli_args names)
    data: str | None = None
    train_resolution: int | None = None
    batch_size: int = 32
    data_limit: int | None = None
    eval_limit: int | None = None
    split_seed: int = 0
    augment: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        Reward.from_options(self.target_ms, self.w, self.alpha, self.beta)
        if self.target_ms > 60_000:
            raise UserError(f"--target-ms {self.target_ms:g} is absurd (over a minute per image); give milliseconds, e.g. 15")
        if self.trials < 1 or self.concurrency < 1:
            raise UserError("--trials and --concurrency must be >= 1")
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise UserError(f"--epochs {self.epochs} must be a positive number")
        check_dashboard_host(self.dashboard_host)
        if self.address:
            check_reachable(self.address)
        if self.name is not None and not NAME_RE.match(self.name):
            raise UserError(f"--name {self.name!r}: use letters, digits, '.', '_' or '-' (at most 64 characters)")


@dataclass
class SearchSummary:
    run_dir: str
    trials: int
    completed: int
    failed: int
    best: dict[str, Any] | None
    pareto: int
    seconds: float
    dashboard_url: str | None
    files: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _log(opts: SearchOptions, msg: str) -> None:
    if opts.progress:
        print(msg, file=sys.stderr, flush=True)


COMMAND = "search"  # the marker options.json carries, so that no other command's folder is taken for a search run


def _run_dir(opts: SearchOptions) -> Path:
    runs = results_dir() / "runs"
    if opts.resume:
        if opts.name:
            d = runs / opts.name
            if not d.is_dir():
                raise UserError(f"--resume: there is no search run {d}; check --name (runs are in {runs})")
        else:  # the most recent run
            cands = sorted((p for p in runs.glob("*") if (p / "options.json").exists()), key=lambda p: p.stat().st_mtime)
            if not cands:
                raise UserError(f"--resume: no run to resume under {runs}; start one without --resume")
            d = cands[-1]
        check_search_run(d)
        return d
    name = opts.name or time.strftime("search-%Y%m%d-%H%M%S")
    d = runs / name
    if d.exists():
        raise UserError(f"run folder {d} already exists; pass --resume to continue it or another --name")
    return d


def check_search_run(d: Path) -> None:
    """Refuse, with one line, a folder that is not a resumable search run (another command's, or none)."""
    if (d / "state.json").exists() and (d / "config.json").exists():
        raise UserError(f"--resume: {d} is a NetAdapt run, not a search run; resume it with "
                        f"`python cli.py netadapt --resume --name {d.name}`")
    if not (d / "options.json").is_file():
        raise UserError(f"--resume: {d} is not a search run folder (it has no options.json); check --name")
    try:
        saved = json.loads((d / "options.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--resume: {d / 'options.json'} is unreadable ({e}); this run cannot be resumed") from None
    if not isinstance(saved, dict) or saved.get("command", COMMAND) != COMMAND:
        what = saved.get("command") if isinstance(saved, dict) else None
        raise UserError(f"--resume: {d} holds a {what or 'different'} run, not a search run; check --name")
    tune_dir = d / "tune"
    if not (tune_dir / "tuner.pkl").exists() or not any(tune_dir.glob("experiment_state-*.json")):
        raise UserError(f"--resume: {d} has no Tune checkpoint (the run stopped before its first one); "
                        "start it again under another --name")
    if any(tune_dir.glob("searcher-state-*.pkl")) and not (d / "searcher.json").exists() \
            and not any(tune_dir.glob("searcher-state-*.json")):
        raise UserError(f"--resume: {d} was written by an older hwnas whose searcher checkpoint is a pickle, "
                        "which is no longer loaded (it could run code); start a new run")


def _restore_options(opts: SearchOptions, run_dir: Path) -> SearchOptions:
    saved = json.loads((run_dir / "options.json").read_text())
    keep = {"resume": True, "name": run_dir.name, "address": opts.address, "dashboard_host": opts.dashboard_host,
            "progress": opts.progress}
    allowed = {f.name for f in fields(SearchOptions)}
    return SearchOptions(**{**{k: v for k, v in saved.items() if k in allowed}, **keep})


def init_ray(address: str | None, num_cpus: int | None = None, dashboard_host: str = "127.0.0.1") -> str | None:
    """Start a local Ray (dashboard on ``dashboard_host``, token authentication as Ray sets it) or attach to
    ``address`` (shipping this project's code to its workers); returns the dashboard URL. An already
    initialised Ray in this process is reused."""
    import ray

    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        url = getattr(ctx, "dashboard_url", None) or _dashboard_url_of_session()
        return url
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic reporter: the live table we configure
    if address:
        info = attach(address)
    else:
        info = ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host=dashboard_host,
                        log_to_driver=False, configure_logging=True, logging_level="WARNING")
    url = info.dashboard_url or None
    return f"http://{url}" if url and not url.startswith("http") else url


def check_dashboard_host(host: str) -> None:
    """``--dashboard-host`` must be an IP address to bind to (Ray hands it to the dashboard's server)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UserError(f"--dashboard-host {host!r}: give an IP address to bind the dashboard to (127.0.0.1: this "
                        "machine only; 0.0.0.0: every network interface)") from None


def dashboard_warning(host: str) -> str | None:
    """The one-line warning for a dashboard bound to a non-loopback address, else None."""
    import ipaddress

    if ipaddress.ip_address(host).is_loopback:
        return None
    auth = os.environ.get("RAY_AUTH_MODE", "token").lower()
    guard = (f"Ray's token authentication stays on (token: {token_location()})" if auth == "token" else
             f"token authentication is OFF (RAY_AUTH_MODE={auth}): anyone who reaches it can run code here")
    return (f"warning: --dashboard-host {host}: the Ray dashboard will be reachable from the network, not only "
            f"from this machine; {guard}")


def _dashboard_url_of_session() -> str | None:
    try:
        import ray

        url = ray._private.worker.global_worker.node.address_info.get("webui_url")
        return f"http://{url}" if url else None
    except Exception:
        return None


def dashboard_headers() -> dict[str, str]:
    """HTTP headers that authenticate to this Ray cluster's dashboard (empty when auth is off)."""
    try:
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

        return dict(get_auth_headers_if_auth_enabled({}))
    except Exception:
        return {}


def _reporter(opts: SearchOptions):
    from ray.tune import CLIReporter

    class StderrReporter(CLIReporter):
        """Tune's table, on stderr so that ``--json`` keeps stdout to one object."""

        def report(self, trials, done, *sys_info):  # noqa: D401 - Tune's signature
            print(self._progress_str(trials, done, *sys_info), file=sys.stderr, flush=True)

    return StderrReporter(
        metric_columns={"accuracy": "acc", "latency_ms": "lat_ms", "reward": "reward", "train_seconds": "train_s"},
        parameter_columns={"latency_ms": "pred_ms"}, max_report_frequency=10, sort_by_metric=False,
        max_progress_rows=40, max_error_rows=10, print_intermediate_tables=True,
    )


def run_search(opts: SearchOptions, predictor: Any = None) -> SearchSummary:
    """Run (or resume) a search and write its results; returns the summary the CLI prints.

    ``predictor`` replaces the one :func:`latency.load_predictor` would give for ``opts.device``.
    """
    start = time.perf_counter()
    opts.check()
    run_dir = _run_dir(opts)
    if opts.resume:
        opts = _restore_options(opts, run_dir)
        _log(opts, f"resuming run {run_dir}")
    from latency import load_predictor
    from latency.table import check_device_name

    check_device_name(opts.device)
    rw = Reward.from_options(opts.target_ms, opts.w, opts.alpha, opts.beta)
    from search.trial import FAULT_ENV, parse_faults

    # Testing only: faults to inject into given samples (docs/search.md, "Failures"). Read when a run
    # starts and kept in its trial settings, so that a resumed run injects the same ones.
    faults = "" if opts.resume else os.environ.get(FAULT_ENV, "").strip()
    parse_faults(faults)
    # An unknown space and a missing, corrupted or foreign latency table are refused here, in a second,
    # not after the data is read, a table built (minutes) or Ray started.
    from latency.store import LOCAL_DEVICE, check_table
    from space.searchspace import get_space

    get_space(opts.space)
    if predictor is None:
        check_table(opts.device, opts.space, opts.latency_resolution, build_if_missing=opts.device == LOCAL_DEVICE)

    from train.data import load_data

    data = load_data(opts.data, seed=opts.split_seed, limit=opts.data_limit, eval_limit=opts.eval_limit,
                     train_resolution=opts.train_resolution, progress=opts.progress)
    d = data.describe()
    _log(opts, f"data {d['name']}: {d['num_classes']} classes, {d['in_channels']}x{d['native_resolution']}px "
               f"(training at {d['resolution']}px), train/val/test {d['train']}/{d['val']}/{d['test']}")
    t0 = time.perf_counter()
    if predictor is None:
        predictor = load_predictor(opts.device, opts.space, opts.latency_resolution,
                                   build_if_missing=opts.device == "local-cpu", progress=opts.progress)
    predictor_s = time.perf_counter() - t0
    _log(opts, f"latency predictor for {opts.device} ready in {predictor_s:.1f} s")

    import ray

    ours = not ray.is_initialized()  # a Ray this call starts (or attaches to) is let go at the end
    warning = dashboard_warning(opts.dashboard_host) if ours and not opts.address else None
    if warning:  # said even without progress output: it is about who can reach this machine
        print(warning, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    url = init_ray(opts.address, dashboard_host=opts.dashboard_host)
    ray_s = time.perf_counter() - t0
    _log(opts, f"Ray ready in {ray_s:.1f} s; dashboard: {url or 'not available'}"
               + (f" (token: {token_location()})" if dashboard_headers() else ""))
    try:
        # Only once Ray is there: a cluster that refuses us must not leave a run folder behind.
        run_dir.mkdir(parents=True, exist_ok=True)
        if not opts.resume:
            doc = {"command": COMMAND, **asdict(opts)}
            atomic_write_text(run_dir / "options.json", json.dumps(doc, indent=2) + "\n")
        results = _fit(opts, run_dir, data, predictor, rw, faults)
        return _write_results(opts, run_dir, results, rw, url, start, (data.num_classes, data.in_channels),
                              {"predictor_s": predictor_s, "ray_init_s": ray_s})
    finally:
        if ours:
            ray.shutdown()


def _trainable(opts: SearchOptions, data: Any):
    import ray
    from ray import tune

    from search.trial import trial_class

    gpus = opts.gpus_per_trial
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return tune.with_resources(tune.with_parameters(trial_class(), data=data), {"cpu": opts.cpus_per_trial, "gpu": gpus})


def _fit(opts: SearchOptions, run_dir: Path, data: Any, predictor: Any, rw: Reward, faults: str = ""):
    from ray import tune

    from search.controller import ControllerConfig
    from search.searcher import ControllerSearcher
    from search.trial import TrialSettings

    trainable = _trainable(opts, data)
    exp_dir = run_dir / "tune"
    from search.collect import WeightsToDriver

    run_config = tune.RunConfig(
        name="tune", storage_path=str(run_dir.resolve()), progress_reporter=_reporter(opts),
        callbacks=[WeightsToDriver()],  # first, so that Tune's loggers never see the weights' bytes
        verbose=1 if opts.progress else 0, failure_config=tune.FailureConfig(max_failures=0),
        checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False, checkpoint_frequency=0),
    )
    if opts.resume:
        tuner = tune.Tuner.restore(str(exp_dir.resolve()), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        settings = TrialSettings(
            space=opts.space, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
            latency_resolution=opts.latency_resolution, target_ms=rw.target_ms, alpha=rw.alpha, beta=rw.beta,
            measure=opts.measure, threads=max(1, int(opts.cpus_per_trial)), eval_limit=opts.eval_limit,
            augment=opts.augment,
            trials_dir=str((run_dir / "trials").resolve()), faults=faults,
        )
        ctl = ControllerConfig(method=opts.controller_method, batch_size=opts.controller_batch or opts.concurrency)
        searcher = ControllerSearcher(settings, data.num_classes, data.in_channels, opts.device, ctl, predictor,
                                      state_path=(run_dir / "searcher.json").resolve())
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=opts.trials, metric="reward", mode="max",
                                        max_concurrent_trials=opts.concurrency, time_budget_s=opts.time_budget_s,
                                        trial_dirname_creator=_trial_dirname, reuse_actors=True),
            run_config=run_config,
        )
    return tuner.fit()


def _trial_dirname(trial: Any) -> str:
    # Tune's default folder name spells out the whole config; the id is enough (trials.csv has the rest).
    return f"trial_{trial.trial_id}"


def _trial_index(trial_id: str) -> int:
    m = re.search(r"_(\d+)$", trial_id)
    return int(m.group(1)) if m else 0


def _write_results(opts: SearchOptions, run_dir: Path, results: Any, rw: Reward, url: str | None, start: float,
                   nc_ic: tuple[int, int], timings: dict[str, float]) -> SearchSummary:
    from search import results as out
    from search.controller import ControllerConfig
    from search.searcher import read_state
    from search.trial import deploy_spec

    # What the searcher handed out: a trial that failed before reporting (restored after a kill)
    # comes back from Tune without its config; its sample and tokens are still known here.
    handed_out = (read_state(run_dir / "searcher.json") or {}).get("suggested", {})
    rows = []
    for res in results:
        m = res.metrics or {}
        trial_id = str(m.get("trial_id") or _trial_id_from_path(res.path))
        cfg = res.config or {}
        if "tokens" not in cfg and trial_id in handed_out:
            cfg = handed_out[trial_id]
        tokens = [int(t) for t in cfg.get("tokens", [])]
        if res.error is not None:
            status = "error"  # raised, or its worker died (Tune's FailureConfig(max_failures=0): no retry)
        elif "accuracy" not in m:
            status = "unfinished"  # interrupted before it reported; --resume runs it again
        else:
            status = m.get("status", "ok")
        rows.append({
            "trial": int(cfg.get("sample", _trial_index(trial_id))), "trial_id": trial_id, "status": status,
            "tokens": "-".join(map(str, tokens)),
            "accuracy": m.get("accuracy", math.nan), "latency_ms": m.get("latency_ms", cfg.get("latency_ms", math.nan)),
            "measured_ms": m.get("measured_ms", math.nan), "reward": m.get("reward", 0.0) if status == "ok" else 0.0,
            "params": m.get("params", math.nan), "macs": m.get("macs", math.nan),
            "train_seconds": m.get("train_seconds", math.nan), "steps": m.get("steps", 0),
            "train_loss": m.get("train_loss", math.nan),
            "error": m.get("error", "") if res.error is None else _error_line(res.error),
            "node": m.get("node", ""), "weights": m.get("weights", ""), "arch": "",
        })
    df = out.trials_frame(rows)
    archs = []
    for toks in df["tokens"]:
        if toks:
            spec = deploy_spec(opts.space, [int(t) for t in toks.split("-")], opts.latency_resolution, *nc_ic)
            archs.append(json.dumps(spec.to_dict(), separators=(",", ":")))
        else:
            archs.append("")
    df["arch"] = archs
    front = out.pareto_front(df)
    ok = df[df["status"] == "ok"]
    best_idx = ok["reward"].astype(float).idxmax() if len(ok) else None
    # Weights of trials off the Pareto front are deleted below; the table names only files that stay.
    keep = set(front["weights"]) | ({df.loc[best_idx, "weights"]} if best_idx is not None else set())
    df["weights"] = [w if w and w in keep and Path(w).is_file() else "" for w in df["weights"]]
    files = {
        "trials": str(out.write_csv(df, run_dir / "trials.csv")),
        "pareto": str(out.write_csv(front, run_dir / "pareto.csv")),
    }
    decay = ControllerConfig().baseline_decay
    if len(df):
        files["reward_plot"] = str(out.plot_rewards(df, run_dir / "reward.png", decay, f"{run_dir.name}: {rw.describe()}"))
        files["pareto_plot"] = str(out.plot_pareto(df, front, run_dir / "pareto.png", rw.target_ms))
    best = None
    if best_idx is not None:
        b = df.loc[best_idx]
        spec = deploy_spec(opts.space, [int(t) for t in b["tokens"].split("-")], opts.latency_resolution, *nc_ic)
        spec = replace(spec, name=f"{run_dir.name}/{b['trial_id']}")
        weights = Path(b["weights"]) if b["weights"] and Path(b["weights"]).exists() else None
        out.write_seed(spec, weights, [run_dir, results_dir()])
        files.update({"seed": str(results_dir() / "seed.json"), "run_seed": str(run_dir / "seed.json")})
        if weights is not None:
            files["seed_weights"] = str(results_dir() / "seed.pt")
        _prune_weights(run_dir / "weights", keep=keep)
        best = {"arch": str(results_dir() / "seed.json"), "trial_id": b["trial_id"], "tokens": b["tokens"],
                "accuracy": float(b["accuracy"]), "latency_ms": float(b["latency_ms"]), "reward": float(b["reward"]),
                "params": int(b["params"]), "macs": int(b["macs"]),
                "weights": str(results_dir() / "seed.pt") if weights is not None else None}
    summary = SearchSummary(
        run_dir=str(run_dir), trials=len(df), completed=int((df["status"] == "ok").sum()),
        failed=int(df["status"].isin(FAILED).sum()), best=best, pareto=len(front),
        seconds=time.perf_counter() - start, dashboard_url=url, files=files,
    )
    doc = {**summary.to_dict(), "reward": rw.describe(), "timings": timings, "controller": _controller_counts(run_dir)}
    atomic_write_text(run_dir / "summary.json", json.dumps(doc, indent=2) + "\n")
    return summary


FAILED = ("error", "diverged", "oom")


def _error_line(error: Any) -> str:
    """One short line of a Tune trial error: the exception the trial raised (``Type: message``), or for a
    worker that died, e.g. ``RayActorError: The actor is dead because its worker process has died.``"""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    exc = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:", line)]
    if exc:
        return exc[-1][:200]
    last = lines[-1] if lines else ""
    first_sentence = last.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {first_sentence}."[:200]


def _controller_counts(run_dir: Path) -> dict[str, int] | None:
    """Rewards the controller received, its policy updates and samples still waiting (searcher.json)."""
    from search.searcher import read_state

    state = read_state(run_dir / "searcher.json")
    if state is None:
        return None
    c = state["controller"]
    return {"feedbacks": int(c["feedbacks"]), "updates": int(c["updates"]), "pending": len(c["pending"]),
            "records": len(state["records"])}


def _trial_id_from_path(path: str | None) -> str:
    m = re.search(r"trial_([0-9a-f]+)", Path(path or "").name)
    return m.group(1) if m else "?"


def _prune_weights(folder: Path, keep: set[str]) -> None:
    """Trained weights of trials off the Pareto front are not needed after the run (they add up)."""
    if not folder.is_dir():
        return
    keep_names = {Path(k).name for k in keep if k}
    for p in folder.glob("*.pt"):
        if p.name not in keep_names:
            p.unlink(missing_ok=True)
