"""Reply checks one by one, the reply-size bound, and the robust aggregation rules, on hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunefl.errors import (
    ConfigError,
    DecodeError,
    DtypeMismatchError,
    EntriesMismatchError,
    MaskMismatchError,
    ScalarRangeError,
)
from prunefl.fl.aggregate import masked_aggregate, robust_aggregate
from prunefl.fl.links import ClientLink, ServerLink, TrainReply
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.fl.server import ServerSettings
from prunefl.fl.validate import (
    REASONS,
    check_bn_stats,
    check_envelope,
    check_extras,
    check_finite,
    check_importance,
    check_masks,
    check_sample_count,
    check_update_norm,
    decode_rejection,
    expect_replies,
    max_reply_bytes,
    validate_reply,
)


def _ins(upload: bool = False) -> TrainIns:
    """w (2×2, one pruned) = [[3, 9], [0, 4]] (9 pruned: stale), bias b = [0, 0], a BatchNorm's statistics; K·B = 6."""
    state = {
        "w": np.array([[3.0, 9.0], [0.0, 4.0]], np.float32),
        "b": np.zeros(2, np.float32),
        "bn.running_var": np.ones(2, np.float32),
        "bn.num_batches_tracked": np.array(4, np.int64),
    }
    masks = {"w": np.array([[True, False], [True, True]])}
    return TrainIns(5, state, masks, lr=0.1, local_steps=2, batch_size=3, importance_mode="round_sum",
                    upload_importance=upload)


def _res(**changes: object) -> TrainRes:
    """An honest reply to :func:`_ins` (weights moved a little), with ``changes`` applied."""
    state = {
        "w": np.array([[2.5, 0.0], [0.5, 4.5]], np.float32),
        "b": np.array([0.1, -0.1], np.float32),
        "bn.running_var": np.array([0.9, 1.2], np.float32),
        "bn.num_batches_tracked": np.array(6, np.int64),
    }
    res = TrainRes(client_id=1, num_examples=6, state=state, train_loss=0.7, compute_wall_s=0.01)
    for name, value in changes.items():
        setattr(res, name, value)
    return res


def test_every_check_accepts_an_honest_reply() -> None:
    # Prepare
    expected = expect_replies(_ins(upload=True), own_masks=False, max_update_norm_ratio=100.0)
    honest = _res(importance={"w": np.full((2, 2), 0.25, np.float32)})
    # Execute
    rejection = validate_reply(1, honest, expected, partition_size=40)
    # Assert
    assert rejection is None


@pytest.mark.parametrize(
    ("n", "partition_size", "ok"),
    [
        (6, None, True),  # K·B = 2·3: what every honest client reports
        (1, None, True),  # fewer is no threat: it only lowers the client's weight
        (7, None, False),  # more than it can have processed: it would outweigh the others
        (0, None, False),  # nothing processed: nothing to average (and a division by zero for a lone reply)
        (-6, None, False),
        (6, 2, True),  # a partition of 2 is cycled: 6 samples processed from 2 is honest
        (6, 0, False),  # a participant known to hold no sample trained on nothing
    ],
)
def test_sample_count_bounds(n: int, partition_size: int | None, ok: bool) -> None:
    # Prepare
    expected = expect_replies(_ins(), own_masks=False, max_update_norm_ratio=100.0)
    # Execute
    found = check_sample_count(_res(num_examples=n), expected, partition_size)
    # Assert
    assert (found is None) == ok


def test_update_norm_bound_is_relative_to_what_the_client_started_from() -> None:
    # Prepare: the client starts from w ⊙ m = [[3, 0], [0, 4]], ‖·‖ = 5 (the stale 9 is not what it trained),
    # so with ratio 2 the bound is 2 · (5 + 1) = 12; for the zero bias it is 2 · (0 + 1) = 2
    expected = expect_replies(_ins(), own_masks=False, max_update_norm_ratio=2.0)
    within = _res(state={**_res().state, "w": np.array([[3.0, 0.0], [12.0, 4.0]], np.float32)})  # moved by 12
    beyond = _res(state={**_res().state, "w": np.array([[3.0, 0.0], [12.5, 4.0]], np.float32)})  # by 12.5
    bias_beyond = _res(state={**_res().state, "b": np.array([2.0, 0.5], np.float32)})  # by √4.25 ≈ 2.06
    disabled = expect_replies(_ins(), own_masks=False, max_update_norm_ratio=0.0)
    # Execute / Assert
    assert check_update_norm(within, expected) is None
    assert check_update_norm(beyond, expected) == "'w' moved by 12.5 (L2), above 2 · (5 + 1) = 12"
    assert check_update_norm(bias_beyond, expected) is not None
    assert check_update_norm(_res(state={**_res().state, "w": np.full((2, 2), 1e30, np.float32)}), disabled) is None


