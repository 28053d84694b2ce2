"""Tests for prunefl.data.digits: scikit-learn's bundled digits and the stratified split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunefl.data.digits import load_digits, stratified_split
from prunefl.errors import ConfigError


def test_load_digits_scales_sixteen_levels_to_uint8() -> None:
    # Execute
    ds = load_digits(seed=0)

    # Assert: 1,797 images, 8x8, levels 0..16 mapped to 0..255 (16 -> 255, 8 -> round(127.5) = 128)
    assert ds.n_train + ds.n_test == 1797 and ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    values = set(torch.cat([ds.x_train, ds.x_test]).unique().tolist())
    assert values <= {round(level * 255 / 16) for level in range(17)} and 255 in values and 0 in values


def test_load_digits_split_is_stratified_80_20() -> None:
    # Prepare: class sizes of the bundled set
    class_sizes = np.array([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])

    # Execute
    ds = load_digits(seed=3)

    # Assert: each class holds out round(0.2 * n_c)
    np.testing.assert_array_equal(ds.y_test.bincount().numpy(), np.rint(0.2 * class_sizes))
    np.testing.assert_array_equal(ds.y_train.bincount().numpy(), class_sizes - np.rint(0.2 * class_sizes))


def test_load_digits_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    # Execute
    first, again, other = load_digits(seed=1), load_digits(seed=1), load_digits(seed=2)

    # Assert
    assert torch.equal(first.x_test, again.x_test) and torch.equal(first.y_train, again.y_train)
    assert not torch.equal(first.x_test, other.x_test)


def test_stratified_split_covers_every_index_once() -> None:
    # Prepare
    labels = np.array([2, 0, 1, 1, 0, 2, 2, 0, 1, 2])

    # Execute
    train, test = stratified_split(labels, test_fraction=0.5, seed=0)

    # Assert: class sizes 3, 3, 4 -> round(1.5)=2 (banker's), 2, 2 held out; nothing lost or doubled
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(10))
    assert np.bincount(labels[test]).tolist() == [2, 2, 2]
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()


@pytest.mark.parametrize(
    ("test_fraction", "seed"),
    [
        (0.0, 0),  # nothing to test on
        (1.0, 0),  # nothing to train on
        (0.2, -1),  # SeedSequence rejects negative seeds
    ],
)
def test_load_digits_bad_arguments_raise_config_error(test_fraction: float, seed: int) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError):
        load_digits(seed=seed, test_fraction=test_fraction)
