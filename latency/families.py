"""Families of networks users bring to the predictor, drawn at random: what the table's range units,
the calibration, the build's self-check and the validation suite are made of.

``mnasnet``, ``mobilenet_v3``
    fresh samples of the search spaces at 224x224, 1000 classes;
``references``
    the published reference networks at a width multiplier of 0.35-1.4 (channels rounded to
    multiples of 8, as the papers round them) and a resolution of 96-224;
``trimmed``
    space samples and reference networks after NetAdapt: random channel groups (residual chains,
    expansions, the head's layers; :mod:`space.channels`) cut on NetAdapt's channel steps down to
    8 channels, lightly to heavily, with 10 or 1000 classes and 1 or 3 input channels;
``data_stem``
    space samples with a data set's stem and classes as a search scores them: 1 input channel and
    10 classes (digits) or 3 channels and 10 classes (CIFAR-10), at 224x224.

Any other search space (:data:`space.searchspace.SPACES`, e.g. ``mnasnet_cifar``) is a family of
its own samples too, drawn like ``mnasnet``: a table built for that space calibrates and checks
itself on it, and ``latency validate --space`` scores it.

Every draw is seeded, so a seed names a set of networks; the fit, the self-check and the suite each
draw from seeds of their own and exclude every network another one used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from common.errors import UserError
from space.archspec import ArchSpec

FAMILIES = ("mnasnet", "mobilenet_v3", "references", "trimmed", "data_stem")
SPACES = ("mnasnet", "mobilenet_v3")
RESOLUTION = 224
WIDTHS = (0.35, 1.4)
RESOLUTIONS = tuple(range(96, 225, 16))
MIN_CHANNELS = 8


def _search_spaces() -> list[str]:
    from space.searchspace import SPACES as REGISTERED

    return list(REGISTERED)


def is_space_family(name: str) -> bool:
    """Whether ``name`` is a family of one search space's samples (``mnasnet``, ``mnasnet_cifar``...)."""
    return name in _search_spaces()


def movable(family: str) -> bool:
    """Whether :func:`draw` can move ``family``'s networks to another input size."""
    return family in AT_ANY_RESOLUTION or is_space_family(family)


def check_families(names: Iterable[str]) -> list[str]:
    """The family names, checked; an unknown one is a :class:`UserError` listing the known ones."""
    out = list(names)
    for f in out:
        if f not in FAMILIES and not is_space_family(f):
            known = list(dict.fromkeys([*FAMILIES, *_search_spaces()]))
            raise UserError(f"unknown network family {f!r}; choose from {', '.join(known)} (a search space is the "
                            "family of its own samples)")
    return out


def _space_sample(rng: np.random.Generator, space: str | None = None, **kw) -> ArchSpec:
    from space.searchspace import get_space

    sp = get_space(space or SPACES[int(rng.integers(len(SPACES)))])
    return sp.decode(sp.sample(rng), **{"resolution": RESOLUTION, **kw})


def _reference_names() -> list[str]:
    from space.references import REFERENCES

    return sorted(REFERENCES)


def scaled(name: str, width: float, resolution: int) -> ArchSpec:
    """A reference network at ``width`` and ``resolution``, scaled as its paper's code scales it."""
    from space.references import reference

    return reference(name, width=width, resolution=resolution)


def _reference(rng: np.random.Generator) -> ArchSpec:
    names = _reference_names()
    width = round(float(rng.uniform(*WIDTHS)) * 20) / 20  # steps of 0.05
    return scaled(names[int(rng.integers(len(names)))], width, int(rng.choice(RESOLUTIONS)))


