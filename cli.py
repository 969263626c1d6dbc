#!/usr/bin/env python3
"""hwnas command line: ``python cli.py COMMAND ...``; ``python cli.py --help`` lists the commands.

Each package registers its commands in its ``commands.py`` (``register(subparsers)``); handlers
import their heavy dependencies (torch, ray) themselves so that light commands start fast.
Bad input raises :class:`common.errors.UserError`, printed here as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

# Packages whose commands.py adds sub-commands, in the order --help lists them.
COMMAND_MODULES = ("space", "latency", "search", "netadapt", "export")


class Parser(argparse.ArgumentParser):
    """argparse with the project's contract for bad input: one line on stderr, exit code 2.

    Sub-command parsers are made with the same class, so every option error reads the same.
    """

    def error(self, message: str) -> NoReturn:
        # argparse's default prints the whole usage first; the pointer to --help replaces it.
        self.exit(2, f"error: {message}; see `python {self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cli.py",
        description="Hardware-aware neural architecture search: measure latency on your device, "
        "search a MnasNet-style space with an RNN controller, trim the result with NetAdapt.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{name}.commands")
        except ModuleNotFoundError as e:
            if e.name in (name, f"{name}.commands"):
                continue  # that part is not installed in this checkout
            raise
        module.register(sub)
    runs = sub.add_parser("runs", help="list the search and NetAdapt runs under results/ and what became of them",
                          description="One line per run of results/runs/ (search) and results/netadapt/: its status "
                          "(running, finished, interrupted, stopped by its time budget, failed, or killed: the "
                          "process died without a word), trials or iterations done, the best reward (search) or "
                          "the accuracy (NetAdapt), the network it produced, and the command that started it.")
    runs.add_argument("--json", action="store_true", help="one JSON list of the runs on stdout")
    runs.set_defaults(func=cmd_runs)
    return parser


def cmd_runs(args: argparse.Namespace) -> int:
    """``cli.py runs``: the runs of the results folder, oldest first."""
    from common.cli_io import print_json
    from common.paths import results_dir

    rows = []
    for folder, module, fn in (("runs", "search.rundir", "describe"), ("netadapt", "netadapt.outputs", "describe_run")):
        root = results_dir() / folder
        if not root.is_dir():
            continue
        describe = getattr(importlib.import_module(module), fn)
        rows += [describe(d) for d in sorted(root.iterdir(), key=lambda d: d.stat().st_mtime) if d.is_dir()]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no runs under {results_dir()}")
        return 0
    top = results_dir() / "seed.json"
    top_name = _spec_name(top)
    table = [("run", "status", "done", "best", "network", "command")]
    for r in rows:
        if r["kind"] == "search":
            done = f"{r['done']}/{r['budget']} trials"
            best = f"reward {r['best_reward']:.4f} (trial {r['best_trial']})" if r["best_reward"] is not None else "-"
            if r["demonstration"]:
                best += ", demonstration"
            net = _short(r["seed"]) if r["seed"] else "-"
            if r["seed"] and top_name and top_name.split("/")[0] == r["run"]:
                net += f" = {_short(top)}"
        else:
            done = f"{r['done'] if r['done'] is not None else 0} iterations"
            best = f"accuracy {r['accuracy']:.4f}" if isinstance(r["accuracy"], (int, float)) else "-"
            net = _short(r["seed"]) if r["seed"] else "-"
        table.append((f"{r['kind']}/{r['run']}", r["status"], done, best, net, r["command"]))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[5])
    return 0


def _short(path) -> str:
    """``path`` relative to the working folder when it lies under it."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def _spec_name(path) -> str:
    import json

    try:
        return str(json.loads(path.read_text()).get("name", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def main(argv: list[str] | None = None) -> int:
    # Keep the repository importable however the script is started.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import warnings

    from common.cli_io import warning_line
    from common.errors import UserError

    warnings.showwarning = warning_line

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given, which run folders keep
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
