"""Split a training set among federated clients: IID, Dirichlet label skew, label shards, natural groups.

Every partitioner returns ``list[numpy.ndarray]``: client ``k``'s training indices, ``int64``, sorted, disjoint
from the other clients' and together covering all samples. Randomised ones draw from
``numpy.random.default_rng(SeedSequence((seed, <partitioner id>)))``, so a seed fixes the split on any machine
and the partitioners do not share a stream (spec §10 item 11: compute the partition once, from a seed).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import numpy as np

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError

__all__ = [
    "PartitionKind",
    "PARTITION_KINDS",
    "iid",
    "dirichlet",
    "shards",
    "natural",
    "partition",
    "label_counts",
]

logger = logging.getLogger(__name__)


class PartitionKind(StrEnum):
    """How :func:`partition` splits the training set."""

    IID = "iid"
    DIRICHLET = "dirichlet"
    SHARDS = "shards"
    NATURAL = "natural"


PARTITION_KINDS: tuple[str, ...] = tuple(kind.value for kind in PartitionKind)

# Second SeedSequence word per partitioner, so that e.g. iid and shards with one seed use unrelated streams.
_STREAM = {PartitionKind.IID: 1, PartitionKind.DIRICHLET: 2, PartitionKind.SHARDS: 3}


def iid(n: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Split ``n`` samples IID: a random permutation cut into ``num_clients`` near-equal parts.

    This is the CIFAR-10 / ImageNet-100 split (spec §7); the first ``n % num_clients`` clients get one more sample.

    Parameters
    ----------
    n : int
        Number of training samples, >= ``num_clients``.
    num_clients : int
        Number of clients, >= 1.
    seed : int
        Non-negative seed.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays of sizes ``n // num_clients`` or one more.

    Raises
    ------
    ConfigError
        If ``num_clients`` < 1, ``n`` < ``num_clients`` or ``seed`` < 0.

    Examples
    --------
    >>> [len(part) for part in iid(10, 3, seed=0)]
    [4, 3, 3]
    """
    _check_int("n", n, 0)
    _check_num_clients(num_clients, n)
    rng = _rng(seed, PartitionKind.IID)
    sizes = np.full(num_clients, n // num_clients, dtype=np.int64)
    sizes[: n % num_clients] += 1
    owner = np.empty(n, dtype=np.int64)
    owner[rng.permutation(n)] = np.repeat(np.arange(num_clients), sizes)
    return _split_by_owner(owner, num_clients)


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int,
    *,
    min_size: int = 10,
    max_attempts: int = 100,
) -> list[np.ndarray]:
    """Split with label skew: each class is divided among clients in proportions drawn from Dir(alpha).

    For each class ``c``, ``p_c ~ Dir(alpha * 1_N)`` and the class's samples go to clients in counts
    ``Multinomial(n_c, p_c)``, at random positions. Small ``alpha`` (0.1) gives each client few classes; large
    ``alpha`` (100) approaches IID. The whole draw is repeated, from the same generator, until every client has
    at least ``min_size`` samples (Hsu et al. 2019; Wang et al. 2020), at most ``max_attempts`` times.

    Parameters
    ----------
    labels : numpy.ndarray
        Training labels, 1-D non-negative ints, shape ``(n,)``.
    num_clients : int
        Number of clients, >= 1.
    alpha : float
        Dirichlet concentration, > 0 and finite.
    seed : int
        Non-negative seed.
    min_size : int
        Fewest samples any client may get, >= 0, with ``min_size * num_clients <= n`` (default: 10).
    max_attempts : int
        Draws tried before giving up, >= 1 (default: 100).

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays.

    Raises
    ------
    ConfigError
        If an argument is out of range, or no draw within ``max_attempts`` gives every client ``min_size``.

    Examples
    --------
    >>> parts = dirichlet(np.repeat(np.arange(4), 25), num_clients=4, alpha=0.5, seed=0, min_size=5)
    >>> sum(len(p) for p in parts), min(len(p) for p in parts) >= 5
    (100, True)
    """
    labels = _check_labels(labels)
    n = labels.size
    _check_num_clients(num_clients, n)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0.0 < alpha < math.inf:
        raise ConfigError(f"alpha must be a finite number > 0, got {alpha!r}")
    _check_int("min_size", min_size, 0)
    _check_int("max_attempts", max_attempts, 1)
    if min_size * num_clients > n:
        raise ConfigError(
            f"dirichlet cannot give {num_clients} clients min_size={min_size} samples each from {n} samples; "
            f"lower min_size or num_clients"
        )
    rng = _rng(seed, PartitionKind.DIRICHLET)
    concentration = np.full(num_clients, float(alpha))
    by_class = _indices_by_class(labels)
    owner = np.empty(n, dtype=np.int64)
    for attempt in range(1, max_attempts + 1):
        for members in by_class:  # one multinomial per class, so the loop is over classes, not samples
            counts = rng.multinomial(members.size, rng.dirichlet(concentration))
            owner[rng.permutation(members)] = np.repeat(np.arange(num_clients), counts)
        sizes = np.bincount(owner, minlength=num_clients)
        if sizes.min() >= min_size:
            logger.debug("dirichlet(alpha=%s): every client has >= %d samples after %d draws", alpha, min_size, attempt)
            return _split_by_owner(owner, num_clients)
    raise ConfigError(
        f"dirichlet(alpha={alpha}) gave some client fewer than min_size={min_size} samples in all {max_attempts} "
        f"draws (last smallest: {int(sizes.min())}); raise alpha or max_attempts, or lower min_size or num_clients"
    )