def trim(spec: ArchSpec, rng: np.random.Generator, min_channels: int = MIN_CHANNELS) -> ArchSpec:
    """``spec`` after a random NetAdapt run: a random share of its channel groups each cut to a random
    share of its channels (between an intensity drawn per network and 1), on NetAdapt's steps."""
    from space.channels import channel_steps, proposal_groups, with_channels

    floor = float(rng.uniform(0.2, 0.9))
    share = float(rng.uniform(0.3, 1.0))
    for g in proposal_groups(spec):
        if rng.random() > share:
            continue
        steps = channel_steps(g.channels(spec), min_channels)
        if not steps:
            continue
        want = g.channels(spec) * float(rng.uniform(floor, 1.0))
        n = min(steps, key=lambda c: abs(c - want))
        spec = with_channels(spec, g, n)
    return spec


def _trimmed(rng: np.random.Generator) -> ArchSpec:
    from dataclasses import replace

    if rng.random() < 0.5:
        base = _space_sample(rng)
    else:
        base = scaled(_reference_names()[int(rng.integers(len(_reference_names())))], 1.0, RESOLUTION)
    base = replace(base, num_classes=int(rng.choice([10, 1000])), in_channels=int(rng.choice([1, 3])))
    return replace(trim(base, rng), name="")


def _data_stem(rng: np.random.Generator) -> ArchSpec:
    return _space_sample(rng, num_classes=10, in_channels=int(rng.choice([1, 3])))


DRAW: dict[str, Callable[[np.random.Generator], ArchSpec]] = {
    "mnasnet": lambda rng: _space_sample(rng, "mnasnet"),
    "mobilenet_v3": lambda rng: _space_sample(rng, "mobilenet_v3"),
    "references": _reference,
    "trimmed": _trimmed,
    "data_stem": _data_stem,
}
AT_ANY_RESOLUTION = ("mnasnet", "mobilenet_v3", "data_stem")  # and every space family: see :func:`movable`


def _drawer(family: str) -> Callable[[np.random.Generator], ArchSpec]:
    return DRAW.get(family) or (lambda rng: _space_sample(rng, family))


def _stream(family: str) -> int:
    """The family's own random stream: its place in :data:`FAMILIES` (so that the seeds of those
    name the networks they always named), else a number fixed by its name alone."""
    import zlib

    return FAMILIES.index(family) if family in FAMILIES else 1000 + zlib.crc32(family.encode())


def key(spec: ArchSpec) -> str:
    """What makes two networks the same network (their name aside)."""
    from dataclasses import replace

    return replace(spec, name="").to_json(indent=None)


def fingerprint(spec: ArchSpec) -> str:
    """A short stand-in for :func:`key`, to record which networks a table has used."""
    import hashlib

    return hashlib.sha256(key(spec).encode()).hexdigest()[:16]


def draw(family: str, n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset(),
         resolution: int | None = None, by: Callable[[ArchSpec], str] = key) -> list[ArchSpec]:
    """``n`` distinct networks of ``family`` from ``seed``, none of whose ``by`` (:func:`key`, or
    :func:`fingerprint`) is in ``exclude`` (fewer when the family has fewer distinct networks left);
    ``resolution`` moves the families that are :func:`movable` from 224x224 to another input size
    (small test tables, tables for small inputs)."""
    from dataclasses import replace

    check_families([family])
    if resolution is not None and not movable(family):
        raise UserError(f"the {family} family is drawn at its own resolutions; it cannot be moved to {resolution}")
    rng = np.random.default_rng([seed, _stream(family)])
    sample = _drawer(family)
    out: dict[str, ArchSpec] = {}
    for _ in range(50 * n):
        if len(out) >= n:
            break
        spec = sample(rng)
        if resolution is not None:
            spec = replace(spec, resolution=resolution)
        k = by(spec)
        if k not in exclude:
            out.setdefault(k, spec)
    return list(out.values())


def nearest(specs: list[ArchSpec], ms: np.ndarray, band: tuple[float, float]) -> list[ArchSpec]:
    """``specs`` ordered by how far (in log ms) each one's ``ms`` lies outside ``band``: those within
    it first, in draw order."""
    lo, hi = band
    dist = np.maximum(np.log(lo / np.asarray(ms)), 0) + np.maximum(np.log(np.asarray(ms) / hi), 0)
    return [specs[i] for i in np.argsort(dist, kind="stable")]
