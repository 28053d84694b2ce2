"""Tests for prunefl.data.partition: invariants (hypothesis), determinism, skew, dispatch and validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prunefl.data.partition import (
    PARTITION_KINDS,
    PartitionKind,
    dirichlet,
    iid,
    label_counts,
    natural,
    partition,
    shards,
)
from prunefl.data.synthetic import make_synthetic
from prunefl.errors import ConfigError

_SETTINGS = settings(max_examples=40, deadline=None)


def _assert_valid_partition(parts: list[np.ndarray], n: int, num_clients: int) -> None:
    """Every client's indices are sorted int64; together they are exactly 0..n-1, each once."""
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == np.int64
        assert (np.diff(part) > 0).all()
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


# --- invariants --------------------------------------------------------------------------------------------------


@_SETTINGS
@given(n=st.integers(1, 500), num_clients=st.integers(1, 50), seed=st.integers(0, 2**32))
def test_iid_is_a_near_equal_partition(n: int, num_clients: int, seed: int) -> None:
    # Prepare
    num_clients = min(num_clients, n)

    # Execute
    parts = iid(n, num_clients, seed)

    # Assert
    _assert_valid_partition(parts, n, num_clients)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@_SETTINGS
@given(
    labels=st.lists(st.integers(0, 9), min_size=20, max_size=300).map(np.array),
    num_clients=st.integers(1, 10),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 1000),
)
def test_dirichlet_is_a_partition_respecting_min_size(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int
) -> None:
    # Execute: at small alpha even min_size=1 can fail 100 draws; that must be the documented ConfigError
    try:
        parts = dirichlet(labels, num_clients, alpha, seed, min_size=1)
    except ConfigError as exc:
        assert "in all 100 draws" in str(exc)
        return

    # Assert
    _assert_valid_partition(parts, labels.size, num_clients)
    assert min(len(p) for p in parts) >= 1


