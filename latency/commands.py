"""``cli.py latency ...``: measure, predict, build/export/import tables, validate the predictor."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from common.cli_io import (
    check_output_path,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    print_json,
)
from common.errors import UserError
from latency.build import DEFAULT_MODE
from latency.families import FAMILIES
from latency.measure import DEFAULT_BLOCKS, DEFAULT_RUNS, DEFAULT_SESSIONS, DEFAULT_WARMUP
from latency.probe import MIN_FAST
from latency.suite import SUITE_N, VALIDATE_N
from latency.units import MEASURE_PASSES
from space.resolve import add_width_arg
from space.searchspace import get_space

DEFAULT_DEVICE = "local-cpu"
DEFAULT_WAIT_S = 30.0  # `latency measure`: the longest wait for the fast mode (slow spells last up to minutes here)


def _common_spec(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="NAME_OR_JSON", help="reference name (e.g. mobilenet_v3_large) or ArchSpec JSON file")
    add_width_arg(p)
    p.add_argument("--resolution", type=positive_int, help="override the input resolution")
    p.add_argument("--classes", type=positive_int, help="override the number of classes")


def _runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--provider", default="cpu", help="execution provider: cpu (default), cuda, or a full provider name")


def _fast_within(p: argparse.ArgumentParser) -> None:
    from latency.runner import PROBE_TOLERANCE

    p.add_argument("--fast-within", type=float, default=100 * PROBE_TOLERANCE, metavar="PERCENT",
                   help="a block counts as run in the machine's fast mode when the probe block before it ran at most "
                        "this much slower than the probe's reference (without one: its fastest level in the "
                        f"measurement) (default {100 * PROBE_TOLERANCE:g}; lower is stricter and, with --wait, waits "
                        "longer)")


def _space_res(p: argparse.ArgumentParser, res_default: int = 224) -> None:
    p.add_argument("--space", default="mnasnet", help="search space (default mnasnet)")
    p.add_argument("--resolution", type=positive_int, default=res_default, help=f"input resolution (default {res_default})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="measure latency with onnxruntime, build latency tables, predict, validate")
    ls = p.add_subparsers(dest="latency_command", metavar="SUBCOMMAND")
    ls.required = True

    m = ls.add_parser("measure", help="measure a network end to end with onnxruntime in several fresh sessions")
    _common_spec(m)
    _runtime(m)
    m.add_argument("--warmup", type=non_negative_int, default=DEFAULT_WARMUP,
                   help=f"warm-up runs per session (default {DEFAULT_WARMUP})")
    m.add_argument("--runs", type=positive_int, default=DEFAULT_RUNS, help=f"timed runs per block (default {DEFAULT_RUNS})")
    m.add_argument("--blocks", type=positive_int, default=DEFAULT_BLOCKS,
                   help=f"blocks of timed runs per session (default {DEFAULT_BLOCKS})")
    m.add_argument("--sessions", type=positive_int, default=DEFAULT_SESSIONS,
                   help=f"fresh onnxruntime sessions, each with its own input buffers (default {DEFAULT_SESSIONS})")
    m.add_argument("--clock", default="auto", choices=("auto", "cpu", "wall"),
                   help="auto: the thread's CPU time for 1 CPU thread (robust on a shared machine), else wall time")
    m.add_argument("--wait", type=non_negative_float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                   help=f"when the probe says the machine runs in a slow spell, measure on for up to this long until "
                        f"it runs at its fast level again (default {DEFAULT_WAIT_S:g}; 0: do not wait)")
    m.add_argument("--min-fast", type=positive_int, default=MIN_FAST, metavar="BLOCKS",
                   help=f"with --wait: measure on until this many blocks ran at the fast level (default {MIN_FAST})")
    _fast_within(m)
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=cmd_measure)

    pb = ls.add_parser("probe", help="time this machine's probe model for a while: its fast level, which "
                                     "whole-network measurements keep their blocks against, and how often it ran slower")
    pb.add_argument("--seconds", type=positive_float, default=60.0, help="how long to time it (default 60)")
    _runtime(pb)
    pb.add_argument("--json", action="store_true", help="print one JSON object")
    pb.set_defaults(func=cmd_probe)

    pr = ls.add_parser("predict", help="predict a network's latency from the device's latency table")
    _common_spec(pr)
    pr.add_argument("--device", default=DEFAULT_DEVICE, help=f"latency table's device (default {DEFAULT_DEVICE})")
    pr.add_argument("--space", default="mnasnet", help="space whose calibration to use (default mnasnet)")
    pr.add_argument("--breakdown", action="store_true", help="also list every unit's latency")
    pr.add_argument("--json", action="store_true", help="print one JSON object")
    pr.set_defaults(func=cmd_predict)

    b = ls.add_parser("build", help="measure the units and networks a space needs on this machine and fit the predictor")
    b.add_argument("--device", default=DEFAULT_DEVICE, help=f"name to file the table under (default {DEFAULT_DEVICE})")
    _space_res(b)
    b.add_argument("--mode", choices=("quick", "full"), default=DEFAULT_MODE,
                   help=f"full: every unit of the space; quick: a sample of units + per-op model (default {DEFAULT_MODE})")
    b.add_argument("--networks", type=int, help="calibration networks per family (default 10 quick, 30 full)")
    _runtime(b)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_build)

    e = ls.add_parser("export", help="write the ONNX files to measure on a target device, a manifest and the runner")
    _space_res(e)
    e.add_argument("--out", required=True, help="folder to write into")
    e.add_argument("--mode", choices=("quick", "full"), default=DEFAULT_MODE, help=f"which units (default {DEFAULT_MODE})")
    e.add_argument("--networks", type=int, help="calibration networks per family (default 10 quick, 30 full)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_export)

    i = ls.add_parser("import", help="turn the runner's measurements CSV into the device's latency table")
    i.add_argument("csv", metavar="CSV", help="measurements CSV written by runner.py")
    i.add_argument("--device", required=True, help="device name to file the table under")
    i.add_argument("--manifest", help="export folder with manifest.json (default: the CSV's folder)")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_import)

    v = ls.add_parser("validate", help="score the predictor and two baselines on fresh networks measured end to end")
    v.add_argument("--device", default=DEFAULT_DEVICE, help=f"device (default {DEFAULT_DEVICE}); its networks are measured here")
    v.add_argument("--space", help="space whose fresh samples to score (default mnasnet; not with --suite)")
    v.add_argument("--resolution", type=positive_int, help="input resolution of those samples (default 224; not with --suite)")
    v.add_argument("--suite", nargs="?", const=",".join(FAMILIES), metavar="FAMILIES",
                   help=f"score every family separately (default all: {', '.join(FAMILIES)}; or a comma-separated list)")
    v.add_argument("--n", type=positive_int, help=f"networks per family (default {VALIDATE_N} without --suite, "
                   f"{SUITE_N} with it)")
    v.add_argument("--seed", type=int, default=None, help="seed of the networks (default: a new one every run, "
                   "printed; pass it to draw the same networks again)")
    v.add_argument("--passes", type=positive_int, default=None,
                   help=f"fresh sessions of every network, a pass over the list apart (default {MEASURE_PASSES}, as the "
                   "table build)")
    v.add_argument("--wait", type=non_negative_float, default=0.0, metavar="SECONDS",
                   help="measure each network as `latency measure` does, waiting up to this long for the machine's "
                        "fast mode where it has a probe reference (slower; far more repeatable on a machine with slow "
                        "spells; default 0: time them together, as the table build does)")
    _fast_within(v)
    v.add_argument("--plot", help="scatter PNG path (default results/latency/DEVICE/validation-suite-SEED.png)")
    _runtime(v)
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=cmd_validate)

    s = ls.add_parser("show", help="summarise a device's latency table")
    s.add_argument("--device", default=DEFAULT_DEVICE)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)


def _load(args: argparse.Namespace):
    from space.resolve import load_spec

    spec = load_spec(args.spec, args.width)
    if args.resolution:
        spec = replace(spec, resolution=args.resolution)
    if args.classes:
        spec = replace(spec, num_classes=args.classes)
    return spec


def cmd_measure(args: argparse.Namespace) -> int:
    from latency.measure import measure

    if args.spec.endswith(".onnx"):
        if args.resolution or args.classes:
            raise UserError("--resolution/--classes cannot change an ONNX file; pass an ArchSpec instead")
        target, name = args.spec, args.spec
    else:
        target = _load(args)
        name = target.name or args.spec
    st = measure(target, threads=args.threads, provider=args.provider, warmup=args.warmup, runs=args.runs,
                 blocks=args.blocks, sessions=args.sessions, clock=args.clock, wait_s=args.wait,
                 min_fast=args.min_fast, fast_within=args.fast_within / 100)
    if args.json:
        print_json({"name": name, **st.to_dict()})
    else:
        print(f"{name}: {st.latency_ms:.3f} ms (all {st.runs} runs: median {st.median_ms:.3f}, p10 {st.p10_ms:.3f}, "
              f"p90 {st.p90_ms:.3f}; sessions {st.session_spread:.1%} apart; {st.threads} thread(s), {st.provider}, "
              f"{st.clock} clock, onnxruntime {st.ort_version})")
    if st.slow_throughout:
        print(f"warning: the machine ran {st.slowdown:.2f}x slower than its fast mode throughout (probe "
              f"{st.probe_ms:.3f} ms against {st.probe_ms / st.slowdown:.3f} ms), so this figure is likely that much "
              f"high; measure again on an idle machine or with a longer --wait", file=sys.stderr)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import numpy as np

    from latency import probe
    from latency.measure import resolve_clock
    from latency.runner import PROBE_TOLERANCE, fast_mean

    clock = resolve_clock("auto", args.threads, args.provider)
    before = probe.reference_ms(args.threads, args.provider, clock)
    meds = np.asarray(probe.time_probe(args.seconds, args.threads, args.provider, clock))
    level = fast_mean(meds)
    ref = probe.record(level, args.threads, args.provider, clock)
    slow = meds > ref * (1 + PROBE_TOLERANCE)
    out = {"seconds": args.seconds, "blocks": int(meds.size), "level_ms": level, "reference_ms": ref,
           "reference_before_ms": before, "slow_share": float(slow.mean()),
           "slow_over_fast": float(np.median(meds[slow]) / ref) if slow.any() else None,
           "setting": probe.setting_key(args.threads, args.provider, clock), "file": str(probe.path())}
    if args.json:
        print_json(out)
        return 0
    spell = f" (median {out['slow_over_fast']:.2f}x)" if slow.any() else ""
    print(f"probe over {args.seconds:g} s ({meds.size} blocks): fast level {level:.3f} ms; "
          f"{out['slow_share']:.0%} of the blocks ran more than {PROBE_TOLERANCE:.0%} slower than the reference"
          f"{spell}; reference {ref:.3f} ms ({'new' if before is None else f'was {before:.3f} ms'}) in {out['file']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from latency.load import load_predictor

    get_space(args.space)  # an unknown space would only warn and predict with another calibration
    spec = _load(args)
    pred = load_predictor(args.device, args.space, spec.resolution)
    ms = pred.predict(spec)
    if args.json:
        out = {"name": spec.name or args.spec, "latency_ms": ms, "device": args.device,
               "lut_sum_ms": pred.unit_sum(spec)}
        if args.breakdown:
            out["units"] = pred.layer_breakdown(spec)
        print_json(out)
        return 0
    print(f"{spec.name or args.spec}: {ms:.3f} ms predicted on {args.device}")
    if args.breakdown:
        for u in pred.layer_breakdown(spec):
            src = "table" if u["measured"] else "model"
            print(f"  {u['op']:<7} k{u['kernel']} s{u['stride']} {u['in_ch']:>4}->{u['exp_ch']:>5}->{u['out_ch']:>5} "
                  f"se{u['se_ch']:<4} @{u['res']:<4} {u['ms']:8.3f} ms ({src})")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    import time

    from latency.build import build
    from latency.files import units_path

    if args.networks is not None and args.networks < 1:
        raise UserError(f"--networks {args.networks}: the calibration needs networks of every family; pass 1 or more")
    t0 = time.time()
    pred = build(args.device, args.space, args.resolution, args.mode, args.threads, args.provider, args.networks)
    out = {"device": args.device, "space": args.space, "resolution": args.resolution, "mode": args.mode,
           "units": len(pred.lookup), "calibration_networks": pred.calibration.n_networks,
           "calibration": pred.calibration.kind, "calibration_cv_mape": pred.calibration.cv_mape,
           "calibration_transfer_mape": pred.calibration.transfer_mape,
           "self_check": pred.meta.get("self_check"), "seconds": round(time.time() - t0, 1),
           "table": str(units_path(args.device))}
    if args.json:
        print_json(out)
    else:
        print(f"latency table for {args.device}: {out['units']} units, {out['calibration_networks']} calibration "
              f"networks (calibration {out['calibration']}), in {out['seconds']} s -> {out['table']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from latency.build import PLANS, calibration_specs, check_specs, for_space, range_keys
    from latency.families import key
    from latency.sampling import range_units, units_to_measure
    from latency.suite import fresh_seed
    from latency.transfer import export_folder
    from space.searchspace import get_space

    check_output_path(args.out, "--out", folder=True)
    sp = get_space(args.space)
    plan = for_space(PLANS[args.mode], args.space, args.resolution)
    if args.networks is not None:
        if args.networks < 0:
            raise UserError(f"--networks {args.networks}: must be >= 0")
        plan = replace(plan, calibration_per_family=args.networks)
    units = list(dict.fromkeys(units_to_measure(sp, args.resolution, args.mode) + range_units(plan.range_per_family)))
    calib = calibration_specs(plan)
    seed = fresh_seed()
    checks = check_specs(plan, seed, {key(s) for _, s in calib} | range_keys(plan))
    out = export_folder(args.out, units, [(f, "calibration", s) for f, s in calib] + [(f, "check", s) for f, s in checks],
                        builds=[{"space": args.space, "resolution": args.resolution, "mode": args.mode}],
                        check_seed=seed, passes=plan.passes)
    res = {"out": str(out), "units": len(units), "networks": len(calib), "self_check_networks": len(checks),
           "runner": str(Path(out) / "runner.py")}
    if args.json:
        print_json(res)
    else:
        print(f"wrote {len(units)} unit and {len(calib) + len(checks)} network ONNX files to {out}/; on the device run\n"
              f"  python3 runner.py {out.name} --out measurements.csv\n"
              f"then: python cli.py latency import measurements.csv --device NAME --manifest {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from latency.build import record_self_check
    from latency.files import units_path
    from latency.load import fit_predictor
    from latency.selfcheck import summary
    from latency.table import LatencyTable
    from latency.transfer import import_measurements

    counts = import_measurements(args.csv, args.device, args.manifest)
    checks = counts.pop("checks")
    builds = LatencyTable.load(units_path(args.device)).meta.get("builds", [])
    preds = [fit_predictor(args.device, b["space"], b["resolution"]) for b in builds]
    out = {"device": args.device, **counts, "table": str(units_path(args.device))}
    if checks and preds:
        out["self_check"] = record_self_check(args.device, preds[-1], checks, counts["check_seed"])
    if args.json:
        print_json(out)
    else:
        print(f"imported {counts['units']} units and {counts['networks']} networks into {out['table']} "
              f"({counts['table_rows']} units in the table)")
        if "self_check" in out:
            print(summary(out["self_check"]))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from latency.suite import run_suite

    if args.suite is not None and (args.space or args.resolution):
        raise UserError("--space and --resolution pick the networks of a plain validation; with --suite name the "
                        "families instead (e.g. --suite mobilenet_v3)")
    if args.suite is not None:
        names, n = [f.strip() for f in args.suite.split(",") if f.strip()], args.n or SUITE_N
    else:
        get_space(args.space or "mnasnet")
        names, n = [args.space or "mnasnet"], args.n or VALIDATE_N
    rep = run_suite(args.device, names, n, args.seed, args.threads, args.provider, args.plot, passes=args.passes,
                    resolution=args.resolution if args.suite is None and args.resolution != 224 else None,
                    wait_s=args.wait, fast_within=args.fast_within / 100)
    if args.json:
        print_json(rep)
        return 0
    print(f"{args.device}: seed {rep['seed']} (--seed {rep['seed']} draws these networks again); calibration "
          f"{rep['calibration']} on {rep['calibration_networks']} networks; load average "
          f"{rep['loadavg_1m'][0]:.1f} -> {rep['loadavg_1m'][1]:.1f}; blocks kept whose probe ran within "
          f"{100 * rep['fast_within']:g}% of its fast level")
    print(f"  {'family':<14}{'n':>4} {'predictor':<10}{'<=5%':>6}{'<=10%':>7}{'MAPE%':>7}{'Spearman':>9}   "
          f"{'sessions <=5% / <=10%':>22}")
    for f, r in rep["families"].items():
        rp = r["repeatability"]
        for label, m in (("full", r), ("lut_sum", r["baselines"]["lut_sum"]), ("flops", r["baselines"]["flops"])):
            same = f"{rp['sessions_within_5pct']:.2f} / {rp['sessions_within_10pct']:.2f}" if label == "full" else ""
            print(f"  {f if label == 'full' else '':<14}{r['n'] if label == 'full' else '':>4} {label:<10}"
                  f"{m['within_5pct']:>6.2f}{m['within_10pct']:>7.2f}{m['mape']:>7.2f}{m['spearman']:>9.3f}   {same:>22}")
    if rep["never_fast"]:
        print(f"warning: {rep['never_fast']} of the networks never ran in the machine's fast mode (latency probe): "
              f"their figures are high; validate again on an idle machine", file=sys.stderr)
    print(f"scatter plot: {rep['plot']}; networks: {rep['csv']}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from latency.files import device_dir, how_to_build, units_path
    from latency.table import LatencyTable, check_same_device

    p = units_path(args.device)
    if not p.exists():
        raise UserError(f"no latency table for device {args.device!r} in {device_dir(args.device)}; {how_to_build(args.device)}")
    t = LatencyTable.load(p)
    check_same_device(t.meta, args.device, str(p))
    counts = t.frame.groupby("op").size().to_dict()
    meta = {k: v for k, v in t.meta.items() if k != "sha256"}
    if args.json:
        print_json({"table": str(p), "units": len(t), "by_op": counts, "meta": meta})
        return 0
    print(f"{p}: {len(t)} units ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    for k, v in meta.items():
        print(f"  {k}: {v}")
    return 0
