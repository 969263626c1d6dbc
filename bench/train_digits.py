#!/usr/bin/env python3
"""Proxy training on the embedded digits data: accuracy and time of typical searched networks.

Random networks of the ``mnasnet`` space (10 classes, 1 input channel) trained for ``--epochs``
epochs at several training resolutions (8 = the data's own, upsampled 16 and 32) and optimizers,
one torch thread, as the search trains them: their proxy networks (``space.proxy``; ``--min-map 1``
trains the deployment strides). Prints one line per run, then the machine.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--networks", type=int, default=2, help="random networks (space samples 0..N-1)")
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--min-map", type=int, default=2, help="the proxy network's smallest last-stage map")
    ap.add_argument("--configs", nargs="+", default=["8:adamw:0.003", "16:adamw:0.003", "32:adamw:0.003", "16:sgd:0.2"],
                    help="RESOLUTION:OPTIMIZER:LR")
    args = ap.parse_args(argv)

    import torch

    from space.builder import build_model
    from space.cost import cost
    from space.proxy import proxy_spec
    from space.searchspace import get_space
    from train.data import load_data
    from train.loop import train_model

    torch.set_num_threads(1)
    space = get_space("mnasnet")
    print(f"{'res':>4} {'opt':>6} {'lr':>6} {'net':>4} {'params':>9} {'val acc':>8} {'steps':>6} {'seconds':>8}")
    for cfg in args.configs:
        res, opt, lr = cfg.split(":")
        data = load_data("digits", train_resolution=int(res))
        for n in range(args.networks):
            spec, _ = proxy_spec(space.decode(space.sample(n), **data.spec_kwargs()), int(res), args.min_map)
            r = train_model(build_model(spec), data, epochs=args.epochs, batch_size=args.batch_size, lr=float(lr),
                            optimizer=opt, seed=0)
            print(f"{res:>4} {opt:>6} {lr:>6} {n:>4} {cost(spec).params:>9,} {r.accuracy:8.3f} {r.steps:>6} "
                  f"{r.seconds:8.1f}", flush=True)
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}, 1 thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
