"""Tests for prunefl.data.registry: name dispatch, options and data_dir handling of load_dataset."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import prunefl.data as data
from prunefl.data import DATASET_NAMES, load_dataset
from prunefl.errors import ConfigError


def test_dataset_names_lists_every_loader() -> None:
    # Assert
    assert DATASET_NAMES == (
        "fashion-mnist",
        "mnist",
        "femnist",
        "celeba",
        "cifar10",
        "imagefolder",
        "digits",
        "synthetic",
    )


def test_load_dataset_unknown_name_lists_the_valid_ones() -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        load_dataset("fmnist")

    # Assert
    assert "'fmnist'" in str(info.value)
    assert all(name in str(info.value) for name in DATASET_NAMES)


@pytest.mark.parametrize("name", ["mnist", "femnist", "celeba", "cifar10", "imagefolder"])
def test_load_dataset_file_sets_need_data_dir(name: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match="needs data_dir \\(--data-dir\\)"):
        load_dataset(name)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("synthetic", {"n_samples": 5}, "unknown options \\['n_samples'\\]"),  # misspelt n_train
        ("digits", {"test_size": 0.3}, "accepts \\['test_fraction'\\]"),  # scikit-learn's spelling, not ours
        ("mnist", {"image_size": 32}, "accepts none"),  # IDX sets have no options
        ("imagefolder", {"root": "/x"}, "unknown options \\['root'\\]"),  # root comes from data_dir
    ],
)
def test_load_dataset_unknown_option_raises_config_error(name: str, options: dict[str, Any], message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        load_dataset(name, data_dir="/nowhere", **options)


def test_load_dataset_passes_seed_and_options_to_synthetic() -> None:
    # Execute
    ds = load_dataset("synthetic", seed=7, n_train=9, n_test=3, num_classes=3)

    # Assert
    assert torch.equal(ds.x_train, data.make_synthetic(9, 3, 3, seed=7).x_train)


def test_load_dataset_digits_split_follows_seed() -> None:
    # Execute
    ds = load_dataset("digits", seed=5, test_fraction=0.5)

    # Assert
    assert torch.equal(ds.y_test, data.load_digits(seed=5, test_fraction=0.5).y_test)


def test_load_dataset_generated_set_warns_that_data_dir_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    # Execute
    with caplog.at_level(logging.WARNING, logger="prunefl.data.registry"):
        load_dataset("synthetic", data_dir="/data", n_train=4, n_test=2)

    # Assert
    assert "ignoring data_dir=/data" in caplog.text


def test_load_dataset_reads_fashion_mnist_from_data_dir(tmp_path: Path) -> None:
    # Prepare: the four files, gzipped, 3 train / 2 test images
    for stem, array in [
        ("train-images-idx3-ubyte", np.full((3, 28, 28), 9, np.uint8)),
        ("train-labels-idx1-ubyte", np.array([0, 1, 2], np.uint8)),
        ("t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8)),
        ("t10k-labels-idx1-ubyte", np.array([3, 4], np.uint8)),
    ]:
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes()))

    # Execute
    ds = load_dataset("fashion-mnist", data_dir=str(tmp_path))

    # Assert
    assert ds.name == "fashion-mnist" and ds.y_train.tolist() == [0, 1, 2] and ds.y_test.tolist() == [3, 4]


def test_package_exports_match_all() -> None:
    # Assert: every name in __all__ exists, and the partition API is reachable from prunefl.data
    assert all(hasattr(data, name) for name in data.__all__)
    assert {"partition", "iid", "dirichlet", "shards", "natural", "PARTITION_KINDS"} <= set(data.__all__)
