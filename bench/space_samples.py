"""Check N random networks of every search space: tokens -> spec -> tokens is lossless, and each
network builds and runs at 224x224 and at 32x32 (one build serves both: the model is resolution
independent). Prints the counts and the machine it ran on.

    python bench/space_samples.py --n 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from space.builder import build_model  # noqa: E402
from space.cost import cost  # noqa: E402
from space.searchspace import SPACES, get_space  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spaces", nargs="+", default=sorted(SPACES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, python {platform.python_version()}, torch {torch.__version__}")
    failures = 0
    for name in args.spaces:
        space = get_space(name)
        rng = np.random.default_rng(args.seed)
        t0, round_trips, ran, mmacs = time.time(), 0, 0, []
        for i in range(args.n):
            tokens = space.sample(rng)
            spec = space.decode(tokens, num_classes=10)
            round_trips += space.encode(spec) == tokens
            model = build_model(spec).eval()
            ok = True
            with torch.no_grad():
                for res in (224, 32):
                    out = model(torch.randn(1, 3, res, res))
                    ok &= out.shape == (1, 10) and bool(torch.isfinite(out).all())
            ran += ok
            mmacs.append(cost(spec).macs / 1e6)
            if (i + 1) % 100 == 0:
                print(f"  {name}: {i + 1}/{args.n} ({time.time() - t0:.0f} s)", file=sys.stderr)
        failures += (args.n - round_trips) + (args.n - ran)
        q = np.percentile(mmacs, [0, 50, 100])
        print(f"{name}: {round_trips}/{args.n} round trips identical, {ran}/{args.n} built and ran at 224 and 32; "
              f"MACs at 224 min/median/max {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f} M; {time.time() - t0:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
