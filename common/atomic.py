"""Write files so that a crash or a full disk never leaves a half-written or corrupted file:
write a temporary file in the same folder, then rename it over the target (atomic on POSIX)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. ``suffix``
    defaults to the target's (some writers, e.g. matplotlib, pick the format from it).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=p.suffix if suffix is None else suffix, dir=p.parent)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600 files; results are ordinary files the user shares and reads.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return Path(path)


def save_png(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a matplotlib figure as PNG (temp file + rename) and close it, even when saving fails."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)
