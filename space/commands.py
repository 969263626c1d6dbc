"""``cli.py space ...``: inspect networks and search spaces, sample ArchSpecs."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from space.cli_types import check_output_path, positive_int
from space.errors import UserError


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="inspect networks and search spaces, sample ArchSpecs")
    ssub = p.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    ssub.required = True

    show = ssub.add_parser("show", help="print a network's layers, parameters and MACs")
    show.add_argument("spec", metavar="NAME_OR_JSON", help="reference name (e.g. mobilenet_v3_large) or ArchSpec JSON file")
    show.add_argument("--resolution", type=positive_int, help="override the input resolution")
    show.add_argument("--classes", type=positive_int, help="override the number of classes")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=cmd_show)

    sample = ssub.add_parser("sample", help="write N random ArchSpec JSON files from a search space")
    sample.add_argument("--space", default="mnasnet", help="search space (default: mnasnet)")
    sample.add_argument("--n", type=positive_int, default=10, help="how many (default 10)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", required=True, help="folder to write sample_XXXX.json into")
    sample.add_argument("--resolution", type=positive_int, default=224)
    sample.add_argument("--classes", type=positive_int, default=1000)
    sample.add_argument("--json", action="store_true", help="print the written paths as JSON")
    sample.set_defaults(func=cmd_sample)

    exp = sub.add_parser("export", help="write a runnable ONNX model of an ArchSpec, a search trial or a NetAdapt result")
    exp.add_argument("spec", metavar="SPEC_OR_RUN",
                     help="reference name, ArchSpec JSON (weights beside it as NAME.pt are used), or a run folder")
    exp.add_argument("--onnx", required=True, help="output .onnx path")
    exp.add_argument("--weights", help="state_dict .pt to load (default: the one beside the spec, if any)")
    exp.add_argument("--trial", metavar="TRIAL_ID", help="with a search run folder: export this trial (see its trials.csv)")
    exp.add_argument("--resolution", type=positive_int, help="input resolution (default: the spec's)")
    exp.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch check")
    exp.add_argument("--json", action="store_true", help="print one JSON object")
    exp.set_defaults(func=cmd_export)

    lst = ssub.add_parser("list", help="list search spaces and reference networks")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)


def _fmt_layers(spec) -> list[dict]:
    from space.cost import layer_costs

    rows = []
    for i, (layer, res, c) in enumerate(zip(spec.layers, spec.layer_resolutions(), layer_costs(spec))):
        rows.append({
            "index": i, "op": layer.op, "kernel": layer.kernel, "stride": layer.stride, "in_ch": layer.in_ch,
            "out_ch": layer.out_ch, "exp_ch": layer.exp_ch, "se_ch": layer.se_ch, "act": layer.act,
            "residual": layer.residual, "input_res": res, "params": c.params, "macs": c.macs,
        })
    return rows


def cmd_show(args: argparse.Namespace) -> int:
    from space.cost import cost, head_cost, stem_cost
    from space.resolve import load_spec

    spec = load_spec(args.spec)
    if args.resolution:
        spec = replace(spec, resolution=args.resolution)
    if args.classes:
        spec = replace(spec, num_classes=args.classes)
    total, layers = cost(spec), _fmt_layers(spec)
    if args.json:
        print_json({
            "name": spec.name, "resolution": spec.resolution, "num_classes": spec.num_classes,
            "params": total.params, "macs": total.macs, "layers": layers,
            "stem": {**spec.to_dict()["stem"], "params": stem_cost(spec).params, "macs": stem_cost(spec).macs},
            "head": {**spec.to_dict()["head"], "params": head_cost(spec).params, "macs": head_cost(spec).macs},
            "spec": spec.to_dict(),
        })
        return 0
    st = spec.stem
    print(f"{spec.name or args.spec}: {spec.resolution}x{spec.resolution}x{spec.in_channels} -> {spec.num_classes} classes")
    print(f"stem: conv {st.kernel}x{st.kernel}/{st.stride} -> {st.out_ch} {st.act}")
    hdr = f"{'#':>3} {'op':<7}{'k':>2}{'s':>3}{'in':>6}{'exp':>6}{'out':>6}{'se':>5} {'act':<7}{'res':<4}{'input':>7}{'params':>11}{'MMACs':>9}"
    print(hdr)
    for r in layers:
        print(f"{r['index']:>3} {r['op']:<7}{r['kernel']:>2}{r['stride']:>3}{r['in_ch']:>6}{r['exp_ch']:>6}{r['out_ch']:>6}"
              f"{r['se_ch']:>5} {r['act']:<7}{'yes' if r['residual'] else '-':<4}{r['input_res']:>7}"
              f"{r['params']:>11,}{r['macs'] / 1e6:>9.2f}")
    hd = spec.head
    print(f"head: conv1x1 {hd.conv_ch or '-'} {hd.act}, {hd.pool} pool, fc {hd.fc_ch or '-'}, dropout {spec.dropout}")
    print(f"params {total.params:,}   MACs {total.macs / 1e6:,.1f}M")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from space.atomic import atomic_write_text
    from space.searchspace import get_space

    space = get_space(args.space)
    out = check_output_path(args.out, "--out", folder=True)
    rng = np.random.default_rng(args.seed)
    paths = []
    for i in range(args.n):
        tokens = space.sample(rng)
        spec = space.decode(tokens, resolution=args.resolution, num_classes=args.classes)
        doc = {**spec.to_dict()}
        paths.append(str(atomic_write_text(out / f"sample_{i:04d}.json", json.dumps(doc, indent=2) + "\n")))
    if args.json:
        print_json({"space": space.name, "seed": args.seed, "files": paths})
    else:
        print(f"wrote {len(paths)} ArchSpecs from space {space.name!r} (seed {args.seed}) to {out}/")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from space.cost import cost
    from space.references import REFERENCES
    from space.searchspace import SPACES, get_space

    spaces = [get_space(n) for n in SPACES]
    refs = {n: cost(f()) for n, f in REFERENCES.items()}
    if args.json:
        print_json({
            "spaces": [{"name": s.name, "decisions": len(s.decisions), "size": s.size, "description": s.description} for s in spaces],
            "references": {n: {"params": c.params, "macs": c.macs} for n, c in refs.items()},
        })
        return 0
    print("search spaces:")
    for s in spaces:
        print(f"  {s.name:<14} {len(s.decisions)} decisions, {s.size:.2e} networks: {s.description}")
    print("reference networks (224x224, 1000 classes):")
    for n, c in refs.items():
        print(f"  {n:<20} {c.params:>10,} params {c.macs / 1e6:>8.1f}M MACs")
    return 0


# (spec file, weights file) pairs that runs leave behind, most final first.
RUN_ARTIFACTS = (("netadapt.json", "netadapt.pt"), ("seed.json", "seed.pt"), ("arch.json", "weights.pt"))


def _trial_source(run: Path, trial: str, weights: str | None) -> tuple[object, Path | None]:
    """A search trial's ArchSpec and weights, read from the run's trials.csv (columns trial_id, arch, weights)."""
    import csv

    from space.archspec import ArchSpec

    table = run / "trials.csv"
    if not table.is_file():
        raise UserError(f"{run}: has no trials.csv, so it is not a search run; --trial needs one")
    try:
        with table.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("trial_id") == trial]
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{table}: not a readable trials table ({type(e).__name__}); pass a search run folder") from None
    if not rows or not rows[0].get("arch"):
        raise UserError(f"{table}: no finished trial {trial!r}; pick a trial_id from that file")
    spec = ArchSpec.from_json(rows[0]["arch"], source=f"{table} trial {trial}")
    w = Path(weights) if weights else (Path(rows[0]["weights"]) if rows[0].get("weights") else None)
    if w is not None and not weights and not w.is_file():
        w = None  # trials off the Pareto front have their weights pruned after the run
    return spec, w


def resolve_export_source(arg: str, weights: str | None, trial: str | None = None) -> tuple[object, Path | None]:
    """(ArchSpec, weights path or None) from a name, a spec file, a run folder or a search trial."""
    from space.archspec import ArchSpec
    from space.resolve import load_spec

    p = Path(arg)
    if trial is not None:
        if not p.is_dir():
            raise UserError(f"--trial needs a search run folder, and {arg!r} is not a folder")
        return _trial_source(p, trial, weights)
    if p.is_dir():
        for spec_name, weights_name in RUN_ARTIFACTS:
            if (p / spec_name).is_file():
                w = Path(weights) if weights else (p / weights_name if (p / weights_name).is_file() else None)
                return ArchSpec.load(p / spec_name), w
        raise UserError(f"{p}: is a folder but holds none of {', '.join(s for s, _ in RUN_ARTIFACTS)}; "
                        "pass a search run, a NetAdapt run, a trial folder or an ArchSpec file")
    spec = load_spec(arg)
    if weights:
        return spec, Path(weights)
    beside = p.with_suffix(".pt")
    return spec, beside if p.suffix == ".json" and beside.is_file() else None


def cmd_export(args: argparse.Namespace) -> int:
    from space.export import export_onnx

    spec, weights = resolve_export_source(args.spec, args.weights, args.trial)
    if args.resolution:
        spec = replace(spec, resolution=args.resolution)
    out = check_output_path(args.onnx, "--onnx")
    result = export_onnx(spec, out, weights=weights, check=not args.no_check)
    if args.json:
        print_json(result)
        return 0
    src = f"with weights {weights}" if weights else "with random weights (no weights file found or given)"
    print(f"wrote {out} ({spec.name or 'network'}, {src})")
    if "max_abs_diff" in result:
        print(f"onnxruntime vs torch: max |diff| = {result['max_abs_diff']:.2e}, "
              f"{result['max_rel_diff']:.1e} of the largest logit")
    return 0
