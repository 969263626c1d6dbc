"""``cli.py netadapt``: trim a seed network layer by layer to a latency target (NetAdapt)."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli_io import fraction, non_negative_float, non_negative_int, positive_float, positive_int, print_json
from common.errors import UserError
from common.interrupt import Interrupted, Interruption
from common.runstatus import mark, refuse_if_running
from netadapt.config import IMPORTANCE, NetAdaptConfig
from space.resolve import add_width_arg
from train.cli_args import add_data_args

if TYPE_CHECKING:
    import torch

    from space.archspec import ArchSpec
    from train.data import DataBundle

COMMAND = "netadapt"  # the marker config.json carries (see netadapt.loop), checked by --resume
DEFAULT_SEED = "seed.json"  # under the results folder, where the search writes it
# Options that define the run; --resume takes them from the run folder, not the command line.
RUN_OPTIONS = ("seed", "width", "weights", "device", "space", "resolution", "data", "train_resolution", "batch_size",
               "data_limit", "eval_limit", "split_seed", "augment")


D = NetAdaptConfig()  # the defaults the command line shows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "netadapt", help="trim a trained network to a latency target, layer by layer (NetAdapt)",
        description="NetAdapt in MobileNetV3's variant: each iteration proposes, for every group of channels "
                    "(one block's expansion, a residual bottleneck chain, the stem, the head), the fewest filters "
                    "to remove so that the latency drops by delta_i (sized by the predictor, corrected by what "
                    "the last measurement showed); fine-tunes each proposal (in parallel as Ray tasks), keeps the "
                    "best and measures it with onnxruntime, until the measured latency meets the target; then "
                    "fine-tunes longer. Writes results/netadapt/NAME/.")
    p.add_argument("--seed", default=None, metavar="PATH_OR_NAME",
                   help=f"seed network: a search run folder (its seed.json), a NetAdapt run folder (its netadapt.json), "
                        f"an ArchSpec JSON (default results/{DEFAULT_SEED}; weights are read from the .pt beside the "
                        "JSON) or a reference name such as mobilenet_v3_small")
    add_width_arg(p)
    p.add_argument("--weights", default=None, help="seed weights (state_dict .pt); default: the .pt beside the seed JSON")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--target-ms", type=positive_float, default=None,
                   help="latency target in ms, measured (predicted with --no-measure-iterations)")
    t.add_argument("--target-ratio", type=fraction, default=D.target_ratio,
                   help=f"latency target as a fraction of the seed's measured latency (default {D.target_ratio:g})")
    p.add_argument("--delta", type=fraction, default=D.delta,
                   help=f"latency cut per iteration as a fraction of the seed's latency (default {D.delta:g})")
    p.add_argument("--decay", type=fraction, default=D.decay,
                   help=f"delta_i = delta * decay^(i-1) (default {D.decay:g})")
    p.add_argument("--channel-step", type=positive_int, default=D.channel_step,
                   help=f"channel counts move in multiples of this (default {D.channel_step}: onnxruntime's CPU "
                        "kernels work in blocks of 8 channels)")
    p.add_argument("--importance", choices=IMPORTANCE, default=D.importance,
                   help=f"which filters survive a trim: the largest L2 norm (l2, NetAdapt) or BatchNorm scale (bn) "
                        f"(default {D.importance})")
    p.add_argument("--steps", type=non_negative_int, default=10, metavar="T",
                   help="fine-tune steps per proposal (default 10)")
    p.add_argument("--select", choices=("ratio", "accuracy"), default="ratio",
                   help="keep the proposal with the largest dAcc/|dLatency| (ratio, MobileNetV3) or the highest "
                        "accuracy (accuracy, NetAdapt) (default ratio)")
    p.add_argument("--final-epochs", type=non_negative_float, default=5.0,
                   help="long-term fine-tune of the result, in epochs (default 5)")
    p.add_argument("--seed-epochs", type=non_negative_float, default=10.0,
                   help="training epochs for a seed that has no weights (default 10)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="fine-tune learning rate (AdamW, default 1e-3)")
    p.add_argument("--workers", type=non_negative_int, default=2,
                   help="proposals fine-tuned in parallel as Ray tasks (default 2; 0 = one by one in this process; "
                        "with --address the cluster's free CPUs decide how many run at once)")
    p.add_argument("--address", default=None,
                   help="run the proposals on an existing Ray cluster (e.g. 10.0.0.5:6379 or auto) instead of a local "
                        "Ray; results are written here only (see docs/cluster.md)")
    p.add_argument("--max-iterations", type=positive_int, default=100)
    p.add_argument("--min-channels", type=positive_int, default=None,
                   help="never trim a group below this many channels (default: one channel step)")
    p.add_argument("--train-seed", type=int, default=0, help="seed of training and fine-tuning (default 0)")
    p.add_argument("--measure-iterations", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the seed and every kept network with onnxruntime and steer by it: the target, "
                        "the stop and the size of each cut are measured (default); --no-measure-iterations steers "
                        "by the predictor alone")
    p.add_argument("--device", default="local-cpu", help="latency table's device name (default local-cpu)")
    p.add_argument("--space", default=None,
                   help="search space whose latency table to use (default: the seed's, else mnasnet)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="deployment (latency) resolution (default: the seed spec's, 224 for reference names)")
    add_data_args(p)
    p.add_argument("--name", default=None, help="run name under results/netadapt/ (default: the seed's name)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run NAME (default: the latest run of this seed) after its last finished iteration")
    p.add_argument("--json", action="store_true", help="print one JSON object with the result")
    p.set_defaults(func=cmd_netadapt)


def _runs_root() -> Path:
    from common.paths import results_dir

    return results_dir() / "netadapt"


def seed_file(seed: str) -> str:
    """``--seed`` as a name or an ArchSpec file: a run folder stands for the network it produced."""
    from export.sources import RUN_ARTIFACTS

    p = Path(seed)
    if not p.is_dir():
        return seed
    for spec_name, _ in RUN_ARTIFACTS:
        if (p / spec_name).is_file():
            return str(p / spec_name)
    raise UserError(f"--seed {seed}: is a folder with none of {', '.join(s for s, _ in RUN_ARTIFACTS)}; pass a search "
                    "run that trained a network, a finished NetAdapt run, an ArchSpec JSON or a reference name")


def _base_name(seed: str) -> str:
    from space.references import REFERENCES

    base = seed if seed in REFERENCES else Path(seed).name if Path(seed).is_dir() else Path(seed).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base) or "run"


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise UserError(f"--name {name!r}: use letters, digits, '_', '-' and '.' only")
    return name


def _pick_run_dir(args: argparse.Namespace) -> Path:
    root = _runs_root()
    if args.name:
        d = root / _check_name(args.name)
        if args.resume:
            if not d.is_dir():
                raise UserError(f"{d}: no run to resume; start it without --resume")
            check_netadapt_run(d)
            return d
        if d.exists() and any(d.iterdir()):
            raise UserError(f"{d} already holds a run; pass --resume to continue it or another --name")
        return d
    base = _base_name(args.seed)
    taken = sorted((p for p in root.glob(f"{base}*") if re.fullmatch(re.escape(base) + r"(-\d+)?", p.name)),
                   key=lambda p: p.stat().st_mtime) if root.exists() else []
    if args.resume:
        with_state = [p for p in taken if (p / "state.json").exists()]
        if not with_state:
            raise UserError(f"no NetAdapt run of {base!r} under {root} to resume; start one without --resume")
        check_netadapt_run(with_state[-1])
        return with_state[-1]
    names = {p.name for p in taken}
    name, k = base, 2
    while name in names:
        name, k = f"{base}-{k}", k + 1
    return root / name


def _read_json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--resume: {path.parent} has no {path.name}; it is not a complete NetAdapt run and "
                        "cannot be resumed (start a new run with another --name)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--resume: {path} is unreadable ({e}); start a new run with another --name") from None
    if not isinstance(doc, dict):
        raise UserError(f"--resume: {path} does not hold {what}; start a new run with another --name")
    return doc


def check_netadapt_run(d: Path) -> tuple[dict, dict]:
    """(invocation, config) of the NetAdapt run in ``d``; anything else (another command's folder, a
    folder missing what ``--resume`` reads) is one line."""
    if (d / "options.json").exists() and (d / "tune").exists():
        raise UserError(f"--resume: {d} is a search run, not a NetAdapt run; resume it with "
                        f"`python cli.py search --resume --name {d.name}`")
    if not (d / "state.json").exists():
        raise UserError(f"{d}: no run to resume (no state.json); start it without --resume")
    config = _read_json(d / "config.json", "a NetAdapt configuration")
    if config.get("command", COMMAND) != COMMAND:
        raise UserError(f"--resume: {d} holds a {config['command']} run, not a NetAdapt run; check --name")
    _read_json(d / "state.json", "a NetAdapt run state")
    invocation = _read_json(d / "invocation.json", "the options the run started with")
    if not (d / "checkpoints" / "iter_000.json").exists():
        raise UserError(f"--resume: {d} has no seed checkpoint (checkpoints/iter_000.json); start a new run")
    return invocation, config


def _infer_space(spec, name: str) -> str:
    from space.searchspace import SPACES

    prefix = (spec.name or "").split(":")[0]
    if prefix in SPACES:
        return prefix
    return "mobilenet_v3" if name.startswith("mobilenet_v3") or prefix.startswith("mobilenet_v3") else "mnasnet"


def _check_seed_source(args: argparse.Namespace) -> None:
    from space.references import REFERENCES
    from space.resolve import load_spec

    if args.seed not in REFERENCES and not Path(args.seed).exists():
        if args.seed_is_default:
            raise UserError(f"no {args.seed}: run `python cli.py search` first, or pass --seed with a reference "
                            "name (e.g. mobilenet_v3_small) or an ArchSpec JSON")
        raise UserError(f"--seed {args.seed!r}: no such file and not a reference network "
                        f"({', '.join(REFERENCES)})")
    load_spec(args.seed, args.width)  # a malformed seed fails here, before the data is read


def _check_latency_inputs(args: argparse.Namespace, run_dir: Path) -> None:
    """An unknown --space and a missing, corrupted or foreign latency table, refused before the data
    is read and the seed trained (the predictor is loaded only after both, for the same space and resolution)."""
    from latency.files import LOCAL_DEVICE
    from latency.load import check_table
    from space.archspec import ArchSpec
    from space.resolve import load_spec
    from space.searchspace import get_space

    if args.space is not None:
        get_space(args.space)
    spec = ArchSpec.load(run_dir / "checkpoints" / "iter_000.json") if args.resume else load_spec(args.seed, args.width)
    resolution = args.resolution if args.resolution and not args.resume else spec.resolution
    # Without a table for its space and resolution, local-cpu gets one built; that is not bad input.
    check_table(args.device, args.space or _infer_space(spec, str(args.seed)), resolution,
                build_if_missing=args.device == LOCAL_DEVICE)


def load_seed(args: argparse.Namespace, data: DataBundle, log: Callable[[str], None]
              ) -> tuple[ArchSpec, dict[str, torch.Tensor] | None]:
    """The seed ArchSpec fitted to the data, and its weights (None when it has none)."""
    from dataclasses import replace

    from space.references import REFERENCES
    from space.resolve import load_spec
    from train.weights import load_weights

    spec = load_spec(args.seed, args.width)
    weights_path = Path(args.weights) if args.weights else None
    if weights_path is None and args.seed not in REFERENCES:
        beside = Path(args.seed).with_suffix(".pt")
        weights_path = beside if beside.exists() else None
    state = load_weights(weights_path) if weights_path else None
    fit = {"num_classes": data.num_classes, "in_channels": data.in_channels}
    if args.resolution:
        fit["resolution"] = args.resolution
    if state is not None and (spec.num_classes, spec.in_channels) != (data.num_classes, data.in_channels):
        raise UserError(f"seed {args.seed} has {spec.num_classes} classes and {spec.in_channels} input channels but "
                        f"the data has {data.num_classes} and {data.in_channels}; pass the data it was trained on")
    spec = replace(spec, **fit)
    if state is not None:
        from space.builder import build_model
        from train.weights import check_fits

        check_fits(build_model(spec), state, f"seed weights {weights_path}")
    if state is None:
        log(f"seed {args.seed}: no weights found; it will be trained first")
    else:
        log(f"seed {args.seed}: weights {weights_path}")
    return spec, state


def cmd_netadapt(args: argparse.Namespace) -> int:
    import torch

    from common.paths import results_dir
    from latency import load_predictor
    from netadapt.loop import NetAdaptRun, log
    from train.cli_args import data_from_args

    args.seed_is_default = args.seed is None
    if args.seed is None:
        args.seed = str(results_dir() / DEFAULT_SEED)
    run_dir = _pick_run_dir(args)  # a run folder as --seed names the run after itself
    args.seed = seed_file(args.seed)
    if args.resume:
        refuse_if_running(run_dir)
    if args.resume:
        saved, saved_config = check_netadapt_run(run_dir)
        for k in RUN_OPTIONS:
            setattr(args, k, saved.get(k))
        config = NetAdaptConfig.from_dict(saved_config)
        config.address = args.address  # where to run is this invocation's choice, not the run's
        config.check()
    else:
        config = NetAdaptConfig(
            target_ms=args.target_ms, target_ratio=args.target_ratio, delta=args.delta, decay=args.decay,
            steps=args.steps, select=args.select, final_epochs=args.final_epochs, seed_epochs=args.seed_epochs,
            lr=args.lr, batch_size=args.batch_size, workers=args.workers, seed=args.train_seed,
            max_iterations=args.max_iterations, min_channels=args.min_channels, channel_step=args.channel_step,
            importance=args.importance,
            measure_iterations=args.measure_iterations, augment=args.augment, eval_limit=args.eval_limit,
            address=args.address,
        )
        config.check()
    # The driver trains the seed and the final network; a single thread is steadier on a shared machine
    # and leaves the cores to the proposal workers.
    torch.set_num_threads(max(1, config.threads))
    # Check everything the user gave before printing anything, so bad input is one line.
    if not args.resume:
        _check_seed_source(args)
    _check_latency_inputs(args, run_dir)
    data = data_from_args(args, progress=False)
    notes: list[str] = []
    seed_spec, seed_state = load_seed(args, data, notes.append) if not args.resume else (None, None)
    if args.resume:
        from space.archspec import ArchSpec

        spec0 = ArchSpec.load(run_dir / "checkpoints" / "iter_000.json")
    else:
        spec0 = seed_spec
    space = args.space or _infer_space(spec0, str(args.seed))
    predictor = load_predictor(args.device, space=space, resolution=spec0.resolution,
                               build_if_missing=(args.device == "local-cpu"))
    interruption = Interruption("NetAdapt")
    run = NetAdaptRun(run_dir, config, data, predictor, stop=interruption.requested)
    if not args.resume:
        from netadapt.outputs import write_json

        run.resolve_target(seed_spec)  # before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json({**{k: getattr(args, k) for k in RUN_OPTIONS}, "space": space, "argv": getattr(args, "argv", [])},
                   run_dir / "invocation.json")
    d = data.describe()
    log(f"data {d['name']}: {d['num_classes']} classes, {d['in_channels']}x{d['native_resolution']}px (training at "
        f"{d['resolution']}px), train/val/test {d['train']}/{d['val']}/{d['test']}")
    for note in notes:
        log(note)
    log(f"latency predictor: device {args.device}, space {space}, resolution {spec0.resolution}")
    log(f"run folder {run_dir}")
    # Ray prints some events (a proposal's worker dying) to sys.stdout; --json keeps stdout to one object.
    mark(run_dir, "running")
    try:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext(), interruption:
            summary = run.run(seed_spec, seed_state, resume=args.resume)
    except (Interrupted, KeyboardInterrupt):  # the first Ctrl-C (stopped cleanly) or the second (at once)
        return _interrupted(run_dir, args.json)
    except BaseException as e:
        mark(run_dir, "failed", error=f"{type(e).__name__}: {e}"[:300])
        raise
    mark(run_dir, "finished")
    if args.json:
        print_json(summary)
    else:
        print(f"NetAdapt {summary['seed'] or args.seed}: {summary['iterations']} iterations ({summary['stop_reason']})")
        print(f"  latency  seed {summary['seed_latency_ms']:.3f} ms -> final {summary['final_latency_ms']:.3f} ms "
              f"measured ({summary['final_predicted_ms']:.3f} ms predicted, target {summary['target_ms']:.3f} ms "
              f"{summary['target_basis']}: {'met' if summary['target_met_measured'] else 'NOT met'} measured, "
              f"predictor error {summary['predictor_error']:.1%})")
        print(f"  accuracy seed {summary['seed_accuracy']:.4f} -> final {summary['final_accuracy']:.4f} (test split)")
        print(f"  wrote {summary['run_dir']}/ (netadapt.json, netadapt.pt, netadapt.onnx, history.csv, progress.png)")
    sys.stdout.flush()
    return 0


def _interrupted(run_dir: Path, as_json: bool) -> int:
    """What an interrupted run leaves and says: how to continue it, exit code 130."""
    import shutil

    from common.interrupt import EXIT_INTERRUPTED

    if not (run_dir / "state.json").exists():
        # Stopped while the seed was still being trained: there is nothing to continue from.
        shutil.rmtree(run_dir, ignore_errors=True)
        doc = {"status": "interrupted", "run_dir": None, "iterations": 0, "resume_command": ""}
        line = "NetAdapt interrupted before the seed was ready; nothing was kept, run the same command again"
    else:
        mark(run_dir, "interrupted")
        state = json.loads((run_dir / "state.json").read_text())
        cmd = f"python cli.py netadapt --resume --name {run_dir.name}"
        doc = {"status": "interrupted", "run_dir": str(run_dir), "iterations": state["iteration"],
               "phase": state["phase"], "resume_command": cmd}
        line = (f"NetAdapt interrupted after iteration {state['iteration']} ({state['phase']}); results so far in "
                f"{run_dir}; continue with: {cmd}")
    print(line, file=sys.stderr, flush=True)
    if as_json:
        print_json(doc)
    return EXIT_INTERRUPTED