@_SETTINGS
@given(
    labels=st.lists(st.integers(0, 9), min_size=1, max_size=300).map(np.array),
    num_clients=st.integers(1, 20),
    shards_per_client=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_shards_is_a_partition(labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int) -> None:
    # Prepare
    num_clients = max(1, min(num_clients, labels.size // shards_per_client))
    if num_clients * shards_per_client > labels.size:
        return

    # Execute
    parts = shards(labels, num_clients, shards_per_client, seed)

    # Assert
    _assert_valid_partition(parts, labels.size, num_clients)
    assert max(map(len, parts)) - min(map(len, parts)) <= shards_per_client  # shards differ by at most one


@st.composite
def _shard_aligned_labels(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    """Labels whose class sizes are multiples of the shard size, plus (num_clients, shards_per_client)."""
    shard_size = draw(st.integers(1, 6))
    shards_per_class = np.array(draw(st.lists(st.integers(1, 5), min_size=1, max_size=10)))
    num_shards = int(shards_per_class.sum())
    shards_per_client = draw(st.sampled_from([d for d in range(1, num_shards + 1) if num_shards % d == 0]))
    labels = np.repeat(np.arange(shards_per_class.size), shards_per_class * shard_size)
    return labels, num_shards // shards_per_client, shards_per_client


@_SETTINGS
@given(case=_shard_aligned_labels(), seed=st.integers(0, 1000))
def test_shards_aligned_classes_give_at_most_k_classes_per_client(case: tuple[np.ndarray, int, int], seed: int) -> None:
    # Prepare
    labels, num_clients, shards_per_client = case

    # Execute
    parts = shards(labels, num_clients, shards_per_client, seed)

    # Assert: every shard lies inside one class, so k shards bring at most k classes
    _assert_valid_partition(parts, labels.size, num_clients)
    assert all(np.unique(labels[p]).size <= shards_per_client for p in parts)


@_SETTINGS
@given(
    groups=st.lists(st.integers(0, 30), min_size=1, max_size=200).map(np.array),
    num_clients=st.integers(1, 31),
)
def test_natural_keeps_each_group_on_one_client_in_blocks(groups: np.ndarray, num_clients: int) -> None:
    # Prepare
    distinct = np.unique(groups)
    num_clients = min(num_clients, distinct.size)

    # Execute
    parts = natural(groups, num_clients)

    # Assert: partition; group sets are disjoint, contiguous in sorted order, floor(G/N) each but the last
    _assert_valid_partition(parts, groups.size, num_clients)
    group_sets = [np.unique(groups[p]) for p in parts]
    assert np.array_equal(np.concatenate(group_sets), distinct)
    per_client = distinct.size // num_clients
    assert [len(g) for g in group_sets[:-1]] == [per_client] * (num_clients - 1)


# --- worked examples and properties ------------------------------------------------------------------------------


def test_natural_femnist_writers_make_blocks_of_19_and_a_last_of_22() -> None:
    # Prepare: 193 writers with 2 samples each (spec §3.10)
    groups = np.repeat(np.arange(193), 2)

    # Execute
    parts = natural(groups, num_clients=10)

    # Assert
    assert [len(p) // 2 for p in parts] == [19] * 9 + [22]


def test_natural_none_gives_one_client_per_group_in_sorted_order() -> None:
    # Prepare: group ids need not be contiguous or sorted
    groups = np.array([7, 3, 7, 11, 3])

    # Execute
    parts = natural(groups)

    # Assert
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2], [3]]


def test_shards_balanced_labels_give_at_most_k_classes_per_client() -> None:
    # Prepare: 10 classes x 60 samples, 20 clients x 2 shards of 15: every shard is inside one class
    labels = np.repeat(np.arange(10), 60)

    # Execute
    parts = shards(labels, 20, 2, seed=0)

    # Assert
    assert all(np.unique(labels[p]).size <= 2 for p in parts)
    assert [len(p) for p in parts] == [30] * 20


@pytest.mark.parametrize(
    "make_parts",
    [
        lambda seed: iid(200, 5, seed),
        lambda seed: dirichlet(np.arange(200) % 10, 5, 0.5, seed),
        lambda seed: shards(np.arange(200) % 10, 5, 2, seed),
    ],
    ids=["iid", "dirichlet", "shards"],
)
def test_partition_is_deterministic_per_seed_and_differs_across_seeds(make_parts: Any) -> None:
    # Execute
    first, again, other = make_parts(0), make_parts(0), make_parts(1)

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def _mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> float:
    """Mean over clients of the entropy (nats) of the client's label distribution."""
    counts = label_counts(labels, parts, num_classes).astype(float)
    p = counts / counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    return float(entropy.mean())


def test_dirichlet_small_alpha_is_much_more_skewed_than_large_alpha() -> None:
    # Prepare: 10 balanced classes; an IID client has entropy log(10) = 2.30 nats
    labels = np.repeat(np.arange(10), 200)

    # Execute
    skewed = _mean_label_entropy(labels, dirichlet(labels, 10, 0.1, seed=0), 10)
    near_iid = _mean_label_entropy(labels, dirichlet(labels, 10, 100.0, seed=0), 10)

    # Assert: alpha=100 is within 0.05 nats of uniform; alpha=0.1 leaves each client ~2-3 dominant classes
    assert near_iid > np.log(10) - 0.05
    assert skewed < 1.2 < near_iid


def test_dirichlet_min_size_is_met_after_redraws() -> None:
    # Prepare: with alpha 0.1 a single draw often starves some of 20 clients
    labels = np.repeat(np.arange(10), 100)

    # Execute
    parts = dirichlet(labels, 20, 0.1, seed=0, min_size=10)

    # Assert
    assert min(len(p) for p in parts) >= 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_size": 101}, "cannot give"),  # 10 clients x 101 > 1000 samples: impossible up front
        ({"alpha": 0.001, "min_size": 100, "max_attempts": 3}, "in all 3 draws"),  # possible but never drawn
    ],
)
def test_dirichlet_unreachable_min_size_raises_config_error(kwargs: dict[str, Any], message: str) -> None:
    # Prepare
    labels = np.repeat(np.arange(10), 100)
    args = {"alpha": 1.0} | kwargs

    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        dirichlet(labels, 10, seed=0, **args)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: iid(3, 4, 0), "more clients than samples"),  # 4 clients, 3 samples
        (lambda: iid(10, 0, 0), "num_clients"),  # no clients
        (lambda: iid(10, 2, -1), "seed"),  # negative seed
        (lambda: iid(10, 2.0, 0), "num_clients"),  # float client count
        (lambda: dirichlet(np.zeros(10, int), 2, 0.0, 0, min_size=0), "alpha"),  # alpha must be > 0
        (lambda: dirichlet(np.zeros(10, int), 2, float("nan"), 0, min_size=0), "alpha"),  # nan alpha
        (lambda: dirichlet(np.zeros(10, int), 2, float("inf"), 0, min_size=0), "alpha"),  # infinite alpha
        (lambda: dirichlet(np.zeros(10), 2, 1.0, 0, min_size=0), "integer"),  # float labels
        (lambda: dirichlet(-np.ones(10, int), 2, 1.0, 0, min_size=0), "non-negative"),  # negative labels
        (lambda: dirichlet(np.zeros((5, 2), int), 2, 1.0, 0, min_size=0), "1-D"),  # 2-D labels
        (lambda: dirichlet(np.zeros(10, int), 2, 1.0, 0, min_size=0, max_attempts=0), "max_attempts"),
        (lambda: shards(np.zeros(10, int), 4, 3, 0), "at least num_clients"),  # 12 shards, 10 samples
        (lambda: shards(np.zeros(10, int), 2, 0, 0), "shards_per_client"),  # no shards
        (lambda: natural(np.array([0, 1, 1]), 3), "num_clients <= 2"),  # more clients than groups
        (lambda: natural(np.array([], int), None), "non-empty"),  # no samples
    ],
)
def test_partitioners_bad_arguments_raise_config_error(call: Any, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        call()


def test_label_counts_counts_per_client_and_class() -> None:
    # Prepare
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 3]), np.array([1, 2, 4, 5])]

    # Execute
    counts = label_counts(labels, parts, num_classes=3)

    # Assert
    assert counts.tolist() == [[1, 0, 1], [0, 2, 2]]


