"""Load LEAF's JSON federated data sets (FEMNIST, CelebA), keeping each training sample's writer/user."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunefl.data._files import read_capped
from prunefl.data.dataset import ArrayDataset
from prunefl.data.imagefolder import read_images
from prunefl.errors import ConfigError, DataError

__all__ = [
    "LeafData",
    "read_femnist",
    "read_celeba",
    "load_femnist",
    "load_celeba",
    "MAX_LEAF_JSON_BYTES",
]

logger = logging.getLogger(__name__)

FEMNIST_CLASSES = 62  # 10 digits + 26 upper + 26 lower case letters
FEMNIST_SIDE = 28
CELEBA_CLASSES = 2  # LEAF's "Smiling" attribute: 0 or 1
CELEBA_IMAGE_SIZE = 84  # LEAF's celeba model input side (spec §6)

MAX_LEAF_JSON_BYTES = 1 << 30
"""Largest LEAF JSON file read, in bytes (1 GiB; LEAF's FEMNIST files hold tens of MB each): a larger one is refused
unread."""

_HOW_TO_GET = {
    "femnist": (
        "generate it with LEAF (https://github.com/TalwalkarLab/leaf): in leaf/data/femnist run "
        "`./preprocess.sh -s niid --sf 0.05 -k 0 -t sample` (spec §7) and pass leaf/data/femnist/data as "
        "data_dir (--data-dir)"
    ),
    "celeba": (
        "generate it with LEAF (https://github.com/TalwalkarLab/leaf): put img_align_celeba/ and "
        "list_attr_celeba.txt, identity_CelebA.txt from the CelebA site into leaf/data/celeba/data/raw/, run "
        "`./preprocess.sh -s niid --sf 1.0 -k 0 -t sample` in leaf/data/celeba (spec §7) and pass "
        "leaf/data/celeba/data as data_dir (--data-dir)"
    ),
}


@dataclass(frozen=True)
class LeafData:
    """A LEAF data set with the names of its training users.

    Parameters
    ----------
    dataset : ArrayDataset
        The data; ``dataset.train_groups[i]`` is the index into ``users`` of training sample ``i``.
        Training samples are ordered by user, users by name, so each user's samples are contiguous.
    users : tuple of str
        Training user (FEMNIST writer, CelebA celebrity) names, sorted; only users with training samples.
    """

    dataset: ArrayDataset
    users: tuple[str, ...]


def read_femnist(data_dir: str | Path) -> LeafData:
    """Load LEAF FEMNIST (28x28 greyscale handwriting, 62 classes) with its writer names.

    Pixels are kept as LEAF stores them, ``float32`` in [0, 1] with white background 1.0; the data set has
    ``invert=True`` so :meth:`ArrayDataset.prepare` feeds ``1 - x`` to the model (spec §6). The test set is the
    union of every writer's test split (spec §7).

    Parameters
    ----------
    data_dir : str or pathlib.Path
        LEAF output folder holding ``train/*.json`` and ``test/*.json``.

    Returns
    -------
    LeafData
        Images ``(n, 1, 28, 28)`` ``float32``, labels in [0, 62), ``train_groups`` = writer index.

    Raises
    ------
    DataError
        If a folder or file is missing, a JSON file is malformed, or a sample has the wrong size or label.

    Examples
    --------
    >>> read_femnist("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.DataError: femnist: expected LEAF JSON files /nonexistent/train/*.json, ...
    """
    data_dir = Path(data_dir)
    train = _read_split("femnist", data_dir / "train")
    test = _read_split("femnist", data_dir / "test")
    x_train, x_test = (_femnist_pixels(split) for split in (train, test))
    y_train, y_test = (_labels("femnist", split, FEMNIST_CLASSES) for split in (train, test))
    dataset = ArrayDataset(
        name="femnist",
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
        num_classes=FEMNIST_CLASSES,
        train_groups=train.groups,
        invert=True,
    )
    return LeafData(dataset=dataset, users=train.users)


def read_celeba(
    data_dir: str | Path, images_dir: str | Path | None = None, image_size: int = CELEBA_IMAGE_SIZE
) -> LeafData:
    """Load LEAF CelebA ("Smiling", 2 classes) with its celebrity names, decoding the referenced JPEGs.

    Each image is resized to ``image_size x image_size`` ignoring aspect ratio and converted to RGB, as LEAF's
    reference model does. The full set (200,288 images at 84 px) takes 4.2 GB as ``uint8``.

    Parameters
    ----------
    data_dir : str or pathlib.Path
        LEAF output folder holding ``train/*.json`` and ``test/*.json``; their ``x`` are image file names.
    images_dir : str or pathlib.Path or None
        Folder the file names are relative to (default: ``<data_dir>/raw/img_align_celeba``, LEAF's layout).
    image_size : int
        Side of the stored square images, in pixels (default: 84).

    Returns
    -------
    LeafData
        Images ``(n, 3, image_size, image_size)`` ``uint8``, labels in {0, 1}, ``train_groups`` = user index.

    Raises
    ------
    ConfigError
        If ``image_size`` < 1.
    DataError
        If a folder, JSON file or image is missing or malformed.

    Examples
    --------
    >>> read_celeba("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.DataError: celeba: expected LEAF JSON files /nonexistent/train/*.json, ...
    """
    data_dir = Path(data_dir)
    images_dir = Path(images_dir) if images_dir is not None else data_dir / "raw" / "img_align_celeba"
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size must be an int >= 1, got {image_size!r}")
    train = _read_split("celeba", data_dir / "train")
    test = _read_split("celeba", data_dir / "test")
    if not images_dir.is_dir():
        raise DataError(
            f"celeba: expected the CelebA images folder {images_dir} (img_align_celeba), not found. "
            f"To get the data: {_HOW_TO_GET['celeba']}; or pass images_dir"
        )
    train_paths, test_paths = (_image_paths(split, images_dir) for split in (train, test))
    try:
        x_train, x_test = (read_images(paths, image_size, fit="stretch") for paths in (train_paths, test_paths))
    except DataError as exc:
        raise DataError(f"celeba: {exc}. To get the data: {_HOW_TO_GET['celeba']}") from exc
    y_train, y_test = (_labels("celeba", split, CELEBA_CLASSES) for split in (train, test))
    dataset = ArrayDataset(
        name="celeba",
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
        num_classes=CELEBA_CLASSES,
        train_groups=train.groups,
    )
    return LeafData(dataset=dataset, users=train.users)


def load_femnist(data_dir: str | Path) -> ArrayDataset:
    """Load LEAF FEMNIST; :func:`read_femnist` without the writer names.

    Examples
    --------
    >>> load_femnist("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.DataError: femnist: ...
    """
    return read_femnist(data_dir).dataset


def load_celeba(
    data_dir: str | Path, images_dir: str | Path | None = None, image_size: int = CELEBA_IMAGE_SIZE
) -> ArrayDataset:
    """Load LEAF CelebA; :func:`read_celeba` without the user names.

    Examples
    --------
    >>> load_celeba("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.DataError: celeba: ...
    """
    return read_celeba(data_dir, images_dir, image_size).dataset


@dataclass(frozen=True)
class _Split:
    """One LEAF split, samples ordered by user name."""

    source: Path  # the split folder, for messages
    users: tuple[str, ...]  # sorted names of users with at least one sample
    x: list[Any]  # one entry per sample, as in the JSON
    y: list[Any]
    groups: np.ndarray  # (n,) int64 index into users


def _read_split(name: str, split_dir: Path) -> _Split:
    """Merge every ``split_dir/*.json`` into one :class:`_Split`."""
    files = sorted(split_dir.glob("*.json")) if split_dir.is_dir() else []
    if not files:
        raise DataError(
            f"{name}: expected LEAF JSON files {split_dir}/*.json, found none. To get the data: {_HOW_TO_GET[name]}"
        )
    per_user: dict[str, dict[str, list[Any]]] = {}
    for path in files:
        for user, data in _read_json(name, path).items():
            if user in per_user:
                raise DataError(f"{name}: {path}: user {user!r} also appears in another file of {split_dir}")
            per_user[user] = data
    users = tuple(sorted(u for u, data in per_user.items() if data["y"]))
    counts = [len(per_user[u]["y"]) for u in users]
    x = list(itertools.chain.from_iterable(per_user[u]["x"] for u in users))
    y = list(itertools.chain.from_iterable(per_user[u]["y"] for u in users))
    groups = np.repeat(np.arange(len(users), dtype=np.int64), counts)
    logger.debug("%s: read %d samples of %d users from %d files in %s", name, len(y), len(users), len(files), split_dir)
    return _Split(source=split_dir, users=users, x=x, y=y, groups=groups)


def _read_json(name: str, path: Path) -> dict[str, dict[str, list[Any]]]:
    """Read one LEAF JSON file and check its structure; return ``{user: {"x": [...], "y": [...]}}``."""
    try:
        raw = read_capped(path, MAX_LEAF_JSON_BYTES)
    except OSError as exc:
        raise DataError(f"{name}: cannot read LEAF JSON file {path}: {exc}") from exc
    if raw is None:
        raise DataError(f"{name}: LEAF JSON file {path} is larger than {MAX_LEAF_JSON_BYTES} bytes; refused unread")
    try:
        content = json.loads(raw)
    # ValueError covers JSONDecodeError, invalid UTF-8 and integers of > 4300 digits; RecursionError arrays or
    # objects nested deeper than Python's recursion limit (LEAF's files nest 4 deep).
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{name}: cannot read LEAF JSON file {path}: {str(exc)[:200]}") from exc
    if not isinstance(content, dict) or not isinstance(content.get("users"), list):
        raise DataError(f'{name}: {path}: expected a JSON object with a "users" list, "num_samples" and "user_data"')
    user_data = content.get("user_data")
    if not isinstance(user_data, dict):
        raise DataError(
            f'{name}: {path}: expected a "user_data" object mapping each user to {{"x": [...], "y": [...]}}'
        )
    users = content["users"]
    num_samples = content.get("num_samples")
    if num_samples is not None and (not isinstance(num_samples, list) or len(num_samples) != len(users)):
        raise DataError(f'{name}: {path}: "num_samples" must be a list as long as "users" ({len(users)})')
    out: dict[str, dict[str, list[Any]]] = {}
    for i, user in enumerate(users):
        data = user_data.get(user) if isinstance(user, str) else None
        if not isinstance(data, dict) or not isinstance(data.get("x"), list) or not isinstance(data.get("y"), list):
            raise DataError(f'{name}: {path}: user {user!r} has no "user_data" entry with "x" and "y" lists')
        if len(data["x"]) != len(data["y"]):
            raise DataError(f"{name}: {path}: user {user!r} has {len(data['x'])} x but {len(data['y'])} y")
        if num_samples is not None and num_samples[i] != len(data["y"]):
            raise DataError(
                f'{name}: {path}: user {user!r}: "num_samples" says {num_samples[i]}, found {len(data["y"])} samples'
            )
        if user in out:
            raise DataError(f'{name}: {path}: user {user!r} is listed twice in "users"')
        out[user] = {"x": data["x"], "y": data["y"]}
    return out


def _femnist_pixels(split: _Split) -> np.ndarray:
    """Stack FEMNIST's flat 784-float samples into ``(n, 1, 28, 28)`` float32 in [0, 1]."""
    pixels = FEMNIST_SIDE * FEMNIST_SIDE
    try:
        flat = np.asarray(split.x, dtype=np.float32).reshape(len(split.x), -1)  # (n, 784) if well-formed
    except (ValueError, TypeError) as exc:
        raise DataError(f"femnist: {split.source}: samples are not lists of {pixels} numbers ({exc})") from exc
    if flat.shape[1:] != (pixels,):
        raise DataError(f"femnist: {split.source}: expected {pixels} pixels per sample, found shape {flat.shape}")
    if flat.size and not (np.isfinite(flat).all() and flat.min() >= 0.0 and flat.max() <= 1.0):
        raise DataError(f"femnist: {split.source}: expected pixel values in [0, 1], found values outside")
    return flat.reshape(-1, 1, FEMNIST_SIDE, FEMNIST_SIDE)


def _labels(name: str, split: _Split, num_classes: int) -> np.ndarray:
    """Convert a split's labels to int64 and check they lie in ``[0, num_classes)``."""
    try:
        y = np.asarray(split.y)
    except ValueError as exc:
        raise DataError(f"{name}: {split.source}: labels are not a flat list of integers ({exc})") from exc
    if y.size and (y.ndim != 1 or y.dtype.kind not in "iub"):
        raise DataError(f"{name}: {split.source}: labels must be integers, found {y.dtype.name} of shape {y.shape}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{name}: {split.source}: labels must lie in [0, {num_classes}), found [{y.min()}, {y.max()}]")
    return y


def _image_paths(split: _Split, images_dir: Path) -> list[Path]:
    """Resolve CelebA's image names, refusing anything that is not a plain relative path."""
    paths = []
    for file_name in split.x:
        relative = Path(file_name) if isinstance(file_name, str) else None
        if relative is None or relative.is_absolute() or ".." in relative.parts:
            raise DataError(
                f"celeba: {split.source}: expected image file names relative to {images_dir}, got {file_name!r}"
            )
        paths.append(images_dir / relative)
    return paths
