"""Data augmentation of image rows: random horizontal flips and pad-and-crop translations.

Rows are flattened images in C x H x W order (CIFAR-10's official layout:
1024 red, then 1024 green, then 1024 blue values, each 32 x 32 row-major),
as ``sweep.data`` delivers them: float32 with the per-pixel training mean
subtracted. So the zero padding that a translation brings in is the mean
pixel value of that position, and a flip mirrors the centred image (the same
as mirroring the raw one up to the mean image's own asymmetry).

Every image is first mirrored left-right (when its flip is drawn), then
translated by ``(dy, dx)`` pixels: ``out[c, i, j] = x[c, i - dy, j - dx]``
where that pixel exists, else 0 (positive dx moves the content right). All
draws come from the Generator passed in; :func:`epoch_rng` gives the one the
Solver uses for an epoch. The work is vectorized over the batch (no Python
loop per image): one padded copy and one gather from a sliding-window view,
about 0.6 ms for 200 CIFAR rows (bench/augment_cost.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["apply_augmentation", "augment_batch", "check_augmentation", "draw_augmentation", "epoch_rng"]

#: CIFAR-10's image shape (C, H, W), the default.
CIFAR10_IMAGE_SHAPE = (3, 32, 32)


def check_augmentation(num_features: int, image_shape: Any, flip: Any, max_shift: Any) -> tuple[int, int, int]:
    """Validate augmentation settings for rows of ``num_features`` values.

    Returns:
        image_shape as a tuple of three ints (C, H, W).

    Raises:
        ValueError: one line naming the keyword and what it allows.
    """
    if not isinstance(flip, (bool, np.bool_)):
        raise ValueError(f"augment_flip must be True or False, got {flip!r}")
    if (
        not isinstance(image_shape, (tuple, list))
        or len(image_shape) != 3
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in image_shape)
    ):
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}")
    c, h, w = (int(v) for v in image_shape)
    if isinstance(max_shift, bool) or not isinstance(max_shift, (int, np.integer)) or not 0 <= max_shift < min(h, w):
        raise ValueError(
            f"augment_shift must be an int in 0..{min(h, w) - 1} (pixels, less than the image's "
            f"{h}x{w}), got {max_shift!r}"
        )
    if (flip or max_shift) and num_features != c * h * w:
        hint = ""
        if num_features == 64:
            hint = "; digits rows are 8x8 grayscale: pass image_shape=(1, 8, 8) (augment_shift 0..7)"
        raise ValueError(
            f"augmentation needs image rows of image_shape={c, h, w} ({c * h * w} features, C x H x W "
            f"order), got {num_features} features{hint}"
        )
    return c, h, w


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The augmentation Generator of one epoch: a function of (run seed, epoch) only.

    It shares no state with the batch-order Generator (``default_rng(seed)``):
    ``SeedSequence([seed, epoch])`` hashes a different entropy pool.
    """
    return np.random.default_rng([int(seed), int(epoch)])


def draw_augmentation(
    n: int, rng: np.random.Generator, *, flip: bool = True, max_shift: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one batch's transforms: flips (n,) bool, dy (n,) and dx (n,) ints in [-max_shift, max_shift].

    Flips are drawn only when ``flip`` and shifts only when ``max_shift`` > 0
    (otherwise all False / 0), so turning one off does not change the other's draws.
    """
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, dtype=bool)
    if max_shift:
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=(2, n))
    else:
        dy = dx = np.zeros(n, dtype=np.int64)
    return flips, dy, dx


def apply_augmentation(
    X: np.ndarray, image_shape: tuple[int, int, int], flips: np.ndarray, dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    """Mirror (where ``flips``) then translate every image by (dy, dx) with zero padding.

    Args:
        X: Rows, shape (N, C*H*W), C x H x W order; only read.
        image_shape: (C, H, W).
        flips: (N,) bool. dy, dx: (N,) ints with |dy| < H, |dx| < W.

    Returns:
        A new array of X's shape and dtype.
    """
    n = X.shape[0]
    c, h, w = image_shape
    x = X.reshape(n, c, h, w)
    s = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    # The mirrored images are written into the padded buffer directly, so the
    # crop below sees flip(x) and translates it like any other image.
    padded = np.zeros((n, c, h + 2 * s, w + 2 * s), dtype=X.dtype)
    inner = padded[:, :, s : s + h, s : s + w]
    keep = ~flips
    inner[keep] = x[keep]
    inner[flips] = x[flips][..., ::-1]
    # windows[b, c, oy, ox] is the h x w crop at offset (oy, ox): a view, no copy.
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))
    out = windows[np.arange(n), :, s - dy, s - dx]  # (n, c, h, w): the one gather
    return out.reshape(X.shape)


def augment_batch(
    X: np.ndarray,
    rng: np.random.Generator,
    *,
    image_shape: tuple[int, int, int] = CIFAR10_IMAGE_SHAPE,
    flip: bool = True,
    max_shift: int = 4,
) -> np.ndarray:
    """Randomly flipped and translated copies of image rows (training only).

    Args:
        X: Rows, shape (N, C*H*W) in C x H x W order; only read.
        rng: Source of every draw (see :func:`epoch_rng`).
        image_shape: (C, H, W) of one row.
        flip: Mirror each image left-right with probability 1/2.
        max_shift: Translate by dy, dx drawn uniformly from -max_shift..max_shift
            (pad-and-crop with zeros); 0 disables translation.

    Returns:
        A new array like X (X itself when neither transform is on).

    Raises:
        ValueError: a setting outside its range or rows that are not images of image_shape.
    """
    X = np.asarray(X)
    if X.ndim < 2:
        raise ValueError(f"X must have shape (N, C*H*W), got {X.shape}")
    shape = check_augmentation(math.prod(X.shape[1:]), image_shape, flip, max_shift)
    if not flip and not max_shift:
        return X
    flips, dy, dx = draw_augmentation(X.shape[0], rng, flip=flip, max_shift=max_shift)
    return apply_augmentation(X, shape, flips, dy, dx)
