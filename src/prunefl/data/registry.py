"""Map data set names to loaders: the single entry point ``load_dataset``."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunefl.data.cifar import load_cifar10
from prunefl.data.dataset import ArrayDataset
from prunefl.data.digits import load_digits
from prunefl.data.idx import load_fashion_mnist, load_mnist
from prunefl.data.imagefolder import load_imagefolder
from prunefl.data.leaf import load_celeba, load_femnist
from prunefl.data.synthetic import make_synthetic
from prunefl.errors import ConfigError

__all__ = ["DATASET_NAMES", "load_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry:
    """How to call one loader: which of its parameters receive ``data_dir`` and ``seed``."""

    loader: Callable[..., ArrayDataset]
    dir_param: str | None  # None: the data set is generated or bundled, data_dir is ignored
    dir_required: bool  # False: the loader has a default location
    dir_hint: str  # what data_dir must point to, for the error when it is missing
    seed_param: str | None  # None: loading is deterministic, the seed is not used


_REGISTRY: dict[str, _Entry] = {
    "fashion-mnist": _Entry(load_fashion_mnist, "data_dir", False, "the folder with the four IDX files", None),
    "mnist": _Entry(load_mnist, "data_dir", True, "the folder with the four MNIST IDX files", None),
    "femnist": _Entry(load_femnist, "data_dir", True, "LEAF's femnist/data folder (train/, test/)", None),
    "celeba": _Entry(load_celeba, "data_dir", True, "LEAF's celeba/data folder (train/, test/, raw/)", None),
    "cifar10": _Entry(load_cifar10, "data_dir", True, "the folder containing cifar-10-batches-py", None),
    "imagefolder": _Entry(load_imagefolder, "root", True, "a folder with train/<class>/ and val/<class>/", None),
    "digits": _Entry(load_digits, None, False, "", "seed"),
    "synthetic": _Entry(make_synthetic, None, False, "", "seed"),
}

DATASET_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Every name :func:`load_dataset` accepts."""


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0, **options: Any) -> ArrayDataset:
    """Load the data set called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`DATASET_NAMES`.
    data_dir : str or pathlib.Path or None
        Where the files are; required for every file-based set except ``fashion-mnist`` (default:
        ``/usr/share/datasets/fashion-mnist``); ignored, with a warning, by ``digits`` and ``synthetic``
        (default: None).
    seed : int
        Seed of ``digits``' train/test split and of ``synthetic``'s samples; unused by file-based sets
        (default: 0).
    **options
        Passed on to the loader and documented there: ``images_dir``, ``image_size`` (:func:`load_celeba`);
        ``image_size``, ``classes``, ``name``, ``augment`` (:func:`load_imagefolder`); ``test_fraction``
        (:func:`load_digits`); ``n_train``, ``n_test``, ``num_classes``, ``shape``, ``noise``, ``num_groups``
        (:func:`make_synthetic`).

    Returns
    -------
    ArrayDataset
        The loaded data set.

    Raises
    ------
    ConfigError
        If ``name`` or an option is unknown, or a required ``data_dir`` is missing.
    DataError
        If files are missing or malformed (from the loader).

    Examples
    --------
    >>> load_dataset("synthetic", seed=1, n_train=12, n_test=4).n_train
    12
    >>> load_dataset("svhn")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.ConfigError: unknown data set 'svhn'; expected one of ['fashion-mnist', 'mnist', ...]
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown data set {name!r}; expected one of {list(DATASET_NAMES)}")
    _check_options(name, entry, options)
    kwargs = dict(options)
    if entry.dir_param is not None:
        if data_dir is None and entry.dir_required:
            raise ConfigError(f"data set {name!r} needs data_dir (--data-dir): {entry.dir_hint}")
        if data_dir is not None:
            kwargs[entry.dir_param] = data_dir
    elif data_dir is not None:
        logger.warning("data set %r is generated or bundled; ignoring data_dir=%s", name, data_dir)
    if entry.seed_param is not None:
        kwargs[entry.seed_param] = seed
    return entry.loader(**kwargs)


def _check_options(name: str, entry: _Entry, options: dict[str, Any]) -> None:
    """Raise ConfigError for options the loader does not take (``data_dir``/``seed`` are set by us)."""
    allowed = set(inspect.signature(entry.loader).parameters) - {entry.dir_param, entry.seed_param}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"data set {name!r} got unknown options {unknown}; it accepts {sorted(allowed) or 'none'}")