def test_bn_statistics_out_of_range() -> None:
    # Prepare
    state = _res().state
    # Execute / Assert: a variance is ≥ 0 and finite, a batch counter ≥ 0
    assert check_bn_stats(_res()) is None
    assert check_bn_stats(_res(state={**state, "bn.running_var": np.array([0.0, 1.0], np.float32)})) is None
    assert check_bn_stats(_res(state={**state, "bn.running_var": np.array([-1e-3, 1.0], np.float32)})) is not None
    assert check_bn_stats(_res(state={**state, "bn.running_var": np.array([np.inf, 1.0], np.float32)})) is not None
    assert check_bn_stats(_res(state={**state, "bn.num_batches_tracked": np.array(-1, np.int64)})) is not None


def test_nan_and_inf_are_told_apart() -> None:
    # Prepare
    state = _res().state
    # Execute / Assert
    assert check_finite(_res(state={**state, "b": np.array([np.nan, 0], np.float32)}))[0] == "nan"  # type: ignore[index]
    assert check_finite(_res(state={**state, "b": np.array([-np.inf, 0], np.float32)}))[0] == "inf"  # type: ignore[index]
    assert check_finite(_res(train_loss=float("nan"))) == ("nan", "train loss is NaN")


@pytest.mark.parametrize(
    ("upload", "importance", "ok"),
    [
        (True, {"w": np.array([[0.0, 2.0], [1e29, 3.0]], np.float32)}, True),  # ≥ 0 and ≤ 1e30
        (True, None, False),  # asked for and missing
        (False, {"w": np.ones((2, 2), np.float32)}, False),  # not asked for
        (True, {"w": np.array([[0.0, -1.0], [0.0, 0.0]], np.float32)}, False),  # a sum of squares is ≥ 0
        (True, {"w": np.array([[0.0, np.nan], [0.0, 0.0]], np.float32)}, False),
        (True, {"w": np.array([[0.0, np.inf], [0.0, 0.0]], np.float32)}, False),
        (True, {"w": np.array([[0.0, 2e30], [0.0, 0.0]], np.float32)}, False),  # absurd: above 1e30
    ],
)
def test_importance_checks(upload: bool, importance: dict | None, ok: bool) -> None:
    # Prepare
    expected = expect_replies(_ins(upload=upload), own_masks=False, max_update_norm_ratio=100.0)
    # Execute
    found = check_importance(_res(importance=importance), expected)
    # Assert
    assert (found is None) == ok


def test_own_masks_keep_names_shapes_and_counts() -> None:
    # Prepare: 3 of 4 kept were sent
    own = expect_replies(_ins(), own_masks=True, max_update_norm_ratio=100.0)
    strict = expect_replies(_ins(), own_masks=False, max_update_norm_ratio=100.0)
    swapped = {"w": np.array([[True, True], [False, True]])}  # one dropped, one grown: 3 kept
    grown = {"w": np.array([[True, True], [True, True]])}  # 4 kept
    # Execute / Assert
    assert check_masks(_res(masks=swapped), own) is None
    assert check_masks(_res(masks=grown), own) == "own masks keep other counts than those sent (found, sent): {'w': (4, 3)}"
    assert check_masks(_res(masks={"w": np.ones(4, bool)}), own) is not None  # another shape
    assert check_masks(_res(masks={"v": swapped["w"]}), own) is not None  # another name
    assert check_masks(_res(masks=swapped), strict) == "masks of ['w'] differ from those sent"
    assert check_masks(_res(masks=dict(_ins().masks)), strict) is None  # the masks sent, sent back


def test_envelope_round_and_size() -> None:
    # Prepare
    ins = _ins()
    expected = expect_replies(ins, own_masks=False, max_update_norm_ratio=100.0)
    limit = max_reply_bytes(ins)
    # Execute / Assert: the bound, worked out: 1024 + entries (512 + name) + n·max(itemsize, 4) + 2·(n//8 + 1) + 4n
    assert limit == 1024 + (512 + 1 + 16 + 2 + 16) + (512 + 1 + 8 + 2 + 8) + (512 + 14 + 8 + 2 + 8) + (512 + 22 + 8 + 2 + 4)
    assert check_envelope(0, TrainReply(bytes(limit), round=5), expected) is None
    assert check_envelope(0, TrainReply(bytes(limit + 1), round=5), expected).reason == "oversize"  # type: ignore[union-attr]
    assert check_envelope(0, TrainReply(b"", round=4), expected).reason == "other-round"  # type: ignore[union-attr]
    assert check_envelope(0, TrainReply(b""), expected) is None  # a transport that does not say: not checked


