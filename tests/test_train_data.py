"""Data loading: digits, CIFAR-10 python archives and ImageFolders made on the spot."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import UserError
from train.data import CIFAR10_DIR, load_data
from train.sources import download_cifar10
from train.splits import stratified_split


def _fake_cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"{i}.png".encode() for i in range(n)],
    }


def make_fake_cifar(root: Path, per_batch: int = 20) -> tuple[Path, Path]:
    """The real format: pickled dicts with b'data' (N x 3072 uint8) and b'labels', in a folder and a .tar.gz."""
    folder = root / CIFAR10_DIR
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        with open(folder / name, "wb") as f:
            pickle.dump(_fake_cifar_batch(per_batch, i), f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane"] * 10}, f)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=CIFAR10_DIR)
    return archive, folder


def make_image_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 12, size: int = 10,
                      mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            arr = (rng.integers(0, 60, shape) + ci * 80).astype(np.uint8)
            Image.fromarray(arr, mode).save(root / c / f"{i:03d}.png")
    return root


def test_digits_default_splits_are_disjoint_stratified_and_seeded():
    d = load_data()
    assert (d.name, d.num_classes, d.in_channels, d.native_resolution) == ("digits", 10, 1, 8)
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert d.train.x.dtype == torch.uint8 and d.train.y.dtype == torch.int64
    assert tuple(d.train.x.shape[1:]) == (1, 8, 8)
    # every class appears in every split
    for s in (d.train, d.val, d.test):
        assert set(s.y.tolist()) == set(range(10))
    # no image is in two splits (digits has a few exact duplicates, so compare index-free by content counts)
    # the digits validate on a quarter of the images (450), other sources on a tenth of their training pool
    assert len(d.val) == pytest.approx(0.25 * 1797, abs=10) and len(d.test) == pytest.approx(0.15 * 1797, abs=10)
    assert len(load_data("digits", val_fraction=0.1).val) == pytest.approx(0.1 * 1797, abs=10)
    again, other = load_data("digits", seed=0), load_data("digits", seed=1)
    assert torch.equal(again.train.x, d.train.x) and torch.equal(again.val.y, d.val.y)
    assert not torch.equal(other.val.x, d.val.x)
    # normalisation uses the training split's statistics
    x = d.prepare(d.train.x)
    assert x.dtype == torch.float32
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-4) and float(x.std()) == pytest.approx(1.0, abs=1e-2)


def test_split_indices_partition_the_data():
    labels = np.repeat(np.arange(4), 25)
    train, val, test = stratified_split(labels, (0.2, 0.2), seed=3)
    allidx = np.concatenate([train, val, test])
    assert sorted(allidx.tolist()) == list(range(100))
    assert np.bincount(labels[val]).tolist() == [5, 5, 5, 5]
    # any prefix of a split is class-balanced
    assert np.bincount(labels[train[:8]], minlength=4).tolist() == [2, 2, 2, 2]


def test_limits_take_balanced_subsets_and_resize_on_the_fly():
    d = load_data("digits", limit=50, eval_limit=20, train_resolution=16)
    assert (len(d.train), len(d.val), len(d.test)) == (50, 20, 20)
    assert np.bincount(d.train.y.numpy(), minlength=10).tolist() == [5] * 10
    assert d.resolution == 16 and d.native_resolution == 8
    x, y = next(d.batches("train", 7))
    assert tuple(x.shape) == (7, 1, 16, 16) and tuple(y.shape) == (7,)


def test_cifar_archive_and_folder_give_the_same_data(tmp_path):
    archive, folder = make_fake_cifar(tmp_path)
    a = load_data(archive, seed=5)
    b = load_data(folder, seed=5)
    c = load_data(folder.parent, seed=5)  # the folder holding cifar-10-batches-py
    assert (a.name, a.num_classes, a.in_channels, a.native_resolution) == ("cifar10", 10, 3, 32)
    assert len(a.test) == 20 and len(a.train) + len(a.val) == 100
    for other in (b, c):
        assert torch.equal(a.train.x, other.train.x) and torch.equal(a.test.y, other.test.y)
    # the test split is the archive's own test_batch, pixels in CHW order
    raw = _fake_cifar_batch(20, 5)
    first = raw[b"data"][0].reshape(3, 32, 32)
    assert any(torch.equal(torch.as_tensor(first), img) for img in a.test.x)
    assert a.classes[0] == "airplane" and a.flip_ok


def test_cifar_loader_refuses_code_in_pickles(tmp_path):
    _, folder = make_fake_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(UserError, match="not a CIFAR-10 python batch"):
        load_data(folder)


def test_image_folder_flat_and_with_train_test(tmp_path):
    flat = make_image_folder(tmp_path / "flat")
    (flat / "cat" / "notes.txt").write_text("not an image")
    d = load_data(flat, seed=0)
    assert (d.num_classes, d.in_channels, d.native_resolution) == (3, 3, 10)
    assert d.classes == ("cat", "dog", "eel")
    assert len(d.train) + len(d.val) + len(d.test) == 36
    # labels follow the folder: class 2's pixels are brightest by construction
    means = [float(d.train.x[d.train.y == c].float().mean()) for c in range(3)]
    assert means[0] < means[1] < means[2]

    split_root = tmp_path / "split"
    make_image_folder(split_root / "train", per_class=10)
    make_image_folder(split_root / "test", per_class=4)
    s = load_data(split_root, eval_limit=6)
    assert len(s.test) == 6 and len(s.train) + len(s.val) == 30


def test_grey_and_odd_sized_images(tmp_path):
    root = make_image_folder(tmp_path / "g", classes=("a", "b"), mode="L", size=12)
    Image.fromarray(np.zeros((7, 9), np.uint8), "L").save(root / "a" / "odd.png")
    d = load_data(root)
    assert d.in_channels == 1 and d.native_resolution == 12
    assert all(tuple(s.x.shape[1:]) == (1, 12, 12) for s in (d.train, d.val, d.test))


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "file.csv").write_text("a,b") and p / "file.csv", "unknown data format"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "class folder"),
])
def test_bad_sources_are_one_line_user_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message) as e:
        load_data(make(tmp_path))
    assert "\n" not in str(e.value)


def test_unreadable_image_is_a_user_error(tmp_path):
    root = make_image_folder(tmp_path / "bad", classes=("a", "b"), per_class=6)
    (root / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        load_data(root)


def test_download_checks_md5_and_reports_unreachable_hosts(tmp_path):
    archive, _ = make_fake_cifar(tmp_path / "src")
    target = tmp_path / "dl" / "cifar-10-python.tar.gz"
    with pytest.raises(UserError, match="MD5"):
        download_cifar10(target, url=archive.resolve().as_uri())
    assert not target.exists() and not any(p.name.endswith(".part") for p in target.parent.iterdir())
    with pytest.raises(UserError, match="cannot download CIFAR-10"):
        download_cifar10(target, url="http://127.0.0.1:9/cifar-10-python.tar.gz", timeout=2)


def test_cifar10_name_uses_the_data_folder(tmp_path, monkeypatch):
    archive, _ = make_fake_cifar(tmp_path / "src")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-10-python.tar.gz").write_bytes(archive.read_bytes())
    monkeypatch.setenv("HWNAS_DATA", str(cache))
    d = load_data("cifar10", limit=30)
    assert d.name == "cifar10" and len(d.train) == 30


def test_corrupt_archive_is_a_user_error(tmp_path):
    bad = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/readme")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(UserError, match="missing CIFAR-10 batch"):
        load_data(bad)
