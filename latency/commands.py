"""``cli.py latency ...``: measure, predict, build/export/import tables, validate the predictor."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from common.cli_io import check_output_path, non_negative_int, positive_int, print_json
from common.errors import UserError
from latency.build import DEFAULT_MODE
from space.resolve import add_width_arg

DEFAULT_DEVICE = "local-cpu"


def _common_spec(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="NAME_OR_JSON", help="reference name (e.g. mobilenet_v3_large) or ArchSpec JSON file")
    add_width_arg(p)
    p.add_argument("--resolution", type=positive_int, help="override the input resolution")
    p.add_argument("--classes", type=positive_int, help="override the number of classes")


def _runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--provider", default="cpu", help="execution provider: cpu (default), cuda, or a full provider name")


def _space_res(p: argparse.ArgumentParser, res_default: int = 224) -> None:
    p.add_argument("--space", default="mnasnet", help="search space (default mnasnet)")
    p.add_argument("--resolution", type=positive_int, default=res_default, help=f"input resolution (default {res_default})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="measure latency with onnxruntime, build latency tables, predict, validate")
    ls = p.add_subparsers(dest="latency_command", metavar="SUBCOMMAND")
    ls.required = True

    m = ls.add_parser("measure", help="measure a network end to end with onnxruntime (median, p10, p90)")
    _common_spec(m)
    _runtime(m)
    m.add_argument("--warmup", type=non_negative_int, default=10, help="warm-up runs (default 10)")
    m.add_argument("--runs", type=positive_int, default=50, help="timed runs per round (default 50)")
    m.add_argument("--clock", default="auto", choices=("auto", "cpu", "wall"),
                   help="auto: the thread's CPU time for 1 CPU thread (robust on a shared machine), else wall time")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=cmd_measure)

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
    b.add_argument("--networks", type=int, help="whole networks to measure for the calibration (default 60 quick, 100 full)")
    _runtime(b)
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=cmd_build)

    e = ls.add_parser("export", help="write the ONNX files to measure on a target device, a manifest and the runner")
    _space_res(e)
    e.add_argument("--out", required=True, help="folder to write into")
    e.add_argument("--mode", choices=("quick", "full"), default=DEFAULT_MODE, help=f"which units (default {DEFAULT_MODE})")
    e.add_argument("--networks", type=int, help="whole networks for the calibration (default 60 quick, 100 full)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_export)

    i = ls.add_parser("import", help="turn the runner's measurements CSV into the device's latency table")
    i.add_argument("csv", metavar="CSV", help="measurements CSV written by runner.py")
    i.add_argument("--device", required=True, help="device name to file the table under")
    i.add_argument("--manifest", help="export folder with manifest.json (default: the CSV's folder)")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_import)

    v = ls.add_parser("validate", help="score the predictor and two baselines on held-out networks measured end to end")
    v.add_argument("--device", default=DEFAULT_DEVICE, help=f"device (default {DEFAULT_DEVICE}); its networks are measured here")
    _space_res(v)
    v.add_argument("--n", type=positive_int, default=100, help="held-out networks (default 100)")
    v.add_argument("--seed", type=int, default=None, help="seed of the held-out sample")
    v.add_argument("--passes", type=positive_int, default=None,
                   help="passes over the networks; each keeps its quietest (default 2, as the table build)")
    v.add_argument("--plot", help="scatter PNG path (default results/latency/DEVICE/validation-SPACE-rRES.png)")
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
                 clock=args.clock)
    if args.json:
        print_json({"name": name, "latency_ms": st.median_ms, **st.to_dict()})
    else:
        print(f"{name}: {st.median_ms:.3f} ms (p10 {st.p10_ms:.3f}, p90 {st.p90_ms:.3f}; {st.runs} runs, "
              f"{st.threads} thread(s), {st.provider}, {st.clock} clock, onnxruntime {st.ort_version})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from latency.load import load_predictor
    from space.searchspace import get_space

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

    if args.networks is not None and args.networks < 3:
        raise UserError(f"--networks {args.networks}: the calibration needs at least 3 networks; pass 3 or more")
    t0 = time.time()
    pred = build(args.device, args.space, args.resolution, args.mode, args.threads, args.provider, args.networks)
    out = {"device": args.device, "space": args.space, "resolution": args.resolution, "mode": args.mode,
           "units": len(pred.lookup), "calibration_networks": pred.calibration.n_networks,
           "calibration": pred.calibration.kind, "calibration_cv_mape": pred.calibration.cv_mape,
           "seconds": round(time.time() - t0, 1), "table": str(units_path(args.device))}
    if args.json:
        print_json(out)
    else:
        print(f"latency table for {args.device}: {out['units']} units, {out['calibration_networks']} calibration "
              f"networks (calibration {out['calibration']}), in {out['seconds']} s -> {out['table']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from latency.build import FULL_NETWORKS, QUICK_NETWORKS, calibration_specs
    from latency.sampling import units_to_measure
    from latency.transfer import export_folder
    from space.searchspace import get_space

    check_output_path(args.out, "--out", folder=True)
    sp = get_space(args.space)
    n = args.networks if args.networks is not None else (QUICK_NETWORKS if args.mode == "quick" else FULL_NETWORKS)
    if n < 0:
        raise UserError(f"--networks {n}: must be >= 0")
    units = units_to_measure(sp, args.resolution, args.mode)
    specs = calibration_specs(args.space, args.resolution, n)
    out = export_folder(args.out, units, [(args.space, args.resolution, s) for s in specs],
                        builds=[{"space": args.space, "resolution": args.resolution, "mode": args.mode}])
    res = {"out": str(out), "units": len(units), "networks": len(specs), "runner": str(Path(out) / "runner.py")}
    if args.json:
        print_json(res)
    else:
        print(f"wrote {len(units)} unit and {len(specs)} network ONNX files to {out}/; on the device run\n"
              f"  python3 runner.py {out.name} --out measurements.csv\n"
              f"then: python cli.py latency import measurements.csv --device NAME --manifest {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from latency.files import units_path
    from latency.load import fit_predictor
    from latency.table import LatencyTable
    from latency.transfer import import_measurements

    counts = import_measurements(args.csv, args.device, args.manifest)
    builds = LatencyTable.load(units_path(args.device)).meta.get("builds", [])
    for b in builds:
        fit_predictor(args.device, b["space"], b["resolution"])
    out = {"device": args.device, **counts, "table": str(units_path(args.device))}
    if args.json:
        print_json(out)
    else:
        print(f"imported {counts['units']} units and {counts['networks']} networks into {out['table']} "
              f"({counts['table_rows']} units in the table)")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from latency.validate import VALIDATION_SEED, validate

    if args.plot:
        check_output_path(args.plot, "--plot")  # before minutes of measuring, not after
    rep = validate(args.device, args.space, args.resolution, args.n,
                   VALIDATION_SEED if args.seed is None else args.seed, args.threads, args.provider, args.plot,
                   passes=args.passes)
    if args.json:
        print_json(rep)
        return 0
    print(f"{rep['n']} held-out networks ({args.space}, {args.resolution}x{args.resolution}) on {args.device}; "
          f"calibration {rep['calibration']} on {rep['calibration_networks']} networks:")
    print(f"  {'':<10}{'<=5%':>7}{'<=10%':>7}{'MAPE%':>8}{'RMSE ms':>9}{'Spearman':>10}{'Kendall':>9}")
    for label, m in (("predictor", rep), ("lut_sum", rep["baselines"]["lut_sum"]), ("flops", rep["baselines"]["flops"])):
        print(f"  {label:<10}{m['within_5pct']:>7.2f}{m['within_10pct']:>7.2f}{m['mape']:>8.2f}{m['rmse']:>9.3f}"
              f"{m['spearman']:>10.3f}{m['kendall']:>9.3f}")
    print(f"scatter plot: {rep['plot']}", file=sys.stderr)
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