def test_honest_codec_replies_fit_the_size_bound_even_with_masks_and_importance() -> None:
    # Prepare: a reply that carries its own masks (bitmask) and dense float32 importance, uncompressed
    ins = _ins(upload=True)
    client = ClientLink()
    server = ServerLink(own_masks=True)
    client.decode_ins(server.encode_ins(ins, [1], mask_version=0)[1])
    res = _res(importance={k: np.ones(np.shape(v), np.float32) for k, v in ins.state.items() if k != "bn.num_batches_tracked"},
               masks={"w": np.array([[True, True], [False, True]])})
    res.state["w"] = res.state["w"] * res.masks["w"]  # type: ignore[index]
    # Execute
    data = client.encode_res(res)
    # Assert
    assert len(data) <= max_reply_bytes(ins)


@pytest.mark.parametrize(
    ("extras", "ok"),
    [
        (None, True),
        ({"x": np.zeros((2, 3), np.float32), "y": np.array([1, 2])}, True),  # samples and labels, as online sends
        ({"x": np.array([0.0, np.inf], np.float32)}, False),
        ({"x": np.array(["a", "b"])}, False),  # not numeric
        ({"x": [1.0, 2.0]}, False),  # not an array
        ({"x": np.zeros(10**5, np.float64)}, True),  # 800 kB: above the 3 kB bound of the codec reply, but extras
        # may always take 64 MiB (samples need not scale with the model)
        ({"x": np.zeros(2**23 + 1, np.float64)}, False),  # 64 MiB + 8 bytes
    ],
)
def test_extras_checks(extras: dict | None, ok: bool) -> None:
    # Prepare
    expected = expect_replies(_ins(), own_masks=False, max_update_norm_ratio=100.0)
    # Execute
    found = check_extras(0, TrainReply(b"", extras), expected)  # type: ignore[arg-type]
    # Assert
    assert (found is None) == ok and (found is None or found.reason == "extras")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (EntriesMismatchError("x", missing=("b",)), "missing-layer"),
        (EntriesMismatchError("x", unexpected=("c",)), "extra-layer"),
        (EntriesMismatchError("x", reshaped=("b",)), "shape"),
        (MaskMismatchError("x"), "mask"),
        (DtypeMismatchError("x"), "dtype"),
        (ScalarRangeError("x", "num_examples"), "sample-count"),
        (ScalarRangeError("x", "client_id"), "client-id"),
        (DecodeError("checksum"), "decode"),
    ],
)
def test_decode_errors_map_to_reasons(error: DecodeError, reason: str) -> None:
    # Execute
    rejection = decode_rejection(3, error)
    # Assert
    assert (rejection.participant, rejection.reason) == (3, reason) and reason in REASONS


def test_median_and_trimmed_mean_by_hand() -> None:
    # Prepare: 5 clients, one hostile (1000); entry w has one pruned coordinate (stale 7), b is unmasked
    g = {"w": torch.tensor([0.0, 7.0]), "b": torch.tensor([0.0]), "bn.num_batches_tracked": torch.tensor(3)}
    m = {"w": torch.tensor([True, False])}
    values = [1.0, 2.0, 4.0, 8.0, 1000.0]
    c = [{"w": np.array([v, 0.0], np.float32), "b": np.array([-v], np.float32),
          "bn.num_batches_tracked": np.array(9)} for v in values]
    # Execute
    median = robust_aggregate(g, m, c, "median")
    trimmed = robust_aggregate(g, m, c, "trimmed-mean", trim_fraction=0.2)  # drops 1 at each end: 2, 4, 8
    untrimmed = robust_aggregate(g, m, c, "trimmed-mean", trim_fraction=0.1)  # ⌊0.5⌋ = 0: the plain mean
    zero = robust_aggregate(g, m, c, "median", regrow_init="zero")
    mean = masked_aggregate(g, m, c, [1] * 5)
    # Assert
    assert median["w"].tolist() == [4.0, 7.0] and median["b"].tolist() == [-4.0]
    assert trimmed["w"].tolist() == [pytest.approx(14 / 3), 7.0]
    assert untrimmed["w"].tolist() == [pytest.approx(1015 / 5), 7.0] == [pytest.approx(float(mean["w"][0])), 7.0]
    assert zero["w"].tolist() == [4.0, 0.0]
    assert int(median["bn.num_batches_tracked"]) == 3  # counters are the server's own


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    # Prepare
    g = {"b": torch.zeros(2)}
    c = [{"b": np.array([v, -v], np.float32)} for v in (1.0, 5.0, 2.0, 100.0)]
    # Execute
    out = robust_aggregate(g, {}, c, "median")
    # Assert: sorted 1, 2, 5, 100 → (2 + 5) / 2
    assert out["b"].tolist() == [3.5, -3.5]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("aggregation", "mode"),
        ("trim_fraction", 0.5),
        ("trim_fraction", -0.1),
        ("min_valid_replies", 0),
        ("max_update_norm_ratio", float("inf")),
        ("max_update_norm_ratio", -1.0),
    ],
)
def test_server_settings_reject_bad_reply_policy(field: str, value: object) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=f"fl.{field}"):
        ServerSettings(2, 2, 1, 1, 0.1, **{field: value})  # type: ignore[arg-type]
