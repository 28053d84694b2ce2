"""Tests for prunefl.data.idx: IDX parsing, gzip/raw files, validation and the real Fashion-MNIST files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from prunefl.data.idx import FASHION_MNIST_DIR, IDX_FILES, load_fashion_mnist, load_mnist, parse_idx, read_idx
from prunefl.errors import DataError


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Encode ``array`` as IDX: two zero bytes, type code, ndim, big-endian uint32 dims, big-endian payload."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def _write(path: Path, payload: bytes, compress: bool) -> Path:
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def _write_mnist_dir(
    directory: Path, compress: bool | dict[str, bool] = True, n_train: int = 6, n_test: int = 4
) -> dict[str, np.ndarray]:
    """Write the four standard files with distinct random content; return what was written, by key."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, array in arrays.items():
        gz = compress[key] if isinstance(compress, dict) else compress
        _write(directory / IDX_FILES[key], _idx_bytes(array), gz)
    return arrays


@pytest.mark.parametrize(
    ("array", "type_code"),
    [
        (np.array([1, 2, 255], dtype=np.uint8), 0x08),
        (np.array([[-1, 300], [7, -32768]], dtype=np.int16), 0x0B),  # multi-byte: checks big-endian decoding
        (np.array([1.5, -2.25], dtype=np.float32), 0x0D),
        (np.array([[[1e300]]], dtype=np.float64), 0x0E),
    ],
)
def test_parse_idx_roundtrips_every_dtype_in_native_order(array: np.ndarray, type_code: int) -> None:
    # Prepare
    data = _idx_bytes(array, type_code)

    # Execute
    decoded = parse_idx(data)

    # Assert
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype.isnative
    assert decoded.flags.writeable


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_reads_gzipped_and_raw_files_alike(tmp_path: Path, compress: bool) -> None:
    # Prepare
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = _write(tmp_path / "images", _idx_bytes(array), compress)

    # Execute
    decoded = read_idx(path)

    # Assert
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(
    "compress", [True, False, {"x_train": True, "y_train": False, "x_test": False, "y_test": True}]
)
def test_load_mnist_returns_written_images_and_labels(tmp_path: Path, compress: bool | dict[str, bool]) -> None:
    # Prepare
    written = _write_mnist_dir(tmp_path, compress)

    # Execute
    ds = load_mnist(tmp_path)

    # Assert
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert str(ds.x_train.dtype) == "torch.uint8" and str(ds.y_train.dtype) == "torch.int64"
    np.testing.assert_array_equal(ds.x_train.numpy()[:, 0], written["x_train"])
    np.testing.assert_array_equal(ds.y_test.numpy(), written["y_test"])
    assert ds.mean == () and not ds.invert and ds.train_groups is None


def test_load_fashion_mnist_reads_given_dir_and_names_the_set(tmp_path: Path) -> None:
    # Prepare
    written = _write_mnist_dir(tmp_path, compress=False)

    # Execute
    ds = load_fashion_mnist(tmp_path)

    # Assert
    assert ds.name == "fashion-mnist"
    np.testing.assert_array_equal(ds.y_train.numpy(), written["y_train"])


def _replace_header_byte(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes([value]) + data[index + 1 :]


_LABELS = _idx_bytes(np.array([1, 2, 3], dtype=np.uint8))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00", "at least a 4-byte magic"),  # shorter than the magic number
        (_replace_header_byte(_LABELS, 0, 1), "magic number starts with"),  # first magic byte not zero
        (_replace_header_byte(_LABELS, 2, 0x07), "unknown IDX type code 0x07"),  # no such element type
        (_replace_header_byte(_LABELS, 3, 0), "0 dimensions"),  # scalar files do not exist in IDX
        (_replace_header_byte(_LABELS, 3, 4), "truncated IDX header"),  # claims 4 dims, only 1 present
        (_LABELS[:-1], "file truncated"),  # payload one byte short
        (_LABELS + b"\x00", "trailing bytes"),  # payload one byte long
        (gzip.compress(_LABELS)[:-6], "corrupt or truncated gzip"),  # gzip stream cut off
    ],
)
def test_read_idx_malformed_file_raises_data_error_naming_path(tmp_path: Path, content: bytes, message: str) -> None:
    # Prepare
    path = tmp_path / "bad-labels-idx1-ubyte"
    path.write_bytes(content)

    # Execute
    with pytest.raises(DataError) as info:
        read_idx(path)

    # Assert
    assert message in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("key", "array", "message"),
    [
        ("y_train", np.arange(5, dtype=np.uint8), "holds 6 images but"),  # 6 images, 5 labels
        ("y_test", np.array([0, 1, 2, 10], dtype=np.uint8), "label 10 found"),  # labels must be < 10
        ("x_train", np.zeros((6, 27, 28), dtype=np.uint8), "shape (n, 28, 28)"),  # wrong image size
        ("y_train", np.zeros((6, 1), dtype=np.uint8), "1-D uint8 labels"),  # labels must be 1-D
    ],
)
def test_load_mnist_inconsistent_files_raise_data_error(
    tmp_path: Path, key: str, array: np.ndarray, message: str
) -> None:
    # Prepare
    _write_mnist_dir(tmp_path, compress=False)
    (tmp_path / IDX_FILES[key]).write_bytes(_idx_bytes(array))

    # Execute
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path)

    # Assert
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_load_mnist_non_uint8_images_raise_data_error(tmp_path: Path) -> None:
    # Prepare
    _write_mnist_dir(tmp_path, compress=False)
    (tmp_path / IDX_FILES["x_test"]).write_bytes(_idx_bytes(np.zeros((4, 28, 28), np.float32), 0x0D))

    # Execute
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path)

    # Assert
    assert "found float32" in str(info.value)


def test_load_fashion_mnist_missing_dir_says_how_to_get_it(tmp_path: Path) -> None:
    # Prepare
    missing = tmp_path / "nowhere"

    # Execute
    with pytest.raises(DataError) as info:
        load_fashion_mnist(missing)

    # Assert
    message = str(info.value)
    assert f"train-images-idx3-ubyte[.gz] in {missing}" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "/usr/share/datasets/fashion-mnist" in message
    assert isinstance(info.value, OSError)


def test_load_mnist_one_missing_file_names_it(tmp_path: Path) -> None:
    # Prepare
    _write_mnist_dir(tmp_path, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()

    # Execute
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path)

    # Assert
    assert "t10k-labels-idx1-ubyte[.gz]" in str(info.value)


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_load_fashion_mnist_real_files_have_the_published_sizes() -> None:
    # Execute
    ds = load_fashion_mnist()

    # Assert: 60,000 / 10,000 images, 6,000 / 1,000 per class (the published, balanced set)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.bincount().tolist() == [6000] * 10
    assert ds.y_test.bincount().tolist() == [1000] * 10
    assert int(ds.x_train.max()) == 255 and int(ds.x_train.min()) == 0