def shards(labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int) -> list[np.ndarray]:
    """Split pathologically non-IID (McMahan et al. 2017): sort by label, cut into shards, deal shards at random.

    The samples, sorted by label (stable), are cut into ``num_clients * shards_per_client`` near-equal contiguous
    shards, and each client gets ``shards_per_client`` of them at random. A client thus sees at most
    ``shards_per_client`` classes when every class size is a multiple of the shard size (e.g. 60,000 balanced
    samples, 100 clients x 2 shards of 300); otherwise shards straddle class boundaries and bring more classes.

    Parameters
    ----------
    labels : numpy.ndarray
        Training labels, 1-D non-negative ints, shape ``(n,)``.
    num_clients : int
        Number of clients, >= 1.
    shards_per_client : int
        Shards per client, >= 1, with ``num_clients * shards_per_client <= n``.
    seed : int
        Non-negative seed.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> labels = np.repeat(np.arange(4), 5)
    >>> [np.unique(labels[p]).size for p in shards(labels, 4, 1, seed=0)]
    [1, 1, 1, 1]
    """
    labels = _check_labels(labels)
    n = labels.size
    _check_num_clients(num_clients, n)
    _check_int("shards_per_client", shards_per_client, 1)
    num_shards = num_clients * shards_per_client
    if num_shards > n:
        raise ConfigError(
            f"shards needs at least num_clients * shards_per_client = {num_shards} samples, got {n}; "
            f"lower num_clients or shards_per_client"
        )
    rng = _rng(seed, PartitionKind.SHARDS)
    by_label = np.argsort(labels, kind="stable")
    shard_sizes = np.full(num_shards, n // num_shards, dtype=np.int64)
    shard_sizes[: n % num_shards] += 1
    shard_of_position = np.repeat(np.arange(num_shards), shard_sizes)  # (n,) shard of by_label[i]
    client_of_shard = np.empty(num_shards, dtype=np.int64)
    client_of_shard[rng.permutation(num_shards)] = np.arange(num_shards) // shards_per_client
    owner = np.empty(n, dtype=np.int64)
    owner[by_label] = client_of_shard[shard_of_position]
    return _split_by_owner(owner, num_clients)


def natural(groups: np.ndarray, num_clients: int | None = None) -> list[np.ndarray]:
    """Split by existing groups (LEAF writers/users): each client gets a contiguous block of sorted groups.

    With ``G`` distinct groups sorted by value, client ``k < N - 1`` gets groups ``[k * G//N, (k+1) * G//N)`` and
    the last client gets the rest, as the official code does (spec §3.10: FEMNIST's 193 writers in 10 clients
    are blocks of 19, the last 22). ``num_clients=None`` makes one client per group. No randomness.

    Parameters
    ----------
    groups : numpy.ndarray
        Group id of every training sample, 1-D, shape ``(n,)`` (e.g. ``ArrayDataset.train_groups``).
    num_clients : int or None
        Number of clients, in [1, G], or None for ``G`` clients (default: None).

    Returns
    -------
    list of numpy.ndarray
        Sorted ``int64`` index arrays, one per client.

    Raises
    ------
    ConfigError
        If ``groups`` is not 1-D or empty, or ``num_clients`` is outside [1, G].

    Examples
    --------
    >>> [p.tolist() for p in natural(np.array([0, 0, 1, 2, 2, 3, 4]), num_clients=2)]
    [[0, 1, 2], [3, 4, 5, 6]]
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ConfigError(f"groups must be a non-empty 1-D array, got shape {groups.shape}")
    distinct, group_of_sample = np.unique(groups, return_inverse=True)
    num_groups = distinct.size
    if num_clients is None:
        client_of_group = np.arange(num_groups)
        num_clients = num_groups
    else:
        _check_int("num_clients", num_clients, 1)
        if num_clients > num_groups:
            raise ConfigError(f"natural partition needs num_clients <= {num_groups} groups, got {num_clients}")
        client_of_group = np.minimum(np.arange(num_groups) // (num_groups // num_clients), num_clients - 1)
    return _split_by_owner(client_of_group[group_of_sample.reshape(-1)], num_clients)


def partition(
    kind: PartitionKind | str, dataset: ArrayDataset, num_clients: int | None, seed: int, **params: Any
) -> list[np.ndarray]:
    """Split ``dataset``'s training set with the partitioner named by ``kind``.

    Parameters
    ----------
    kind : PartitionKind or str
        One of :data:`PARTITION_KINDS`.
    dataset : ArrayDataset
        Its ``y_train`` (``dirichlet``, ``shards``) or ``train_groups`` (``natural``) are used.
    num_clients : int or None
        Number of clients; None only for ``natural`` (one client per group).
    seed : int
        Non-negative seed (ignored by ``natural``).
    **params
        The partitioner's own options: ``alpha``, ``min_size``, ``max_attempts`` for ``dirichlet``;
        ``shards_per_client`` (default: 2) for ``shards``; none for ``iid`` and ``natural``.

    Returns
    -------
    list of numpy.ndarray
        Sorted ``int64`` index arrays, one per client.

    Raises
    ------
    ConfigError
        If ``kind`` or a parameter name is unknown, a required parameter is missing, ``natural`` is asked of a
        data set without ``train_groups``, or the partitioner rejects a value.

    Examples
    --------
    >>> from prunefl.data.synthetic import make_synthetic
    >>> parts = partition("iid", make_synthetic(n_train=20, n_test=4), num_clients=4, seed=0)
    >>> [len(p) for p in parts]
    [5, 5, 5, 5]
    """
    try:
        member = PartitionKind(kind)
    except ValueError:
        raise ConfigError(f"unknown partition kind {kind!r}; expected one of {list(PARTITION_KINDS)}") from None
    adapter = _ADAPTERS[member]
    _check_params(member, adapter, params)
    if num_clients is None and member is not PartitionKind.NATURAL:
        raise ConfigError(f"partition {member.value!r} needs num_clients, got None (only 'natural' accepts None)")
    parts = adapter(dataset, num_clients, seed, **params)
    logger.debug(
        "partition %s of %s into %d clients: sizes min %d, max %d",
        member.value,
        dataset.name,
        len(parts),
        min(map(len, parts)),
        max(map(len, parts)),
    )
    return parts


def label_counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Count each client's samples per class.

    Parameters
    ----------
    labels : numpy.ndarray
        Labels in ``[0, num_classes)``, shape ``(n,)``.
    parts : list of numpy.ndarray
        Index arrays, one per client, as returned by the partitioners.
    num_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray
        ``int64`` counts, shape ``(len(parts), num_classes)``.

    Examples
    --------
    >>> label_counts(np.array([0, 1, 1, 2]), [np.array([0, 1]), np.array([2, 3])], 3).tolist()
    [[1, 1, 0], [0, 1, 1]]
    """
    labels = np.asarray(labels)
    sizes = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    client = np.repeat(np.arange(len(parts)), sizes)
    flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    counts = np.bincount(client * num_classes + labels[flat], minlength=len(parts) * num_classes)
    return counts.reshape(len(parts), num_classes)


# --- partition() adapters: (dataset, num_clients, seed, **params) -> parts ---------------------------------------


def _partition_iid(dataset: ArrayDataset, num_clients: int, seed: int) -> list[np.ndarray]:
    return iid(dataset.n_train, num_clients, seed)


def _partition_dirichlet(
    dataset: ArrayDataset, num_clients: int, seed: int, *, alpha: float, min_size: int = 10, max_attempts: int = 100
) -> list[np.ndarray]:
    return dirichlet(dataset.y_train.numpy(), num_clients, alpha, seed, min_size=min_size, max_attempts=max_attempts)


def _partition_shards(
    dataset: ArrayDataset, num_clients: int, seed: int, *, shards_per_client: int = 2
) -> list[np.ndarray]:
    return shards(dataset.y_train.numpy(), num_clients, shards_per_client, seed)


def _partition_natural(dataset: ArrayDataset, num_clients: int | None, seed: int) -> list[np.ndarray]:
    if dataset.train_groups is None:
        raise ConfigError(
            f"partition 'natural' needs a data set with train_groups (femnist, celeba); {dataset.name!r} has none"
        )
    return natural(dataset.train_groups, num_clients)


_ADAPTERS: dict[PartitionKind, Callable[..., list[np.ndarray]]] = {
    PartitionKind.IID: _partition_iid,
    PartitionKind.DIRICHLET: _partition_dirichlet,
    PartitionKind.SHARDS: _partition_shards,
    PartitionKind.NATURAL: _partition_natural,
}


# --- private helpers and validators ------------------------------------------------------------------------------


def _rng(seed: int, kind: PartitionKind) -> np.random.Generator:
    """Generator for ``kind`` derived from ``seed``; raises ConfigError for a negative or non-int seed."""
    _check_int("seed", seed, 0)
    return np.random.default_rng(np.random.SeedSequence((int(seed), _STREAM[kind])))


def _split_by_owner(owner: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Turn ``owner[i]`` (client of sample ``i``) into per-client sorted index arrays."""
    # A stable sort of the owners keeps the indices ascending within each client.
    order = np.argsort(owner, kind="stable").astype(np.int64, copy=False)
    sizes = np.bincount(owner, minlength=num_clients)
    return np.split(order, np.cumsum(sizes)[:-1])


def _indices_by_class(labels: np.ndarray) -> list[np.ndarray]:
    """Sample indices of each class present, in class order."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    return [part for part in np.split(order, np.cumsum(counts)[:-1]) if part.size]


def _check_params(kind: PartitionKind, adapter: Callable[..., Any], params: dict[str, Any]) -> None:
    """Raise ConfigError for parameters ``adapter`` does not take, or required ones missing."""
    options = {
        name: p for name, p in inspect.signature(adapter).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(params) - set(options))
    if unknown:
        raise ConfigError(
            f"partition {kind.value!r} got unknown parameters {unknown}; it accepts {sorted(options) or 'none'}"
        )
    missing = sorted(name for name, p in options.items() if p.default is inspect.Parameter.empty and name not in params)
    if missing:
        raise ConfigError(f"partition {kind.value!r} needs parameters {missing}")


def _check_int(key: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{key} must be an int >= {low}, got {value!r}")


def _check_num_clients(num_clients: object, n: int) -> None:
    _check_int("num_clients", num_clients, 1)
    if num_clients > n:  # type: ignore[operator]
        raise ConfigError(f"more clients than samples: num_clients={num_clients} but only {n} training samples")


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a 1-D int64 array, or raise ConfigError."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ConfigError(f"labels must be a 1-D integer array, got {labels.dtype.name} of shape {labels.shape}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise ConfigError(f"labels must be non-negative, got minimum {labels.min()}")
    return labels
