"""Tests for prunefl.data.leaf: LEAF JSON layout for FEMNIST and CelebA, written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from prunefl.data.leaf import load_celeba, load_femnist, read_celeba, read_femnist
from prunefl.errors import ConfigError, DataError


def _write_leaf_file(path: Path, user_data: dict[str, dict[str, list[Any]]]) -> None:
    """Write one LEAF JSON file in its real layout (users, num_samples, user_data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    users = list(user_data)
    content = {"users": users, "num_samples": [len(user_data[u]["y"]) for u in users], "user_data": user_data}
    path.write_text(json.dumps(content))


def _femnist_user(n: int, label: int, value: float) -> dict[str, list[Any]]:
    return {"x": [[value] * 784 for _ in range(n)], "y": [label] * n}


@pytest.fixture
def femnist_dir(tmp_path: Path) -> Path:
    """Three writers over two train files (listed out of order), one test file; pixel value encodes the writer."""
    root = tmp_path / "femnist" / "data"
    _write_leaf_file(root / "train" / "all_data_1_train.json", {"f0002_07": _femnist_user(1, 61, 0.75)})
    _write_leaf_file(
        root / "train" / "all_data_0_train.json",
        {"f0001_40": _femnist_user(3, 5, 0.25), "f0000_14": _femnist_user(2, 0, 0.0)},
    )
    _write_leaf_file(
        root / "test" / "all_data_0_test.json",
        {"f0000_14": _femnist_user(1, 0, 0.0), "f0001_40": _femnist_user(1, 5, 1.0)},
    )
    return root


def test_read_femnist_orders_samples_by_sorted_writer(femnist_dir: Path) -> None:
    # Execute
    leaf = read_femnist(femnist_dir)

    # Assert: writers sorted by name; samples of writer g contiguous, with train_groups == g
    ds = leaf.dataset
    assert leaf.users == ("f0000_14", "f0001_40", "f0002_07")
    assert ds.train_groups.tolist() == [0, 0, 1, 1, 1, 2]
    assert ds.y_train.tolist() == [0, 0, 5, 5, 5, 61]
    assert ds.x_train[:, 0, 0, 0].tolist() == [0.0, 0.0, 0.25, 0.25, 0.25, 0.75]
    assert ds.y_test.tolist() == [0, 5]


def test_read_femnist_keeps_float_pixels_and_inverts_on_prepare(femnist_dir: Path) -> None:
    # Execute
    ds = read_femnist(femnist_dir).dataset

    # Assert: stored as LEAF gives it (float32 in [0, 1]); prepare feeds 1 - x (spec §6), no normalisation
    assert ds.x_train.shape == (6, 1, 28, 28) and str(ds.x_train.dtype) == "torch.float32"
    assert ds.num_classes == 62 and ds.invert and ds.mean == ()
    assert ds.prepare(ds.x_train[5:6])[0, 0, 0, 0].item() == pytest.approx(0.25)


def test_load_femnist_returns_the_dataset_of_read_femnist(femnist_dir: Path) -> None:
    # Execute
    ds = load_femnist(femnist_dir)

    # Assert
    assert ds.name == "femnist" and ds.n_train == 6 and ds.n_test == 2


def _corrupt(root: Path, content: Any) -> Path:
    path = root / "train" / "all_data_0_train.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"users": ["a"], ', "cannot read LEAF JSON"),  # truncated JSON
        ([1, 2], 'a "users" list'),  # top level must be an object
        ({"users": ["a"], "num_samples": [1]}, '"user_data" object'),  # user_data missing
        ({"users": ["a"], "user_data": {}}, 'no "user_data" entry'),  # listed user without data
        ({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 784], "y": [1, 2]}}}, "1 x but 2 y"),  # x/y mismatch
        ({"users": ["a"], "num_samples": [3], "user_data": {"a": _femnist_user(1, 0, 0.0)}}, "says 3"),  # count
        ({"users": ["a"], "num_samples": [1, 2], "user_data": {"a": _femnist_user(1, 0, 0.0)}}, "as long as"),
        ({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 783], "y": [0]}}}, "784"),  # wrong size
        ({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 784, [0.0]], "y": [0, 1]}}}, "not lists of 784"),  # ragged
        ({"users": ["a"], "user_data": {"a": _femnist_user(1, 0, 1.5)}}, "values in [0, 1]"),  # not in [0, 1]
        ({"users": ["a"], "user_data": {"a": _femnist_user(1, 62, 0.0)}}, "[0, 62)"),  # label out of range
        ({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 784], "y": [0.5]}}}, "must be integers"),  # float label
        ({"users": ["f0002_07"], "user_data": {"f0002_07": _femnist_user(1, 0, 0.0)}}, "also appears"),  # duplicate
    ],
)
def test_read_femnist_malformed_json_raises_data_error(femnist_dir: Path, content: Any, message: str) -> None:
    # Prepare
    path = _corrupt(femnist_dir, content)

    # Execute
    with pytest.raises(DataError) as info:
        read_femnist(femnist_dir)

    # Assert
    assert message in str(info.value)
    assert str(path.parent) in str(info.value)


