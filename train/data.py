"""Image classification data for the search trial and NetAdapt, in one in-memory form.

Sources (``load_data(source)``):

``None`` / ``"digits"``
    scikit-learn's bundled handwritten digits (1,797 8x8 grey images, 10 classes): real data that
    ships with an installed package, so every command runs offline by default.
``"cifar10"``
    CIFAR-10 (Krizhevsky 2009) in its python-archive format, from the data folder
    (``$HWNAS_DATA`` or ``results/data``), downloaded from the official URL when missing.
a path to ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/`` folder
    the same archive, already downloaded.
a path to an ImageFolder-style folder
    ``class/xxx.png|jpg`` (any PIL-readable image), optionally split into ``train/`` and ``test/``
    (or ``val/``) subfolders.

The readers of file-based sources are in :mod:`train.sources`, the splitting in :mod:`train.splits`.

Images are kept as uint8 NCHW tensors (small in memory); :meth:`DataBundle.prepare` turns a batch
into normalised floats (per-channel mean/std of the training split) at the training resolution.
Splits are stratified and fixed by ``seed``; every prefix of a split is class-balanced, so
``limit`` takes a balanced subset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.paths import results_dir
from train.splits import Selection, three_way

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split: ``x`` uint8 images N x C x H x W, ``y`` int64 labels N."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def head(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])


@dataclass
class DataBundle:
    """A classification data set split three ways, plus what a network needs to fit it.

    ``resolution`` is the side of the images :meth:`prepare` returns (the training resolution);
    ``native_resolution`` the side they are stored at. ``flip_ok`` says whether a horizontal flip
    keeps the label (not for digits).
    """

    name: str
    num_classes: int
    in_channels: int
    native_resolution: int
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    resolution: int = 0
    flip_ok: bool = True
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.resolution:
            self.resolution = self.native_resolution

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def with_resolution(self, resolution: int | None) -> DataBundle:
        """The same data served at another training resolution (None = native)."""
        return replace(self, resolution=resolution or self.native_resolution)

    def spec_kwargs(self) -> dict[str, int]:
        """What :meth:`SearchSpace.decode` needs so a network fits this data (classes, channels)."""
        return {"num_classes": self.num_classes, "in_channels": self.in_channels}

    def prepare(self, x: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """uint8 batch -> normalised float32 at :attr:`resolution`, on ``device``."""
        x = x.to(device, non_blocking=True).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            down = self.resolution < x.shape[-1]
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=down)
        return x

    def batches(self, split: str, batch_size: int, device: str | torch.device = "cpu",
                shuffle: bool = False, generator: torch.Generator | None = None,
                limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Prepared ``(x, y)`` batches of one split, in order or shuffled with ``generator``."""
        s = self.split(split).head(limit)
        n = len(s)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield self.prepare(s.x[idx], device), s.y[idx].to(device, non_blocking=True)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "num_classes": self.num_classes,
            "in_channels": self.in_channels, "native_resolution": self.native_resolution,
            "resolution": self.resolution, "train": len(self.train), "val": len(self.val), "test": len(self.test),
        }


# ---- public entry point -------------------------------------------------------------------------

VAL_FRACTION = 0.1
# The digits are small (1,797 images): a quarter of the training pool (450 images) validates, so that the
# proxy's accuracy has a standard error of 1-2 points rather than the 3-4 of 180 images (docs/search.md).
DIGITS_VAL_FRACTION = 0.25


def load_data(source: str | os.PathLike | None = None, seed: int = 0, limit: int | None = None,
              eval_limit: int | None = None, train_resolution: int | None = None,
              val_fraction: float | None = None, test_fraction: float = 0.15, download: bool = True,
              progress: bool = False) -> DataBundle:
    """Load a data set and split it into train / val / test.

    ``seed`` fixes the split (keep it the same across the search and NetAdapt so NetAdapt's
    validation images were never trained on). ``val_fraction`` of the training pool becomes the
    validation split (None: :data:`DIGITS_VAL_FRACTION` for the digits, :data:`VAL_FRACTION`
    otherwise); ``test_fraction`` of everything becomes the test split only when the source
    has no test split of its own. ``limit`` caps the training split, ``eval_limit`` the validation
    and test splits (balanced subsets). ``train_resolution`` resizes batches on the fly.
    """
    if limit is not None and limit < 1:
        raise UserError(f"data limit {limit} must be >= 1")
    if eval_limit is not None and eval_limit < 1:
        raise UserError(f"eval limit {eval_limit} must be >= 1")
    if train_resolution is not None and train_resolution < 1:
        raise UserError(f"training resolution {train_resolution} must be >= 1")
    text = "digits" if source is None else str(source)
    if val_fraction is None:
        val_fraction = DIGITS_VAL_FRACTION if text.lower() == "digits" else VAL_FRACTION
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise UserError("val and test fractions must lie in (0, 1) and sum to less than 1")
    sel = Selection(seed, limit, eval_limit, val_fraction, test_fraction)

    if text.lower() == "digits":
        bundle = _load_digits(sel)
    else:
        from train.sources import cifar_cached, load_cifar_archive, load_path

        if text.lower() in ("cifar10", "cifar-10"):
            bundle = load_cifar_archive(cifar_cached(download), sel)
        else:
            bundle = load_path(Path(text).expanduser(), sel, progress)
    bundle.info.update({"seed": seed, "limit": limit, "eval_limit": eval_limit})
    return bundle.with_resolution(train_resolution)


def data_dir() -> Path:
    """Where downloaded data sets live: ``$HWNAS_DATA`` or ``results/data``."""
    return Path(os.environ.get("HWNAS_DATA") or results_dir() / "data")


def make_bundle(name: str, source: str, x: torch.Tensor, y: np.ndarray, parts: tuple[np.ndarray, ...],
            classes: Sequence[str], flip_ok: bool) -> DataBundle:
    y_t = torch.as_tensor(y, dtype=torch.int64)
    train, val, test = (Split(x[torch.as_tensor(p, dtype=torch.long)], y_t[torch.as_tensor(p, dtype=torch.long)])
                        for p in parts)
    return _finish(name, source, train, val, test, classes, flip_ok)


def _finish(name: str, source: str, train: Split, val: Split, test: Split, classes: Sequence[str],
            flip_ok: bool) -> DataBundle:
    for split_name, s in (("train", train), ("val", val), ("test", test)):
        if len(s) == 0:
            raise UserError(f"{source}: the {split_name} split is empty; the data set is too small to split")
    xf = train.x.float().div_(255.0)
    mean = tuple(float(v) for v in xf.mean(dim=(0, 2, 3)))
    # Floor the std so a constant channel cannot blow up the normalisation.
    std = tuple(max(float(v), 1e-3) for v in xf.std(dim=(0, 2, 3)))
    return DataBundle(
        name=name, num_classes=len(classes), in_channels=int(train.x.shape[1]),
        native_resolution=int(train.x.shape[-1]), train=train, val=val, test=test,
        mean=mean, std=std, classes=tuple(classes), flip_ok=flip_ok, source=source,
    )


# ---- digits ------------------------------------------------------------------------------------

def _load_digits(sel: Selection) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixel values are 0..16; scale to 0..255 so every source is uint8.
    x = torch.as_tensor(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = d.target.astype(np.int64)
    parts = three_way(y, sel)
    return make_bundle("digits", "digits", x, y, parts, [str(c) for c in range(10)], flip_ok=False)
