"""Tests for prunefl.data.synthetic: determinism, balance, learnability."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from prunefl.data.synthetic import make_synthetic
from prunefl.errors import ConfigError


def test_make_synthetic_same_seed_gives_identical_tensors() -> None:
    # Execute
    first, again, other = make_synthetic(seed=4), make_synthetic(seed=4), make_synthetic(seed=5)

    # Assert
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    assert not torch.equal(first.x_train, other.x_train)


def test_make_synthetic_shapes_and_balanced_labels() -> None:
    # Execute
    ds = make_synthetic(n_train=30, n_test=7, num_classes=3, shape=(3, 5, 4), seed=0)

    # Assert
    assert ds.x_train.shape == (30, 3, 5, 4) and ds.x_test.shape == (7, 3, 5, 4)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.y_train.bincount().tolist() == [10, 10, 10]
    assert ds.y_test.bincount().tolist() == [3, 2, 2]  # 7 = 3 + 2 + 2: counts differ by at most one
    assert ds.train_groups is None and ds.name == "synthetic"


def test_make_synthetic_classes_are_separable_by_nearest_class_mean() -> None:
    # Prepare
    ds = make_synthetic(n_train=200, n_test=200, num_classes=4, seed=0)
    x_train, x_test = ds.prepare(ds.x_train).flatten(1), ds.prepare(ds.x_test).flatten(1)
    means = torch.stack([x_train[ds.y_train == c].mean(0) for c in range(4)])  # (4, 64)

    # Execute
    predicted = torch.cdist(x_test, means).argmin(1)

    # Assert: learnable structure; with these defaults the classes are far apart (observed accuracy 1.0)
    assert (predicted == ds.y_test).float().mean().item() >= 0.95


def test_make_synthetic_num_groups_gives_contiguous_writers() -> None:
    # Execute
    ds = make_synthetic(n_train=10, n_test=2, num_groups=3)

    # Assert: groups i * 3 // 10
    assert ds.train_groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_train": 0},  # no training data
        {"n_test": 0},  # no test data
        {"num_classes": 1},  # nothing to learn
        {"shape": (8, 8)},  # missing the channel axis
        {"shape": (1, 0, 8)},  # empty image
        {"seed": -1},  # SeedSequence needs a non-negative seed
        {"noise": -0.1},  # a standard deviation
        {"num_groups": 0},  # at least one group
        {"n_train": 4, "num_groups": 5},  # more groups than samples
        {"n_train": 4.0},  # counts are ints
    ],
)
def test_make_synthetic_bad_arguments_raise_config_error(kwargs: dict[str, Any]) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError):
        make_synthetic(**kwargs)
