"""Command-line options for data and training, shared by ``search`` and ``netadapt`` so both
read data the same way (and split it the same way: NetAdapt's validation images must not be
ones the search trained the seed on)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from common.cli_io import positive_int

if TYPE_CHECKING:
    from train.data import DataBundle


DEFAULT_BATCH = 128


def add_data_args(parser: argparse.ArgumentParser, batch_size: int = DEFAULT_BATCH,
                  unset_is_none: bool = False) -> argparse._ArgumentGroup:
    """Add ``--data``, ``--train-resolution``, ``--batch-size`` (defaulting to ``batch_size``, which
    the help shows), ``--data-limit``, ``--eval-limit``, ``--split-seed`` and ``--augment`` to a sub-command.

    ``unset_is_none``: an option not given is None, whatever its default (for a command that must tell
    what the command line gave, e.g. to compare it with a run's stored options); the help still shows
    the default."""
    g = parser.add_argument_group("data")
    if unset_is_none:
        batch_size_default, split_seed_default, augment_default = None, None, None
    else:
        batch_size_default, split_seed_default, augment_default = batch_size, 0, False
    g.add_argument("--data", metavar="SOURCE", default=None,
                   help="'digits' (default: scikit-learn's bundled 8x8 digits, offline), 'cifar10' (downloaded "
                        "if missing), a cifar-10-python.tar.gz / cifar-10-batches-py path, or an ImageFolder "
                        "directory (class/xxx.png, optionally under train/ and test/)")
    g.add_argument("--train-resolution", type=positive_int, default=None, metavar="PX",
                   help="resize images to PX x PX for training (default: the data's own size)")
    g.add_argument("--batch-size", type=positive_int, default=batch_size_default, help=f"training batch size (default {batch_size})")
    g.add_argument("--data-limit", type=positive_int, default=None, metavar="N",
                   help="use at most N training images (a class-balanced subset) for fast runs")
    g.add_argument("--eval-limit", type=positive_int, default=None, metavar="N",
                   help="use at most N validation and N test images")
    g.add_argument("--split-seed", type=int, default=split_seed_default,
                   help="seed of the train/val/test split (default 0; keep it equal between search and netadapt)")
    g.add_argument("--augment", action="store_true", default=augment_default,
                   help="random translations (and flips where they keep the label) while training")
    return g


def data_from_args(args: argparse.Namespace, progress: bool = True) -> DataBundle:
    """The DataBundle the options of :func:`add_data_args` describe."""
    from train.data import load_data

    data = load_data(
        args.data, seed=args.split_seed, limit=args.data_limit, eval_limit=args.eval_limit,
        train_resolution=args.train_resolution, progress=progress,
    )
    if progress:
        d = data.describe()
        print(f"data {d['name']}: {d['num_classes']} classes, {d['in_channels']}x{d['native_resolution']}px "
              f"(training at {d['resolution']}px), train/val/test {d['train']}/{d['val']}/{d['test']}",
              file=sys.stderr)
    return data
