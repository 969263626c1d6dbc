"""Reading the data sets that come from files: CIFAR-10's python archive (downloaded when asked) and
ImageFolder-style folders of images. Each reader returns a :class:`train.data.DataBundle`."""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import UserError
from train.data import (
    CIFAR10_ARCHIVE,
    CIFAR10_CLASSES,
    CIFAR10_DIR,
    CIFAR10_MD5,
    CIFAR10_URL,
    IMAGE_SUFFIXES,
    DataBundle,
    data_dir,
    make_bundle,
)
from train.splits import Selection, three_way

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


def load_cifar_archive(path: Path, sel: Selection) -> DataBundle:
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
    parts = three_way(y, sel, np.concatenate(is_test))
    x = torch.as_tensor(np.concatenate(xs))
    return make_bundle("cifar10", str(path), x, y, parts, CIFAR10_CLASSES, flip_ok=True)


def cifar_cached(download: bool) -> Path:
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


def load_path(path: Path, sel: Selection, progress: bool) -> DataBundle:
    if not path.exists():
        raise UserError(f"data {str(path)!r} does not exist; pass 'digits', 'cifar10', a CIFAR-10 archive "
                        "or an ImageFolder directory")
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return load_cifar_archive(path, sel)
        raise UserError(f"{path}: unknown data format; expected cifar-10-python.tar.gz or an ImageFolder directory")
    if (path / "data_batch_1").is_file() or (path / CIFAR10_DIR / "data_batch_1").is_file():
        return load_cifar_archive(path, sel)
    return _load_image_folder(path, sel, progress)


def _load_image_folder(root: Path, sel: Selection, progress: bool) -> DataBundle:
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
    parts = three_way(y, sel, np.asarray(is_test) if test_dir else None)
    # Read only the images the selection keeps: a small subset of a big folder loads fast.
    needed = np.unique(np.concatenate(parts))
    images = _read_images([files[i] for i in needed], root, progress)
    pos = np.full(len(files), -1, dtype=np.int64)
    pos[needed] = np.arange(len(needed))
    remapped = tuple(pos[p] for p in parts)
    return make_bundle(root.name or "images", str(root), images, y[needed], remapped, classes, flip_ok=True)


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
