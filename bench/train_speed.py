#!/usr/bin/env python3
"""Training speed of sampled networks in NCHW and NHWC (channels-last) memory layout, one thread.

Networks of the ``mnasnet`` space (10 classes, 3 channels) as proxy networks at ``--resolution``
(``space.proxy``), one AdamW step on a random batch, the fastest of ``--repeat`` steps after one
warm-up step, the two layouts interleaved so that both see the same load. Prints milliseconds per
image for each, their ratio, and the machine with its load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--networks", type=int, default=6, help="space samples 100000..100000+N-1 (bench/proxy_fidelity.py's)")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--repeat", type=int, default=4)
    args = ap.parse_args(argv)

    import torch

    from space.builder import build_model
    from space.proxy import proxy_spec
    from space.searchspace import get_space

    torch.set_num_threads(1)
    sp = get_space("mnasnet")
    load0 = os.getloadavg()[0]
    print(f"{'net':>4} {'batch':>5} {'NCHW ms/img':>12} {'NHWC ms/img':>12} {'speed-up':>9}")
    for n in range(args.networks):
        spec, _ = proxy_spec(sp.decode(sp.sample(100_000 + n), num_classes=10, in_channels=3), args.resolution)
        for bs in args.batch_size:
            x = torch.randn(bs, 3, args.resolution, args.resolution)
            y = torch.randint(0, 10, (bs,))
            runs = {}
            for layout in (torch.contiguous_format, torch.channels_last):
                model = build_model(spec).to(memory_format=layout)
                runs[layout] = (model, torch.optim.AdamW(model.parameters()), x.contiguous(memory_format=layout))
            best = {layout: float("inf") for layout in runs}
            for rep in range(args.repeat + 1):
                for layout, (model, opt, xb) in runs.items():
                    t0 = time.perf_counter()
                    loss = torch.nn.functional.cross_entropy(model(xb), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if rep:  # the first step warms up the allocator
                        best[layout] = min(best[layout], time.perf_counter() - t0)
            a, b = (best[layout] / bs * 1000 for layout in runs)
            print(f"{n:>4} {bs:>5} {a:12.2f} {b:12.2f} {a / b:8.2f}x", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch "
          f"{torch.__version__}, 1 thread, resolution {args.resolution}; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
