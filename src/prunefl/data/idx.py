"""Read MNIST-style IDX files (raw or gzipped) into an :class:`ArrayDataset`."""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import DataError

__all__ = [
    "FASHION_MNIST_DIR",
    "IDX_FILES",
    "MAX_IDX_PAYLOAD_BYTES",
    "parse_idx",
    "read_idx",
    "load_fashion_mnist",
    "load_mnist",
]

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package puts the four gzipped IDX files."""

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
"""Standard IDX file names of MNIST and Fashion-MNIST; each may also carry a ``.gz`` suffix."""

_HOW_TO_GET = {
    "fashion-mnist": (
        "install it with `apt-get install dataset-fashion-mnist` (files go to /usr/share/datasets/fashion-mnist), "
        "or download the four files from https://github.com/zalandoresearch/fashion-mnist and pass their folder "
        "as data_dir (--data-dir)"
    ),
    "mnist": (
        "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
        "t10k-labels-idx1-ubyte.gz (e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/) into one folder "
        "and pass it as data_dir (--data-dir)"
    ),
}

# IDX type code (third magic byte) -> big-endian element type, from the format description at
# http://yann.lecun.com/exdb/mnist/ ("0x08: unsigned byte ... 0x0E: double (8 bytes)").
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_HEADER_BYTES = 4 + 4 * 255  # magic + at most 255 big-endian uint32 dimensions
# Deflate's best case turns 1 byte into about 1032 (zlib's documentation, "technical details"): a gzip file of n
# bytes cannot hold more than ~1032·n, so a header declaring more is lying and is refused before decompressing.
_MAX_DEFLATE_RATIO = 1032

MAX_IDX_PAYLOAD_BYTES = 1 << 32
"""Largest IDX payload read, in bytes (4 GiB; Fashion-MNIST's largest file holds 47 MB). A header declaring more is
refused before anything is allocated."""
_IMAGE_SIDE = 28
_NUM_CLASSES = 10


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one uncompressed IDX file into an array in native byte order.

    The header is checked against the payload: two zero bytes, a known type code, 1 to 255 dimensions,
    at most :data:`MAX_IDX_PAYLOAD_BYTES` declared, and exactly ``prod(dims) * itemsize`` payload bytes.

    Parameters
    ----------
    data : bytes
        The whole file content, already decompressed.
    source : str
        Where the bytes came from, used in error messages (default: ``"<bytes>"``).

    Returns
    -------
    numpy.ndarray
        Writable array of shape ``dims``; ``uint8`` for type code 0x08.

    Raises
    ------
    DataError
        If the header is malformed or the payload is shorter or longer than the header says.

    Examples
    --------
    >>> parse_idx(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9])).tolist()
    [7, 8, 9]
    """
    header = _parse_header(data, source)
    _check_payload_size(header, len(data) - header.n_bytes, source)
    # bytearray makes the array writable, so torch.from_numpy does not warn; astype makes it native-endian.
    array = np.frombuffer(bytearray(data[header.n_bytes :]), dtype=header.dtype).reshape(header.dims)
    return array.astype(header.dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, gzipped or raw (detected from its first bytes, not its name).

    Parameters
    ----------
    path : str or pathlib.Path
        The file to read.

    Returns
    -------
    numpy.ndarray
        The decoded array, see :func:`parse_idx`.

    Raises
    ------
    DataError
        If the file cannot be read, is not valid gzip, or is not a valid IDX file; the message names the path.
        A header that declares more bytes than the file holds (or, gzipped, than it can expand to), or more than
        :data:`MAX_IDX_PAYLOAD_BYTES`, is refused before the payload is read or decompressed; decompression stops
        one byte past the declared size.

    Examples
    --------
    >>> import gzip, tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = pathlib.Path(d, "labels.gz")
    ...     _ = p.write_bytes(gzip.compress(bytes([0, 0, 0x08, 1, 0, 0, 0, 2, 4, 5])))
    ...     read_idx(p).tolist()
    [4, 5]
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            file_bytes = os.fstat(f.fileno()).st_size
            if f.read(2) == _GZIP_MAGIC:
                f.seek(0)
                data = _read_gzipped_idx(f, file_bytes, str(path))
            else:
                f.seek(0)
                header = _parse_header(f.read(_MAX_HEADER_BYTES), str(path))
                _check_payload_size(header, file_bytes - header.n_bytes, str(path))  # before reading the payload
                f.seek(0)
                data = f.read(header.n_bytes + header.payload_bytes)
    except DataError:  # also an OSError, but already says what is wrong
        raise
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    return parse_idx(data, source=str(path))


def load_fashion_mnist(data_dir: str | Path | None = None) -> ArrayDataset:
    """Load Fashion-MNIST from its four IDX files (60,000 train / 10,000 test, 28x28 greyscale, 10 classes).

    Parameters
    ----------
    data_dir : str or pathlib.Path or None
        Folder holding ``train-images-idx3-ubyte[.gz]`` and the three other standard files
        (default: ``/usr/share/datasets/fashion-mnist``, where ``apt-get install dataset-fashion-mnist`` puts them).

    Returns
    -------
    ArrayDataset
        ``uint8`` images of shape ``(n, 1, 28, 28)``, ``int64`` labels, no normalisation.

    Raises
    ------
    DataError
        If a file is missing, corrupt, or inconsistent with the others.

    Examples
    --------
    >>> load_fashion_mnist("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.DataError: fashion-mnist: expected train-images-idx3-ubyte[.gz] in /nonexistent, ...
    """
    return _load_idx_dataset("fashion-mnist", Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR)


def load_mnist(data_dir: str | Path) -> ArrayDataset:
    """Load MNIST from its four IDX files (60,000 train / 10,000 test, 28x28 greyscale, 10 classes).

    Parameters
    ----------
    data_dir : str or pathlib.Path
        Folder holding ``train-images-idx3-ubyte[.gz]`` and the three other standard files.

    Returns
    -------
    ArrayDataset
        ``uint8`` images of shape ``(n, 1, 28, 28)``, ``int64`` labels, no normalisation.

    Raises
    ------
    DataError
        If a file is missing, corrupt, or inconsistent with the others.

    Examples
    --------
    >>> load_mnist("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.DataError: mnist: expected train-images-idx3-ubyte[.gz] in /nonexistent, ...
    """
    return _load_idx_dataset("mnist", Path(data_dir))


def _load_idx_dataset(name: str, data_dir: Path) -> ArrayDataset:
    """Read and cross-check the four IDX files of ``name`` in ``data_dir``."""
    arrays = {key: read_idx(_find_idx_file(name, data_dir, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check_images(name, data_dir, IDX_FILES[f"x_{split}"], images)
        _check_labels(name, data_dir, IDX_FILES[f"y_{split}"], labels)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{name}: {data_dir}: {IDX_FILES[f'x_{split}']} holds {images.shape[0]} images but "
                f"{IDX_FILES[f'y_{split}']} holds {labels.shape[0]} labels; expected equal counts "
                f"(mixed files from different data sets?). To get the data: {_HOW_TO_GET[name]}"
            )
    logger.debug("loaded %s from %s: %d train, %d test", name, data_dir, len(arrays["y_train"]), len(arrays["y_test"]))
    return ArrayDataset(
        name=name,
        x_train=torch.from_numpy(arrays["x_train"][:, None]),  # (n, 1, 28, 28)
        y_train=torch.from_numpy(arrays["y_train"].astype(np.int64)),
        x_test=torch.from_numpy(arrays["x_test"][:, None]),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=_NUM_CLASSES,
    )


@dataclass(frozen=True)
class _IdxHeader:
    """What an IDX header declares."""

    dtype: np.dtype[Any]  # big-endian element type
    dims: tuple[int, ...]
    n_bytes: int  # of the header itself: 4 + 4·ndim
    payload_bytes: int  # prod(dims)·itemsize, at most MAX_IDX_PAYLOAD_BYTES


def _parse_header(data: bytes, source: str) -> _IdxHeader:
    """Read and check the header at the start of ``data`` (which may hold more than the header)."""
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file: {len(data)} bytes, expected at least a 4-byte magic number")
    zero0, zero1, type_code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{source}: not an IDX file: magic number starts with bytes {zero0:#04x} {zero1:#04x}, expected 0x00 0x00"
        )
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"{code:#04x}" for code in _IDX_DTYPES)
        raise DataError(f"{source}: unknown IDX type code {type_code:#04x}, expected one of {known}")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions, expected at least 1")
    n_bytes = 4 + 4 * ndim
    if len(data) < n_bytes:
        raise DataError(f"{source}: truncated IDX header: {len(data)} bytes, expected {n_bytes} for {ndim} dims")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    payload_bytes = math.prod(dims) * dtype.itemsize  # Python ints: 255 dims of 2^32 - 1 do not wrap around
    if payload_bytes > MAX_IDX_PAYLOAD_BYTES:
        raise DataError(
            f"{source}: IDX header declares shape {_short_dims(dims)} of {dtype.name}, {payload_bytes} bytes; at "
            f"most {MAX_IDX_PAYLOAD_BYTES} are read (a lying or damaged header?)"
        )
    return _IdxHeader(dtype=dtype, dims=dims, n_bytes=n_bytes, payload_bytes=payload_bytes)


def _check_payload_size(header: _IdxHeader, found: int, source: str) -> None:
    """Raise DataError unless ``found`` payload bytes are exactly what ``header`` declares."""
    if found != header.payload_bytes:
        raise DataError(
            f"{source}: IDX payload is {found} bytes, expected {header.payload_bytes} for shape "
            f"{_short_dims(header.dims)} of {header.dtype.name}"
            + (" (file truncated?)" if found < header.payload_bytes else " (trailing bytes?)")
        )


def _read_gzipped_idx(f: IO[bytes], file_bytes: int, source: str) -> bytes:
    """Decompress a gzipped IDX file, never past one byte more than its header declares."""
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as stream:
            head = stream.read(_MAX_HEADER_BYTES)
            header = _parse_header(head, source)
            total = header.n_bytes + header.payload_bytes
            if total > _MAX_DEFLATE_RATIO * file_bytes + _MAX_HEADER_BYTES:
                raise DataError(
                    f"{source}: IDX header declares {total} bytes, more than a gzip file of {file_bytes} bytes can "
                    f"expand to (a lying or damaged header?)"
                )
            # One byte more than declared, so that parse_idx can tell "trailing bytes" from an exact payload.
            rest = stream.read(max(0, total + 1 - len(head)))
    except DataError:  # also an OSError, but already says what is wrong
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source}: corrupt or truncated gzip data ({exc}); delete it and fetch it again") from exc
    if len(head) + len(rest) > total:  # the rest of the stream was never inflated: its length is unknown
        raise DataError(
            f"{source}: IDX payload is longer than the {header.payload_bytes} bytes expected for shape "
            f"{_short_dims(header.dims)} of {header.dtype.name} (trailing bytes?)"
        )
    return head + rest


def _short_dims(dims: tuple[int, ...]) -> str:
    """``dims`` for a message: up to 8 of them."""
    return str(dims) if len(dims) <= 8 else f"({', '.join(map(str, dims[:8]))}, ... {len(dims)} dims)"


def _find_idx_file(name: str, data_dir: Path, stem: str) -> Path:
    """Return ``data_dir/stem`` or ``data_dir/stem.gz``, whichever exists (raw first)."""
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{name}: expected {stem}[.gz] in {data_dir}, found neither. To get the data: {_HOW_TO_GET[name]}")


def _check_images(name: str, data_dir: Path, stem: str, images: np.ndarray) -> None:
    """Raise DataError unless ``images`` is ``uint8`` of shape ``(n, 28, 28)``."""
    expected_tail = (_IMAGE_SIDE, _IMAGE_SIDE)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != expected_tail:
        raise DataError(
            f"{name}: {data_dir / stem}: expected uint8 images of shape (n, 28, 28), "
            f"found {images.dtype.name} of shape {images.shape}"
        )


def _check_labels(name: str, data_dir: Path, stem: str, labels: np.ndarray) -> None:
    """Raise DataError unless ``labels`` is 1-D ``uint8`` with values below 10."""
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{name}: {data_dir / stem}: expected 1-D uint8 labels, found {labels.dtype.name} of shape {labels.shape}"
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise DataError(
            f"{name}: {data_dir / stem}: label {int(labels.max())} found, expected labels in [0, {_NUM_CLASSES})"
        )