def test_read_femnist_missing_dir_says_how_to_get_it(tmp_path: Path) -> None:
    # Execute
    with pytest.raises(DataError) as info:
        read_femnist(tmp_path / "nowhere")

    # Assert
    assert f"{tmp_path / 'nowhere' / 'train'}/*.json" in str(info.value)
    assert "preprocess.sh -s niid --sf 0.05 -k 0 -t sample" in str(info.value)


# --- CelebA ------------------------------------------------------------------------------------------------------

_RED, _BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture
def celeba_dir(tmp_path: Path) -> Path:
    """LEAF CelebA layout: JSON lists image names; images (178x218 like img_align_celeba) under raw/."""
    root = tmp_path / "celeba" / "data"
    images = root / "raw" / "img_align_celeba"
    images.mkdir(parents=True)
    Image.new("RGB", (178, 218), _RED).save(images / "000001.png")
    Image.new("RGB", (178, 218), _BLUE).save(images / "000002.png")
    Image.new("L", (30, 20), 128).save(images / "000003.jpg")  # greyscale JPEG, converted to RGB
    _write_leaf_file(
        root / "train" / "t.json", {"9": {"x": ["000002.png"], "y": [1]}, "10": {"x": ["000001.png"], "y": [0]}}
    )
    _write_leaf_file(root / "test" / "t.json", {"10": {"x": ["000003.jpg"], "y": [1]}})
    return root


def test_read_celeba_decodes_images_to_84px_rgb_uint8(celeba_dir: Path) -> None:
    # Execute
    leaf = read_celeba(celeba_dir)

    # Assert: users sorted as strings ("10" < "9"), so the red image of user "10" comes first
    ds = leaf.dataset
    assert leaf.users == ("10", "9")
    assert ds.x_train.shape == (2, 3, 84, 84) and str(ds.x_train.dtype) == "torch.uint8"
    assert ds.x_train[0].flatten(1).unique(dim=1).T.tolist() == [list(_RED)]
    assert ds.x_train[1].flatten(1).unique(dim=1).T.tolist() == [list(_BLUE)]
    assert ds.y_train.tolist() == [0, 1] and ds.train_groups.tolist() == [0, 1]
    assert ds.num_classes == 2 and ds.mean == () and not ds.invert
    # a flat grey JPEG stays grey within JPEG's rounding (tolerance 2 levels)
    assert (ds.x_test.int() - 128).abs().max().item() <= 2


def test_load_celeba_accepts_images_dir_and_image_size(celeba_dir: Path, tmp_path: Path) -> None:
    # Prepare
    moved = tmp_path / "elsewhere"
    (celeba_dir / "raw" / "img_align_celeba").rename(moved)

    # Execute
    ds = load_celeba(celeba_dir, images_dir=moved, image_size=10)

    # Assert
    assert ds.x_train.shape == (2, 3, 10, 10) and ds.x_test.shape == (1, 3, 10, 10)


def test_read_celeba_missing_image_raises_data_error_naming_it(celeba_dir: Path) -> None:
    # Prepare
    missing = celeba_dir / "raw" / "img_align_celeba" / "000002.png"
    missing.unlink()

    # Execute
    with pytest.raises(DataError) as info:
        read_celeba(celeba_dir)

    # Assert
    assert str(missing) in str(info.value)
    assert "img_align_celeba" in str(info.value)


def test_read_celeba_missing_images_dir_says_how_to_get_it(celeba_dir: Path, tmp_path: Path) -> None:
    # Execute
    with pytest.raises(DataError) as info:
        read_celeba(celeba_dir, images_dir=tmp_path / "no-images")

    # Assert
    assert str(tmp_path / "no-images") in str(info.value)
    assert "preprocess.sh" in str(info.value)


def test_read_celeba_corrupt_image_raises_data_error(celeba_dir: Path) -> None:
    # Prepare
    broken = celeba_dir / "raw" / "img_align_celeba" / "000001.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")

    # Execute
    with pytest.raises(DataError) as info:
        read_celeba(celeba_dir)

    # Assert
    assert str(broken) in str(info.value)


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", 7])  # escapes the folder; absolute; not a name
def test_read_celeba_refuses_names_outside_images_dir(celeba_dir: Path, name: Any) -> None:
    # Prepare
    _write_leaf_file(celeba_dir / "train" / "t.json", {"u": {"x": [name], "y": [0]}})

    # Execute
    with pytest.raises(DataError) as info:
        read_celeba(celeba_dir)

    # Assert
    assert "relative to" in str(info.value)


def test_read_celeba_bad_image_size_raises_config_error(celeba_dir: Path) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match="image_size"):
        read_celeba(celeba_dir, image_size=0)


def test_read_celeba_empty_users_are_dropped(celeba_dir: Path) -> None:
    # Prepare: a user listed with no samples would leave a hole in the group ids
    _write_leaf_file(celeba_dir / "train" / "u.json", {"0": {"x": [], "y": []}})

    # Execute
    leaf = read_celeba(celeba_dir)

    # Assert
    assert leaf.users == ("10", "9")
    np.testing.assert_array_equal(np.unique(leaf.dataset.train_groups), [0, 1])
