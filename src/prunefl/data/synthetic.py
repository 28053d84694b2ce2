"""Make a tiny, deterministic, learnable image data set for fast tests (no files)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError

__all__ = ["make_synthetic"]


def make_synthetic(
    n_train: int = 256,
    n_test: int = 128,
    num_classes: int = 4,
    shape: Sequence[int] = (1, 8, 8),
    seed: int = 0,
    *,
    noise: float = 0.25,
    num_groups: int | None = None,
) -> ArrayDataset:
    """Draw images as a per-class random template plus Gaussian noise, stored as ``uint8``.

    Each class ``c`` has a template ``t_c`` with pixels uniform in [0, 1]; a sample of class ``c`` is
    ``clip(t_c + noise * N(0, 1), 0, 1)`` scaled to 0..255. Two templates differ by about ``sqrt(d / 6)`` in L2
    over ``d`` pixels, against noise of norm ``noise * sqrt(d)``, so with the defaults (d = 64) even a linear model
    separates the classes within a few dozen steps. Classes are balanced (counts differ by at most one).

    Parameters
    ----------
    n_train, n_test : int
        Number of training and test samples, >= 1 (default: 256, 128).
    num_classes : int
        Number of classes, >= 2 (default: 4).
    shape : sequence of int
        ``(channels, height, width)`` of one image, all >= 1 (default: ``(1, 8, 8)``).
    seed : int
        Non-negative seed; the same arguments give identical tensors (default: 0).
    noise : float
        Standard deviation of the pixel noise on the [0, 1] scale, >= 0 (default: 0.25).
    num_groups : int or None
        If given, ``train_groups`` assigns the training samples to this many contiguous, near-equal "writers"
        (for the ``natural`` partition), in [1, n_train] (default: None, no groups).

    Returns
    -------
    ArrayDataset
        Named ``"synthetic"``, no normalisation or augmentation.

    Raises
    ------
    ConfigError
        If any argument is out of range.

    Examples
    --------
    >>> ds = make_synthetic(n_train=8, n_test=4, num_classes=2, shape=(1, 4, 4), seed=0)
    >>> ds.x_train.shape, ds.x_train.dtype, ds.y_train.bincount().tolist()
    (torch.Size([8, 1, 4, 4]), torch.uint8, [4, 4])
    """
    _check_args(n_train, n_test, num_classes, shape, seed, noise, num_groups)
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    templates = rng.random((num_classes, *shape))  # (num_classes, C, H, W) in [0, 1)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)  # balanced, shuffled
        pixels = templates[labels] + noise * rng.standard_normal((n, *shape))  # (n, C, H, W)
        images = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
        return torch.from_numpy(images), torch.from_numpy(labels)

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    groups = None
    if num_groups is not None:
        groups = (np.arange(n_train, dtype=np.int64) * num_groups) // n_train  # contiguous blocks 0..G-1
    return ArrayDataset(
        name="synthetic",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        train_groups=groups,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_args(
    n_train: int,
    n_test: int,
    num_classes: int,
    shape: Sequence[int],
    seed: int,
    noise: float,
    num_groups: int | None,
) -> None:
    for key, value, low in (("n_train", n_train, 1), ("n_test", n_test, 1), ("num_classes", num_classes, 2)):
        if not _is_int(value) or value < low:
            raise ConfigError(f"{key} must be an int >= {low}, got {value!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    if len(shape) != 3 or not all(_is_int(s) and s >= 1 for s in shape):
        raise ConfigError(f"shape must be (channels, height, width) of ints >= 1, got {shape!r}")
    if not float(noise) >= 0.0:
        raise ConfigError(f"noise must be >= 0, got {noise!r}")
    if num_groups is not None and (not _is_int(num_groups) or not 1 <= num_groups <= n_train):
        raise ConfigError(f"num_groups must be an int in [1, n_train={n_train}] or None, got {num_groups!r}")
