"""Which datasets are images, and which augmentation each allows (one-line refusals).

Augmentation (`augment_flip`, `augment_shift`, model.augment) only means something for
rows that are images. CIFAR-10 rows are 3 x 32 x 32 photographs: flips and shifts of
up to 8 pixels are allowed. Digits rows are 8 x 8 grayscale handwritten digits: a
mirrored 2, 3, 4, 5, 7 or 9 is no digit of its class, so flips are refused; shifts of
1 or 2 pixels are allowed (the digits sit centred with a 1-2 pixel blank border; a
larger shift pushes strokes off the image).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sweep.config.domains import ConfigError
from sweep.config.space import Choice, Param, Range, SearchSpace, TrainParams

if TYPE_CHECKING:
    from sweep.config.sweep_file import SweepConfig

__all__ = [
    "IMAGE_SHAPES",
    "check_augment_values",
    "check_config_augmentation",
    "check_params_augmentation",
    "check_space_augmentation",
    "image_shape_of_width",
]

#: (C, H, W) of one row, per dataset.
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {"cifar10": (3, 32, 32), "digits": (1, 8, 8)}
_MAX_SHIFT = {"cifar10": 8, "digits": 2}
_NO_FLIP = {
    "digits": "digits are 8x8 grayscale handwritten digits and a mirrored 2, 3, 4, 5, 7 or 9 is no digit "
    "of its class, so augment_flip must be false there (augment_shift 0..2 is allowed)",
}


def image_shape_of_width(input_dim: int) -> tuple[int, int, int] | None:
    """The image shape of rows of `input_dim` features (None: no known image dataset has that width)."""
    for shape in IMAGE_SHAPES.values():
        if shape[0] * shape[1] * shape[2] == input_dim:
            return shape
    return None


def check_augment_values(dataset: str, flips: Iterable[bool], shifts: Iterable[int], key: str) -> None:
    """Refuse augmentation values `dataset` cannot take, in one line naming `key`.

    Args:
        dataset: the sweep's dataset.
        flips: every augment_flip value that may be trained (fixed, choices or levels).
        shifts: every augment_shift value that may be trained (a range: its high end).
        key: the key path the values came from, e.g. ``space`` or ``ablation.params``.

    Raises:
        ConfigError: augmentation on data that are not images, a flip on digits, a shift too large.
    """
    flips, shifts = list(flips), list(shifts)
    if not any(flips) and not any(shifts):
        return
    if dataset not in IMAGE_SHAPES:
        raise ConfigError(f"augmentation needs image data ({', '.join(IMAGE_SHAPES)}), dataset is {dataset!r}",
                          key=f"{key}.augment_flip" if any(flips) else f"{key}.augment_shift")
    if any(flips) and dataset in _NO_FLIP:
        raise ConfigError(_NO_FLIP[dataset], key=f"{key}.augment_flip")
    high = _MAX_SHIFT[dataset]
    if shifts and max(shifts) > high:
        h, w = IMAGE_SHAPES[dataset][1:]
        raise ConfigError(f"must be at most {high} pixels for {dataset} ({h}x{w} images), got {max(shifts)}",
                          key=f"{key}.augment_shift")



def check_space_augmentation(dataset: str, space: SearchSpace) -> None:
    """`check_augment_values` over every value the search space may draw (a range by its high end)."""
    check_augment_values(dataset, _values(space.augment_flip), _values(space.augment_shift), "space")


def check_params_augmentation(dataset: str, params: TrainParams, key: str) -> None:
    """`check_augment_values` for one configuration (an ablation's or a comparison's)."""
    check_augment_values(dataset, [params.augment_flip], [params.augment_shift], key)


def check_config_augmentation(cfg: SweepConfig) -> None:
    """Every augmentation setting of a sweep config: its space, [ablation.params] and ablation factors."""
    check_space_augmentation(cfg.dataset, cfg.space)
    if cfg.ablation is not None:
        if cfg.ablation.params is not None:
            check_params_augmentation(cfg.dataset, cfg.ablation.params, "ablation.params")
        vary = dict(cfg.ablation.vary)
        check_augment_values(cfg.dataset, vary.get("augment_flip", ()), vary.get("augment_shift", ()), "ablation.vary")


def _values(p: Param) -> list[Any]:
    if isinstance(p, Choice):
        return list(p.choices)
    if isinstance(p, Range):
        return [p.high]
    return [p.value]
