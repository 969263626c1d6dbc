"""``cli.py space ...``: inspect networks and search spaces, sample ArchSpecs."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from common.cli_io import check_output_path, positive_int, print_json
from space.resolve import add_width_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="inspect networks and search spaces, sample ArchSpecs")
    ssub = p.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    ssub.required = True

    show = ssub.add_parser("show", help="print a network's layers, parameters and MACs")
    show.add_argument("spec", metavar="NAME_OR_JSON", help="reference name (e.g. mobilenet_v3_large) or ArchSpec JSON file")
    add_width_arg(show)
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

    lst = ssub.add_parser("list", help="list search spaces and reference networks")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)


def _fmt_layers(spec) -> list[dict]:
    from space.cost import layer_costs

    rows = []
    for i, (layer, res, c) in enumerate(zip(spec.layers, spec.layer_resolutions(), layer_costs(spec))):
        rows.append({
            "index": i, "op": layer.op, "kernel": layer.kernel, "stride": layer.stride, "in_ch": layer.in_ch,
            "out_ch": layer.out_ch, "exp_ch": layer.exp_ch, "se_ch": layer.se_ch,
            "se_gate": spec.se_gate if layer.se_ch else None, "act": layer.act, "pw_act": layer.pw_act,
            "residual": layer.residual, "input_res": res, "params": c.params, "macs": c.macs,
        })
    return rows


def cmd_show(args: argparse.Namespace) -> int:
    from space.cost import cost, head_cost, stem_cost
    from space.resolve import load_spec

    spec = load_spec(args.spec, args.width)
    if args.resolution:
        spec = replace(spec, resolution=args.resolution)
    if args.classes:
        spec = replace(spec, num_classes=args.classes)
    total, layers = cost(spec), _fmt_layers(spec)
    if args.json:
        print_json({
            "name": spec.name, "resolution": spec.resolution, "num_classes": spec.num_classes,
            "params": total.params, "macs": total.macs, "se_gate": spec.se_gate,
            "batchnorm": {"eps": spec.bn_eps, "momentum": spec.bn_momentum}, "layers": layers,
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
    se = f"SE gate {spec.se_gate}" if any(r["se_ch"] for r in layers) else "no SE"
    print(f"{se}; BatchNorm eps {spec.bn_eps:g}, momentum {spec.bn_momentum:g}")
    print(f"params {total.params:,}   MACs {total.macs / 1e6:,.1f}M")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from common.atomic import atomic_write_text
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
    width = max(len(s.name) for s in spaces)
    for s in spaces:
        print(f"  {s.name:<{width}} {len(s.decisions)} decisions, {s.size:.2e} networks: {s.description}")
    print("reference networks (224x224, 1000 classes):")
    for n, c in refs.items():
        print(f"  {n:<20} {c.params:>10,} params {c.macs / 1e6:>8.1f}M MACs")
    return 0