# --- partition() dispatch ----------------------------------------------------------------------------------------


def test_partition_dispatches_by_name_and_enum_alike() -> None:
    # Prepare
    ds = make_synthetic(n_train=100, n_test=4, num_classes=4, seed=0)

    # Execute
    by_name = partition("dirichlet", ds, 4, seed=3, alpha=0.5, min_size=5)
    by_enum = partition(PartitionKind.DIRICHLET, ds, 4, seed=3, alpha=0.5, min_size=5)
    direct = dirichlet(ds.y_train.numpy(), 4, 0.5, 3, min_size=5)

    # Assert
    for a, b, c in zip(by_name, by_enum, direct, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert PARTITION_KINDS == ("iid", "dirichlet", "shards", "natural")


def test_partition_shards_defaults_to_two_shards_per_client() -> None:
    # Prepare
    ds = make_synthetic(n_train=40, n_test=4, num_classes=4, seed=0)

    # Execute
    parts = partition("shards", ds, 4, seed=0)

    # Assert: 8 shards of 5 over 4 classes of 10 -> each client has at most 2 classes
    direct = shards(ds.y_train.numpy(), 4, 2, 0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, direct, strict=True))


def test_partition_natural_uses_train_groups_and_accepts_no_client_count() -> None:
    # Prepare
    ds = make_synthetic(n_train=12, n_test=4, num_groups=4)

    # Execute
    parts = partition("natural", ds, None, seed=0)

    # Assert
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]


@pytest.mark.parametrize(
    ("kind", "num_clients", "params", "message"),
    [
        ("random", 2, {}, "unknown partition kind 'random'"),  # not a kind
        ("iid", 2, {"alpha": 0.5}, "unknown parameters \\['alpha'\\]"),  # iid takes no options
        ("dirichlet", 2, {}, "needs parameters \\['alpha'\\]"),  # alpha has no default
        ("shards", 2, {"shards": 2}, "accepts \\['shards_per_client'\\]"),  # misspelt option
        ("iid", None, {}, "needs num_clients"),  # only natural derives the count
        ("natural", 2, {}, "train_groups"),  # synthetic without num_groups has no writers
    ],
)
def test_partition_bad_request_raises_config_error(
    kind: str, num_clients: int | None, params: dict[str, Any], message: str
) -> None:
    # Prepare
    ds = make_synthetic(n_train=20, n_test=4)

    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        partition(kind, ds, num_clients, seed=0, **params)
