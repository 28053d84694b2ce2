"""Load scikit-learn's bundled 8x8 digits with a seeded, stratified train/test split."""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.datasets import load_digits as _sklearn_load_digits

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError

__all__ = ["load_digits", "stratified_split"]

logger = logging.getLogger(__name__)

_NUM_CLASSES = 10
_MAX_LEVEL = 16  # the bundled images hold integer grey levels 0..16


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> ArrayDataset:
    """Load the 1,797 8x8 handwritten digits that ship with scikit-learn (no download), split by ``seed``.

    Grey levels 0..16 are scaled to ``uint8`` 0..255. The split is stratified: each class puts
    ``round(test_fraction * n_class)`` of its samples, chosen by ``seed``, in the test set.

    Parameters
    ----------
    seed : int
        Non-negative seed of the split (default: 0).
    test_fraction : float
        Fraction of each class held out for testing, in (0, 1) (default: 0.2).

    Returns
    -------
    ArrayDataset
        ``uint8`` images ``(n, 1, 8, 8)``, 10 classes, samples in their original order within each split.

    Raises
    ------
    ConfigError
        If ``seed`` < 0 or ``test_fraction`` is outside (0, 1).

    Examples
    --------
    >>> ds = load_digits(seed=0)
    >>> ds.input_shape, ds.n_train + ds.n_test, ds.num_classes
    ((1, 8, 8), 1797, 10)
    """
    bunch = _sklearn_load_digits()
    images = np.rint(bunch.images * (255.0 / _MAX_LEVEL)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    return ArrayDataset(
        name="digits",
        x_train=torch.from_numpy(images[train_idx]),
        y_train=torch.from_numpy(labels[train_idx]),
        x_test=torch.from_numpy(images[test_idx]),
        y_test=torch.from_numpy(labels[test_idx]),
        num_classes=_NUM_CLASSES,
    )


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, holding out ``round(test_fraction * n_c)`` of each class ``c``.

    Parameters
    ----------
    labels : numpy.ndarray
        Non-negative integer labels, shape ``(n,)``.
    test_fraction : float
        Fraction of each class held out, in (0, 1).
    seed : int
        Non-negative seed; the same seed gives the same split.

    Returns
    -------
    train_idx, test_idx : numpy.ndarray
        Sorted ``int64`` indices, disjoint, together ``arange(n)``.

    Raises
    ------
    ConfigError
        If ``test_fraction`` is outside (0, 1), ``seed`` < 0, or labels are not non-negative integers.

    Examples
    --------
    >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.5, seed=1)
    >>> len(train), len(test), np.bincount(np.array([0, 0, 0, 0, 1, 1, 1, 1])[test]).tolist()
    (4, 4, [2, 2])
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0)):
        raise ConfigError(f"labels must be a 1-D array of non-negative ints, got {labels.dtype.name} {labels.shape}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    counts = np.bincount(labels)
    n_test = np.rint(counts * float(test_fraction)).astype(np.int64)
    # Shuffle, then group by class (stable, so each class stays shuffled); a sample's rank inside its class
    # decides: the first n_test[c] of class c go to the test set.
    order = rng.permutation(labels.size)
    order = order[np.argsort(labels[order], kind="stable")]
    class_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_labels = labels[order]
    rank = np.arange(labels.size) - class_start[sorted_labels]
    is_test = rank < n_test[sorted_labels]
    return np.sort(order[~is_test]).astype(np.int64), np.sort(order[is_test]).astype(np.int64)
