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

Images are kept as uint8 NCHW tensors (small in memory); :meth:`DataBundle.prepare` turns a batch
into normalised floats (per-channel mean/std of the training split) at the training resolution.
Splits are stratified and fixed by ``seed``; every prefix of a split is class-balanced, so
``limit`` takes a balanced subset.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from space.errors import UserError
from space.paths import results_dir

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

def load_data(source: str | os.PathLike | None = None, seed: int = 0, limit: int | None = None,
              eval_limit: int | None = None, train_resolution: int | None = None,
              val_fraction: float = 0.1, test_fraction: float = 0.15, download: bool = True,
              progress: bool = False) -> DataBundle:
    """Load a data set and split it into train / val / test.

    ``seed`` fixes the split (keep it the same across the search and NetAdapt so NetAdapt's
    validation images were never trained on). ``val_fraction`` of the training pool becomes the
    validation split; ``test_fraction`` of everything becomes the test split only when the source
    has no test split of its own. ``limit`` caps the training split, ``eval_limit`` the validation
    and test splits (balanced subsets). ``train_resolution`` resizes batches on the fly.
    """
    if limit is not None and limit < 1:
        raise UserError(f"data limit {limit} must be >= 1")
    if eval_limit is not None and eval_limit < 1:
        raise UserError(f"eval limit {eval_limit} must be >= 1")
    if train_resolution is not None and train_resolution < 1:
        raise UserError(f"training resolution {train_resolution} must be >= 1")
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise UserError("val and test fractions must lie in (0, 1) and sum to less than 1")
    sel = _Selection(seed, limit, eval_limit, val_fraction, test_fraction)

    text = "digits" if source is None else str(source)
    if text.lower() == "digits":
        bundle = _load_digits(sel)
    elif text.lower() in ("cifar10", "cifar-10"):
        bundle = _load_cifar_archive(_cifar_cached(download), sel)
    else:
        bundle = _load_path(Path(text).expanduser(), sel, progress)
    bundle.info.update({"seed": seed, "limit": limit, "eval_limit": eval_limit})
    return bundle.with_resolution(train_resolution)


def data_dir() -> Path:
    """Where downloaded data sets live: ``$HWNAS_DATA`` or ``results/data``."""
    return Path(os.environ.get("HWNAS_DATA") or results_dir() / "data")


# ---- splitting ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Selection:
    seed: int
    limit: int | None
    eval_limit: int | None
    val_fraction: float
    test_fraction: float


def balanced_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``labels`` shuffled within each class, then dealt round-robin over the classes,
    so every prefix holds the classes in (nearly) equal numbers."""
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    rank = np.empty(len(labels), dtype=np.float64)
    for idx in per_class:
        # Position within the class, offset by a random fraction so classes interleave fairly.
        rank[idx] = np.arange(len(idx)) + rng.random()
    return np.argsort(rank, kind="stable")


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices per class by ``fractions`` (the remainder goes to the first part); each part
    comes back in :func:`balanced_order`."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        counts = [int(round(f * len(idx))) for f in fractions]
        start = 0
        for k, n in enumerate(counts, start=1):
            parts[k].append(idx[start:start + n])
            start += n
        parts[0].append(idx[start:])
    out = []
    for p in parts:
        idx = np.concatenate(p) if p else np.zeros(0, dtype=np.int64)
        out.append(idx[balanced_order(labels[idx], rng)])
    return out


def _three_way(labels: np.ndarray, sel: _Selection, has_test: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) index arrays, capped by the selection's limits.

    ``has_test`` marks items of the source's own test split; without it a test split is carved out.
    """
    if has_test is None:
        train, val, test = stratified_split(labels, (sel.val_fraction, sel.test_fraction), sel.seed)
    else:
        pool = np.flatnonzero(~has_test)
        tr, va = stratified_split(labels[pool], (sel.val_fraction,), sel.seed)
        train, val = pool[tr], pool[va]
        test_idx = np.flatnonzero(has_test)
        test = test_idx[balanced_order(labels[test_idx], np.random.default_rng(sel.seed + 1))]
    return train[:sel.limit], val[:sel.eval_limit], test[:sel.eval_limit]


