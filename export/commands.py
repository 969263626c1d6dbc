"""``cli.py export``: a runnable ONNX model of any ArchSpec, search trial or NetAdapt result."""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace

from common.cli_io import check_output_path, positive_int, print_json
from export.sources import resolve_export_source
from space.resolve import add_width_arg


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("export", help="write a runnable ONNX model of an ArchSpec, a search trial or a NetAdapt result")
    exp.add_argument("spec", metavar="SPEC_OR_RUN",
                     help="reference name, ArchSpec JSON (weights beside it as NAME.pt are used), or a run folder")
    exp.add_argument("--onnx", required=True, help="output .onnx path")
    exp.add_argument("--weights", help="state_dict .pt to load (default: the one beside the spec, if any)")
    exp.add_argument("--trial", metavar="TRIAL_ID", help="with a search run folder: export this trial (see its trials.csv)")
    add_width_arg(exp)
    how = exp.add_mutually_exclusive_group()
    how.add_argument("--resolution", type=positive_int, help="input resolution (default: the spec's)")
    how.add_argument("--as-trained", type=positive_int, metavar="PX",
                     help="the network as a search trial or NetAdapt trains it at PX pixels: the fewest early "
                          "strides set to 1 that leave a 2x2 last map (space.proxy), e.g. 8 for the digits")
    exp.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch check")
    exp.add_argument("--json", action="store_true", help="print one JSON object")
    exp.set_defaults(func=cmd_export)



def cmd_export(args: argparse.Namespace) -> int:
    from export.onnx import export_onnx

    spec, weights = resolve_export_source(args.spec, args.weights, args.trial, args.width)
    if args.resolution:
        spec = replace(spec, resolution=args.resolution)
    elif args.as_trained:
        from space.proxy import proxy_spec

        spec, plan = proxy_spec(spec, args.as_trained)
    out = check_output_path(args.onnx, "--onnx")
    result = export_onnx(spec, out, weights=weights, check=not args.no_check)
    if args.as_trained:
        result["as_trained"] = asdict(plan)
    if args.json:
        print_json(result)
        return 0
    src = f"with weights {weights}" if weights else "with random weights (no weights file found or given)"
    print(f"wrote {out} ({spec.name or 'network'}, {src})")
    if args.as_trained:
        print(f"as trained at {args.as_trained}px: total stride {plan.total_stride} instead of {plan.deploy_total_stride}, "
              f"a {plan.final_map}x{plan.final_map} last map")
    if "max_abs_diff" in result:
        print(f"onnxruntime vs torch: max |diff| = {result['max_abs_diff']:.2e}, "
              f"{result['max_rel_diff']:.1e} of the largest logit")
    return 0
