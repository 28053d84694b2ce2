"""Tests for prunefl.data.cifar: official batch format, restricted unpickling, validation."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunefl.data.cifar import CIFAR10_MEAN, CIFAR10_STD, load_cifar10, read_cifar_batch
from prunefl.errors import DataError

_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _batch(n: int, first_label: int, seed: int) -> dict[bytes, Any]:
    """One batch dict as in the official files: bytes keys, uint8 (n, 3072) data, list labels."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [(first_label + i) % 10 for i in range(n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def _write_pickle(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official batches are protocol 2


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """``root/cifar-10-batches-py`` with 5 train batches of 2 samples, a test batch of 3, and batches.meta."""
    folder = tmp_path / "cifar-10-batches-py"
    for i, name in enumerate(_BATCHES):
        _write_pickle(folder / name, _batch(3 if name == "test_batch" else 2, first_label=2 * i, seed=i))
    _write_pickle(folder / "batches.meta", {b"label_names": [b"airplane"] * 10, b"num_vis": 3072})
    return tmp_path


def test_load_cifar10_concatenates_batches_in_order(cifar_root: Path) -> None:
    # Execute
    ds = load_cifar10(cifar_root)

    # Assert: batch i contributes labels 2i, 2i+1 (mod 10), in file order
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert ds.y_test.tolist() == [0, 1, 2]
    assert str(ds.x_train.dtype) == "torch.uint8" and str(ds.y_train.dtype) == "torch.int64"
    assert ds.mean == CIFAR10_MEAN and ds.std == CIFAR10_STD and ds.augment == "crop_flip"
    assert ds.num_classes == 10 and ds.name == "cifar10"


def test_read_cifar_batch_rows_are_channel_major(cifar_root: Path) -> None:
    # Prepare: official layout, 1024 red then 1024 green then 1024 blue values, each row-major 32x32
    path = cifar_root / "cifar-10-batches-py" / "data_batch_1"
    raw = _batch(2, 0, seed=0)[b"data"]

    # Execute
    images, _ = read_cifar_batch(path)

    # Assert: pixel (c, r, k) of image i is raw[i, c*1024 + r*32 + k]
    for c, r, k in [(0, 0, 0), (1, 5, 7), (2, 31, 31)]:
        assert images[1, c, r, k] == raw[1, c * 1024 + r * 32 + k]


def test_load_cifar10_accepts_the_batches_folder_itself(cifar_root: Path) -> None:
    # Execute
    ds = load_cifar10(cifar_root / "cifar-10-batches-py")

    # Assert
    assert ds.n_train == 10


def test_read_cifar_batch_accepts_python2_numpy1_globals(tmp_path: Path) -> None:
    # Prepare: the official files name numpy.core.multiarray._reconstruct (numpy 1.x); numpy 2 writes numpy._core
    path = tmp_path / "data_batch_1"
    blob = pickle.dumps(_batch(2, 3, seed=0), protocol=2)
    assert b"numpy._core.multiarray" in blob
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))

    # Execute (the filterwarnings setting would turn a numpy.core DeprecationWarning into an error)
    images, labels = read_cifar_batch(path)

    # Assert
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [3, 4]


class _Exploit:
    """Unpickles into a call of ``func(*args)``: what a tampered batch file would contain."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


@pytest.mark.parametrize(
    ("make_payload", "global_name"),
    [
        (lambda marker: _Exploit(os.system, f"touch {marker}"), "system"),  # shell command
        # arbitrary Python; protocol 2 spells it __builtin__.eval
        (lambda marker: _Exploit(eval, f"open({str(marker)!r}, 'w')"), ".eval"),
        # nested inside the dict; a bound method pickles through getattr
        (lambda marker: {b"data": _Exploit(Path.touch, marker), b"labels": []}, "getattr"),
    ],
)
def test_read_cifar_batch_refuses_malicious_globals_without_running_them(
    tmp_path: Path, make_payload: Any, global_name: str
) -> None:
    # Prepare
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    _write_pickle(path, make_payload(marker))

    # Execute
    with pytest.raises(DataError) as info:
        read_cifar_batch(path)

    # Assert
    assert "is not allowed in a CIFAR batch" in str(info.value) and global_name in str(info.value)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2, 3], 'keys b"data" and b"labels"'),  # not a dict
        ({b"data": np.zeros((2, 3072), np.uint8)}, 'keys b"data" and b"labels"'),  # labels missing
        ({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}, "(n, 3072)"),  # wrong row length
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "found float32"),  # wrong dtype
        ({b"data": [[0] * 3072] * 2, b"labels": [0, 1]}, "found list"),  # not an array
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "expected 2 integer labels"),  # too few labels
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "[0, 10)"),  # label out of range
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]}, "integer labels"),  # not ints
    ],
)
def test_read_cifar_batch_wrong_content_raises_data_error(tmp_path: Path, obj: Any, message: str) -> None:
    # Prepare
    path = tmp_path / "test_batch"
    _write_pickle(path, obj)

    # Execute
    with pytest.raises(DataError) as info:
        read_cifar_batch(path)

    # Assert
    assert message in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [1, 100, -10])  # cut after 1 byte, mid-header, just before the end
def test_read_cifar_batch_truncated_file_raises_data_error(cifar_root: Path, cut: int) -> None:
    # Prepare
    path = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:cut])

    # Execute
    with pytest.raises(DataError) as info:
        load_cifar10(cifar_root)

    # Assert
    assert str(path) in str(info.value) and "not a valid CIFAR batch pickle" in str(info.value)


def test_load_cifar10_missing_batch_says_how_to_get_it(cifar_root: Path) -> None:
    # Prepare
    (cifar_root / "cifar-10-batches-py" / "data_batch_4").unlink()

    # Execute
    with pytest.raises(DataError) as info:
        load_cifar10(cifar_root)

    # Assert
    assert "expected data_batch_4 in" in str(info.value)
    assert "cifar-10-python.tar.gz" in str(info.value)
