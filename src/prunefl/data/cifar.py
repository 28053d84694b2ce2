"""Load CIFAR-10's official Python batches through a restricted unpickler."""

from __future__ import annotations

import codecs
import io
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct  # numpy >= 2 location

from prunefl.data._files import read_capped
from prunefl.data.dataset import ArrayDataset
from prunefl.errors import DataError

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_FOLDER",
    "load_cifar10",
    "read_cifar_batch",
    "MAX_CIFAR_BATCH_BYTES",
]

logger = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # spec §6, as in the official code
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR10_FOLDER = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_NUM_CLASSES = 10
_SIDE = 32

MAX_CIFAR_BATCH_BYTES = 1 << 28
"""Largest batch file read, in bytes (256 MiB; the official batches hold 31 MB each): a larger one is refused
unread. The restricted unpickler builds nothing but arrays and lists from the bytes read, so memory is bounded by a
small multiple of this."""
_HOW_TO_GET = (
    "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a), "
    "extract it and pass the folder containing cifar-10-batches-py as data_dir (--data-dir)"
)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 Python batch file safely.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``data_batch_<i>`` or ``test_batch`` file: a pickled dict with ``b"data"`` (``uint8``, ``(n, 3072)``,
        channel-major rows: 1024 red, 1024 green, 1024 blue) and ``b"labels"`` (``n`` ints in [0, 10)).

    Returns
    -------
    images : numpy.ndarray
        ``uint8``, shape ``(n, 3, 32, 32)``.
    labels : numpy.ndarray
        ``int64``, shape ``(n,)``.

    Raises
    ------
    DataError
        If the file is missing, larger than :data:`MAX_CIFAR_BATCH_BYTES`, not a pickle, refers to a disallowed
        global, or has the wrong content (labels must be a flat list of ints: a pickle can nest one list in
        itself many times over, which ``numpy.asarray`` would expand exponentially).

    Examples
    --------
    >>> import pickle, tempfile, pathlib, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = pathlib.Path(d, "data_batch_1")
    ...     batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 7]}
    ...     _ = p.write_bytes(pickle.dumps(batch, protocol=2))
    ...     x, y = read_cifar_batch(p)
    >>> x.shape, y.tolist()
    ((2, 3, 32, 32), [3, 7])
    """
    path = Path(path)
    try:
        raw = read_capped(path, MAX_CIFAR_BATCH_BYTES)
    except OSError as exc:
        raise DataError(f"cifar10: cannot read batch file {path} ({exc}). To get the data: {_HOW_TO_GET}") from exc
    if raw is None:
        raise DataError(f"cifar10: batch file {path} is larger than {MAX_CIFAR_BATCH_BYTES} bytes; refused unread "
                        f"(the official batches hold 31 MB)")  # fmt: skip
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # unpickling malformed bytes can raise almost anything; all mean "corrupt"
        raise DataError(f"cifar10: {path} is not a valid CIFAR batch pickle: {exc}") from exc
    return _check_batch(path, batch)


def load_cifar10(data_dir: str | Path) -> ArrayDataset:
    """Load CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB, 10 classes) from the official Python batches.

    Parameters
    ----------
    data_dir : str or pathlib.Path
        The ``cifar-10-batches-py`` folder itself, or a folder containing it.

    Returns
    -------
    ArrayDataset
        ``uint8`` images ``(n, 3, 32, 32)``, CIFAR-10 mean/std and ``augment="crop_flip"`` (spec §6).

    Raises
    ------
    DataError
        If a batch file is missing or invalid.

    Examples
    --------
    >>> load_cifar10("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.DataError: cifar10: expected data_batch_1 in /nonexistent/cifar-10-batches-py, ...
    """
    data_dir = Path(data_dir)
    folder = data_dir if (data_dir / _TEST_BATCH).is_file() else data_dir / CIFAR10_FOLDER
    for file_name in (*_TRAIN_BATCHES, _TEST_BATCH):
        if not (folder / file_name).is_file():
            raise DataError(f"cifar10: expected {file_name} in {folder}, not found. To get the data: {_HOW_TO_GET}")
    train = [read_cifar_batch(folder / file_name) for file_name in _TRAIN_BATCHES]
    x_test, y_test = read_cifar_batch(folder / _TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    logger.debug("loaded cifar10 from %s: %d train, %d test", folder, len(y_train), len(y_test))
    return ArrayDataset(
        name="cifar10",
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
        num_classes=_NUM_CLASSES,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        augment="crop_flip",
    )


def _check_batch(path: Path, batch: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate an unpickled batch dict and convert it to ``(images, labels)``."""
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f'cifar10: {path}: expected a dict with keys b"data" and b"labels", found {keys}')
    data = batch[b"data"]
    row = 3 * _SIDE * _SIDE
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        found = f"{data.dtype.name} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f'cifar10: {path}: expected b"data" as uint8 array of shape (n, {row}), found {found}')
    labels = batch[b"labels"]
    # Checked before numpy sees it: memo references let a pickle of a few hundred bytes hold a list nested 40 deep
    # with 2 references per level, 2^40 ints to np.asarray. A flat list of ints (or a 1-D array) cannot do that.
    flat = isinstance(labels, list) and all(type(v) is int for v in labels)
    if not (flat or (isinstance(labels, np.ndarray) and labels.ndim == 1)):
        found = f"{labels.dtype.name} {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise DataError(f'cifar10: {path}: b"labels" must be a flat list of integer labels, found {found}')
    try:
        labels = np.asarray(labels)
    except (ValueError, OverflowError) as exc:
        raise DataError(f'cifar10: {path}: b"labels" is not a list of ints ({exc})') from exc
    if labels.shape != (data.shape[0],) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(
            f"cifar10: {path}: expected {data.shape[0]} integer labels, "
            f"found {labels.dtype.name} of shape {labels.shape}"
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise DataError(f"cifar10: {path}: labels must lie in [0, 10), found [{labels.min()}, {labels.max()}]")
    # Rows are channel-major then row-major, so a plain reshape gives (n, 3, 32, 32); copy to own the memory.
    images = np.array(data.reshape(-1, 3, _SIDE, _SIDE), copy=True)
    return images, labels


# The only globals a CIFAR batch needs. The official files were pickled by Python 2 with numpy 1.x and
# reference numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype to rebuild the b"data" array;
# files re-pickled by numpy 2 say numpy._core instead, and Python 3's protocol 2 stores bytes through
# _codecs.encode (a pure function, also on torch's weights_only allow-list). Everything else - os.system,
# builtins.eval, any class with a __reduce__ - is refused, so a tampered file cannot run code.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR batch (allowed: "
                f"{sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS)})"
            ) from None
