"""Named training recipes: how a network is trained and scored, as data that a record can carry.

``LONG_SCHEDULE`` is the reference training that proxy evaluations are measured against
(``bench/proxy_fidelity.py``) and that end-to-end benchmarks train their final networks with: a
5,000-image class-balanced CIFAR-10 subset at 32x32, 15 epochs of AdamW with cosine decay, random
crops (pad 4 and crop, i.e. translations by up to 1/8 of the side) and horizontal flips, the
proxy network of :func:`space.proxy.proxy_spec` (final map >= 2x2), scored once on 2,000 test
images. It is sized for a 2-core CPU: about half an hour per network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from train.data import DataBundle
    from train.loop import Training, TrainResult


@dataclass(frozen=True)
class Recipe:
    """What :func:`train_with_recipe` does: data limits, resolution, optimisation, evaluation.

    ``train_images`` / ``eval_images`` cap the training split and the validation and test splits
    (class-balanced subsets, None = all); ``resolution`` None trains at the data's own size;
    ``val_fraction`` None keeps :func:`train.data.load_data`'s split.
    """

    name: str
    epochs: float
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adamw"
    weight_decay: float | None = None
    label_smoothing: float = 0.1
    augment: bool = False
    train_images: int | None = None
    eval_images: int | None = None
    eval_split: str = "val"
    val_fraction: float | None = None
    resolution: int | None = None
    bn_recalibration_batches: int = 20

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_changes(self, **changes: Any) -> Recipe:
        return replace(self, **changes)


LONG_SCHEDULE = Recipe(
    name="long", epochs=15, batch_size=64, lr=3e-3, weight_decay=0.05, augment=True, train_images=5000,
    eval_images=2000, eval_split="test", resolution=32,
)


def load_recipe_data(source: str, recipe: Recipe, seed: int = 0, progress: bool = False) -> DataBundle:
    """The :class:`train.data.DataBundle` a recipe trains on (its limits and resolution)."""
    from train.data import load_data

    split = {} if recipe.val_fraction is None else {"val_fraction": recipe.val_fraction}
    return load_data(source, seed=seed, limit=recipe.train_images, eval_limit=recipe.eval_images,
                     train_resolution=recipe.resolution, progress=progress, **split)


def start_training(model: Any, data: Any, recipe: Recipe, seed: int = 0, progress: Any = None) -> Training:
    """A :class:`train.loop.Training` of ``model`` on ``data`` as ``recipe`` says, ready to advance."""
    from train.loop import Training

    return Training(model, data, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size,
                    optimizer=recipe.optimizer, weight_decay=recipe.weight_decay,
                    label_smoothing=recipe.label_smoothing, augment=recipe.augment, seed=seed,
                    bn_recalibration_batches=recipe.bn_recalibration_batches, progress=progress)


def train_with_recipe(model: Any, data: Any, recipe: Recipe, seed: int = 0,
                      progress: Any = None) -> TrainResult:
    """Train ``model`` (in place) on ``data`` as ``recipe`` says; returns the :class:`train.loop.TrainResult`."""
    return start_training(model, data, recipe, seed, progress).finish(recipe.eval_split)