def _bundle(name: str, source: str, x: torch.Tensor, y: np.ndarray, parts: tuple[np.ndarray, ...],
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

def _load_digits(sel: _Selection) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixel values are 0..16; scale to 0..255 so every source is uint8.
    x = torch.as_tensor(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = d.target.astype(np.int64)
    parts = _three_way(y, sel)
    return _bundle("digits", "digits", x, y, parts, [str(c) for c in range(10)], flip_ok=False)


# ---- CIFAR-10 python archive ---------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: CIFAR's batches need nothing else, and a
    tampered file cannot run code through other globals."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle_batch(f, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as e:
        raise UserError(f"{where}: not a CIFAR-10 python batch ({e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(f"{where}: expected N x 3072 uint8 images and N labels, got {data.shape}")
    return data.reshape(-1, 3, 32, 32), labels


CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _load_cifar_archive(path: Path, sel: _Selection) -> DataBundle:
    """CIFAR-10 from the ``.tar.gz`` archive or its extracted ``cifar-10-batches-py`` folder."""
    xs, ys, is_test = [], [], []
    names = CIFAR_TRAIN_BATCHES + ("test_batch",)
    if path.is_dir():
        folder = path / CIFAR10_DIR if (path / CIFAR10_DIR).is_dir() else path
        for n in names:
            if not (folder / n).is_file():
                raise UserError(f"{folder}: missing CIFAR-10 batch {n!r}; pass the whole cifar-10-batches-py folder")
            with open(folder / n, "rb") as f:
                x, y = _unpickle_batch(f, str(folder / n))
            xs.append(x), ys.append(y), is_test.append(np.full(len(y), n == "test_batch"))
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for n in names:
                    if n not in members:
                        raise UserError(f"{path}: missing CIFAR-10 batch {n!r}; is this cifar-10-python.tar.gz?")
                    x, y = _unpickle_batch(tar.extractfile(members[n]), f"{path}:{n}")
                    xs.append(x), ys.append(y), is_test.append(np.full(len(y), n == "test_batch"))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"{path}: cannot read the archive ({e})") from None
    y = np.concatenate(ys)
    if y.min() < 0 or y.max() >= 10:
        raise UserError(f"{path}: CIFAR-10 labels must lie in 0..9")
    parts = _three_way(y, sel, np.concatenate(is_test))
    x = torch.as_tensor(np.concatenate(xs))
    return _bundle("cifar10", str(path), x, y, parts, CIFAR10_CLASSES, flip_ok=True)


def _cifar_cached(download: bool) -> Path:
    target = data_dir() / CIFAR10_ARCHIVE
    if target.is_file():
        return target
    if not download:
        raise UserError(f"CIFAR-10 is not in {target.parent}; pass --data PATH to cifar-10-python.tar.gz")
    download_cifar10(target)
    return target


def download_cifar10(target: Path, url: str = CIFAR10_URL, timeout: float = 30.0) -> Path:
    """Fetch the CIFAR-10 python archive to ``target`` (temp file, MD5 check, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    md5 = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                done += len(chunk)
                if total:
                    print(f"\rdownloading CIFAR-10: {done / total:5.1%}", end="", file=_stderr(), flush=True)
        print(file=_stderr())
        if md5.hexdigest() != CIFAR10_MD5:
            raise UserError(f"downloaded {url} but its MD5 {md5.hexdigest()} is not CIFAR-10's; try again")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot download CIFAR-10 from {url} ({reason}); download it yourself and pass "
                        f"--data PATH/{CIFAR10_ARCHIVE}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _stderr():
    import sys

    return sys.stderr


# ---- ImageFolder -------------------------------------------------------------------------------

def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    out = {}
    for d in _class_dirs(folder):
        files = sorted(p for p in d.rglob("*") if _is_image(p))
        if files:
            out[d.name] = files
    return out


def _load_path(path: Path, sel: _Selection, progress: bool) -> DataBundle:
    if not path.exists():
        raise UserError(f"data {str(path)!r} does not exist; pass 'digits', 'cifar10', a CIFAR-10 archive "
                        "or an ImageFolder directory")
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return _load_cifar_archive(path, sel)
        raise UserError(f"{path}: unknown data format; expected cifar-10-python.tar.gz or an ImageFolder directory")
    if (path / "data_batch_1").is_file() or (path / CIFAR10_DIR / "data_batch_1").is_file():
        return _load_cifar_archive(path, sel)
    return _load_image_folder(path, sel, progress)


def _load_image_folder(root: Path, sel: _Selection, progress: bool) -> DataBundle:
    train_dir = root / "train"
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if train_dir.is_dir() and _scan_classes(train_dir):
        pools = [(_scan_classes(train_dir), False)] + ([(_scan_classes(test_dir), True)] if test_dir else [])
    else:
        pools = [(_scan_classes(root), False)]
        test_dir = None
    classes = sorted(set().union(*(p.keys() for p, _ in pools)))
    if len(classes) < 2:
        raise UserError(f"{root}: found {len(classes)} class folder(s) with images; an ImageFolder needs "
                        "class/xxx.png for at least 2 classes")
    cidx = {c: i for i, c in enumerate(classes)}
    files, labels, is_test = [], [], []
    for pool, test in pools:
        for c, fs in pool.items():
            files += fs
            labels += [cidx[c]] * len(fs)
            is_test += [test] * len(fs)
    y = np.asarray(labels, dtype=np.int64)
    parts = _three_way(y, sel, np.asarray(is_test) if test_dir else None)
    # Read only the images the selection keeps: a small subset of a big folder loads fast.
    needed = np.unique(np.concatenate(parts))
    images = _read_images([files[i] for i in needed], root, progress)
    pos = np.full(len(files), -1, dtype=np.int64)
    pos[needed] = np.arange(len(needed))
    remapped = tuple(pos[p] for p in parts)
    return _bundle(root.name or "images", str(root), images, y[needed], remapped, classes, flip_ok=True)


def _read_images(paths: list[Path], root: Path, progress: bool) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    grey = {"1", "L", "LA", "I", "I;16", "F"}
    arrays, size, modes = [], None, set()
    it = paths
    if progress:
        from tqdm import tqdm

        it = tqdm(paths, desc=f"reading {root.name}", unit="img", file=_stderr(), mininterval=1.0)
    for p in it:
        try:
            with Image.open(p) as im:
                im.load()
                modes.add(im.mode)
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"{p}: not a readable image ({type(e).__name__}); remove it from the data folder") from None
        if size is None:
            # All images share the first one's square side (ArchSpecs are square).
            size = max(img.size) if img.size[0] != img.size[1] else img.size[0]
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        arrays.append(np.asarray(img, dtype=np.uint8))
    x = torch.as_tensor(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    if modes <= grey:
        x = x[:, :1].contiguous()
    return x
