"""One test per malformed-update case: rejected with its reason, the global model bit-for-bit unchanged by it, and
the round aggregating the good replies exactly as if the bad one had never been sent (issue 10, part 3)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from prunefl.data.dataset import ArrayDataset
from prunefl.errors import TooFewRepliesError
from prunefl.fl.batches import BatchStream
from prunefl.fl.client import ClientState
from prunefl.fl.links import ClientLink, ServerLink, TrainReply
from prunefl.fl.losses import make_loss
from prunefl.fl.messages import TrainRes
from prunefl.fl.round import ClientWorkspace, RoundPlan, RoundProtocol, client_round
from prunefl.fl.server import Server, ServerSettings
from prunefl.fl.validate import max_reply_bytes
from prunefl.pruning.methods.base import AggregateView, Decision, Method
from prunefl.seeds import BATCH_STREAM, rng
from prunefl.sparse.codec import decode_train_res, encode_train_res
from prunefl.sparse.masks import attach_masks

PARTITIONS = [np.arange(0, 6), np.arange(6, 12), np.arange(12, 18)]
WEIGHT, BIAS = "1.weight", "1.bias"  # the first linear layer (prunable weight, its bias)
VAR, COUNT = "2.running_var", "2.num_batches_tracked"  # the BatchNorm's statistics


class _UploadEveryRound(Method):
    """Tracks and uploads importance every round, so that replies carry importance."""

    def track_importance(self, round: int) -> bool:
        return True

    def upload_importance(self, round: int) -> bool:
        return True


class _OwnMasks(_UploadEveryRound):
    """Clients may change their own masks (as FedDST's do)."""

    clients_change_masks = True


def _world(method: Method) -> tuple[RoundProtocol, ClientWorkspace]:
    """3 clients with 6 samples each of 1×4×4 images; Linear(16, 8) (6 of 128 weights pruned) → BatchNorm → Linear."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    attach_masks(model)
    x = torch.rand(18, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(18) % 3
    dataset = ArrayDataset("tiny", x, y, x[:3], y[:3], 3)
    masks = {k[: -len("_mask")]: v.clone() for k, v in model.state_dict().items() if k.endswith("_mask")}
    masks[WEIGHT][0, :6] = False
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("_mask")}
    settings = ServerSettings(3, 3, local_steps=2, batch_size=3, lr=0.1, importance_mode="round_sum")
    link = ServerLink(own_masks=method.clients_change_masks)
    protocol = RoundProtocol(Server(state, masks, settings), method, link, devices=[],
                             partition_sizes={i: len(p) for i, p in enumerate(PARTITIONS)})
    return protocol, ClientWorkspace(model, dataset, make_loss("cross_entropy", 3), seed=0)


def _honest_replies(method: Method) -> tuple[RoundPlan, dict[int, TrainReply]]:
    """Round 0's plan and the three clients' honest replies (bytes that any fresh world accepts)."""
    protocol, work = _world(method)
    plan = protocol.configure_train(0, [0, 1, 2])
    replies = {}
    for c in plan.participants:
        client = ClientState(c, BatchStream(PARTITIONS[c], rng(0, BATCH_STREAM, c)), torch.Generator().manual_seed(c),
                             link=ClientLink())
        replies[c] = client_round(plan.messages[c], client, work, method, PARTITIONS[c])
    return plan, replies


def _tampered(reply: TrainReply, plan: RoundPlan, change: Callable[[TrainRes], None]) -> TrainReply:
    """``reply`` decoded, changed by ``change``, and encoded again as a client would send it."""
    res = decode_train_res(reply.data, plan.ins.masks)
    change(res)
    return TrainReply(encode_train_res(res, plan.ins.masks, level=None), round=plan.round)


def _set(entry: str, index: tuple[int, ...], value: float) -> Callable[[TrainRes], None]:
    def change(res: TrainRes) -> None:
        res.state[entry][index] = value
    return change


def _importance(value: float) -> Callable[[TrainRes], None]:
    def change(res: TrainRes) -> None:
        assert res.importance is not None
        res.importance[WEIGHT][1, 3] = value
    return change


def _state_entry(entry: str, new: Callable[[np.ndarray], np.ndarray | None]) -> Callable[[TrainRes], None]:
    def change(res: TrainRes) -> None:
        value = new(res.state.get(entry, np.zeros(0, np.float32)))
        if res.importance is not None:
            res.importance.pop(entry, None)  # the codec's encoder ties importance to an entry of its shape
        if value is None:
            del res.state[entry]
        else:
            res.state[entry] = value
    return change


def _other_masks(res: TrainRes) -> None:
    moved = res.masks or {}
    mask = np.ones((8, 16), dtype=bool)  # all 128 kept: the server sent 122
    res.masks = {**moved, WEIGHT: mask}


def _field(name: str, value: int) -> Callable[[TrainRes], None]:
    def change(res: TrainRes) -> None:
        setattr(res, name, value)
    return change


def _bad_reply(case: str, plan: RoundPlan, replies: dict[int, TrainReply]) -> tuple[int, TrainReply]:
    """The bad (participant, reply) of ``case``; the good replies are those of participants 0 and 1."""
    r2 = replies[2]
    changes: dict[str, Callable[[TrainRes], None]] = {
        "shape": _state_entry(BIAS, lambda v: np.zeros(9, np.float32)),  # 9 biases, the model has 8
        "missing-layer": _state_entry(BIAS, lambda v: None),  # the first layer's bias left out
        "extra-layer": _state_entry("9.weight", lambda v: np.ones(3, np.float32)),  # an entry never sent
        "dtype": _state_entry(BIAS, lambda v: v.astype(np.float64)),  # float64 where float32 was sent
        "nan": _set(WEIGHT, (2, 7), float("nan")),  # one kept weight NaN
        "+inf": _set(WEIGHT, (2, 7), float("inf")),
        "-inf": _set(BIAS, (3,), float("-inf")),
        "mask": _other_masks,  # sends its own mask (all kept) under a method whose clients may not
        "negative-count": _field("num_examples", -6),
        "zero-count": _field("num_examples", 0),
        "dominating-count": _field("num_examples", 10**9),  # K·B = 6: would outweigh the others 10**8 to 1
        "absurd-weights": _set(WEIGHT, (2, 7), 1e20),  # finite, but the layer's norm is about 2
        "bn-negative-var": _set(VAR, (1,), -0.5),
        "bn-nan-var": _set(VAR, (1,), float("nan")),
        "bn-negative-count": _state_entry(COUNT, lambda v: np.array(-1, dtype=v.dtype)),
        "importance-negative": _importance(-1.0),
        "importance-nan": _importance(float("nan")),
        "importance-absurd": _importance(1e35),
        "client-id": _field("client_id", 0),  # participant 2 claims to be client 0
    }
    if case in changes:
        return 2, _tampered(r2, plan, changes[case])
    if case == "oversize":  # the honest bytes and more padding than any reply to these masks can hold
        return 2, TrainReply(r2.data + bytes(max_reply_bytes(plan.ins)), round=plan.round)
    if case == "extras":  # the honest bytes, and a NaN sample beside them
        return 2, TrainReply(r2.data, {"online-samples": np.array([[0.5, np.nan]], np.float32)}, round=plan.round)
    if case == "other-round":
        return 2, TrainReply(r2.data, round=plan.round + 1)
    if case == "truncated":
        return 2, TrainReply(r2.data[:-5], round=plan.round)
    if case == "duplicate":  # participant 1's reply again (a replay): its first reply counts
        return 1, replies[1]
    assert case == "not-selected"
    return 7, r2  # participant 7 was not selected this round


CASES = [  # (case, reason)
    ("shape", "shape"),
    ("missing-layer", "missing-layer"),
    ("extra-layer", "extra-layer"),
    ("dtype", "dtype"),
    ("nan", "nan"),
    ("+inf", "inf"),
    ("-inf", "inf"),
    ("mask", "mask"),
    ("negative-count", "sample-count"),
    ("zero-count", "sample-count"),
    ("dominating-count", "sample-count"),
    ("absurd-weights", "update-norm"),
    ("bn-negative-var", "bn-stats"),
    ("bn-nan-var", "bn-stats"),
    ("bn-negative-count", "bn-stats"),
    ("importance-negative", "importance"),
    ("importance-nan", "importance"),
    ("importance-absurd", "importance"),
    ("oversize", "oversize"),
    ("extras", "extras"),
    ("other-round", "other-round"),
    ("truncated", "decode"),
    ("duplicate", "duplicate"),
    ("not-selected", "not-selected"),
    ("client-id", "client-id"),
]


def _snapshot(protocol: RoundProtocol) -> dict:
    server = protocol.server
    return {
        "state": copy.deepcopy(server.state),
        "masks": copy.deepcopy(server.masks),
        "version": server.mask_version,
        "link": copy.deepcopy(protocol.link.state_dict()),
        "method": copy.deepcopy(protocol.method.state_dict()),
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("case", "reason"), CASES)
def test_a_malformed_reply_alone_changes_nothing(case: str, reason: str) -> None:
    # Prepare: only the bad reply arrives (the good ones are lost), so no valid reply remains
    plan, replies = _honest_replies(_UploadEveryRound())
    protocol, _ = _world(_UploadEveryRound())
    plan = protocol.configure_train(0, [0, 1, 2])
    bad = _bad_reply(case, plan, replies)
    arrived = [bad]
    if case == "duplicate":  # the first copy is valid: both are needed, and only one counts
        protocol.server.settings = dataclasses.replace(protocol.server.settings, min_valid_replies=2)
        arrived = [bad, bad]
    before = _snapshot(protocol)
    # Execute
    with pytest.raises(TooFewRepliesError) as caught:
        protocol.aggregate_train(plan, arrived)
    # Assert: rejected with its reason; server state, masks, mask version, link and method bit-for-bit unchanged
    assert [(r.participant, r.reason) for r in caught.value.rejections] == [(bad[0], reason)]
    after = _snapshot(protocol)
    assert _same(after["state"], before["state"]) and _same(after["masks"], before["masks"])
    assert after["version"] == before["version"] == 0
    assert after["link"] == before["link"] and after["method"] == before["method"]


@pytest.mark.parametrize(("case", "reason"), CASES)
def test_a_malformed_reply_is_dropped_and_the_good_ones_aggregate_as_without_it(case: str, reason: str) -> None:
    # Prepare: the same good replies of participants 0 and 1 reach two fresh servers; one also gets the bad one
    plan, replies = _honest_replies(_UploadEveryRound())
    good = [(0, replies[0]), (1, replies[1])]
    clean, _ = _world(_UploadEveryRound())
    attacked, _ = _world(_UploadEveryRound())
    clean_plan = clean.configure_train(0, [0, 1, 2])
    attacked_plan = attacked.configure_train(0, [0, 1, 2])
    bad = _bad_reply(case, attacked_plan, replies)
    # Execute
    expected = clean.aggregate_train(clean_plan, good)
    result = attacked.aggregate_train(attacked_plan, [good[0], bad, good[1]])  # the bad one arrives in between
    # Assert: the global model is exactly the one without the bad reply; the row counts the rejection
    assert _same(attacked.server.state, clean.server.state)
    assert _same(attacked.server.masks, clean.server.masks)
    assert attacked.server.mask_version == clean.server.mask_version
    assert result.clients == expected.clients == [0, 1]
    assert result.row["rejected"] == {reason: 1}
    assert result.row["rejected-clients"] == [[bad[0], reason]]
    assert expected.row["rejected"] == {} and expected.row["missing"] == [2]
    assert result.row["missing"] == ([] if bad[0] == 2 else [2])  # a reply that came, even a bad one, is not missing
    assert result.row["train-loss"] == expected.row["train-loss"]


def test_honest_replies_are_all_accepted() -> None:
    # Prepare
    plan, replies = _honest_replies(_UploadEveryRound())
    protocol, _ = _world(_UploadEveryRound())
    plan = protocol.configure_train(0, [0, 1, 2])
    # Execute
    result = protocol.aggregate_train(plan, replies)
    # Assert: nothing rejected, nobody missing, every reply aggregated
    assert result.clients == [0, 1, 2]
    assert result.row["rejected"] == {} and result.row["rejected-clients"] == [] and result.row["missing"] == []


def test_own_masks_must_keep_each_layers_count() -> None:
    # Prepare: a method whose clients own their masks; participant 2 keeps all 128 weights, 1 moves one weight
    plan, replies = _honest_replies(_OwnMasks())
    protocol, _ = _world(_OwnMasks())
    plan = protocol.configure_train(0, [0, 1, 2])
    moved = plan.ins.masks[WEIGHT].copy()
    moved[0, 0], moved[7, 15] = True, False  # one regrown, one dropped: still 122 kept

    def move(res: TrainRes) -> None:
        res.masks = {WEIGHT: moved, "4.weight": plan.ins.masks["4.weight"]}
        res.state[WEIGHT] = res.state[WEIGHT] * moved

    swapped = _tampered(replies[1], plan, move)
    grown = _tampered(replies[2], plan, _other_masks)
    # Execute
    result = protocol.aggregate_train(plan, {0: replies[0], 1: swapped, 2: grown})
    # Assert: the swap is the client's right; keeping 128 of the 122 sent is not
    assert result.clients == [0, 1]
    assert result.row["rejected-clients"] == [[2, "mask"]]


def test_min_valid_replies_stops_a_round_with_too_few() -> None:
    # Prepare: 2 valid replies needed; participant 2 sends NaN and participant 1 does not reply
    plan, replies = _honest_replies(_UploadEveryRound())
    protocol, _ = _world(_UploadEveryRound())
    protocol.server.settings = ServerSettings(3, 3, local_steps=2, batch_size=3, lr=0.1,
                                              importance_mode="round_sum", min_valid_replies=2)
    plan = protocol.configure_train(0, [0, 1, 2])
    bad = _bad_reply("nan", plan, replies)
    before = _snapshot(protocol)
    # Execute
    with pytest.raises(TooFewRepliesError, match="1 valid replies of 3 participants, fewer than fl.min_valid_replies=2"):
        protocol.aggregate_train(plan, [(0, replies[0]), bad])
    # Assert: nothing applied; the error lists the rejection and the missing participant
    assert _same(protocol.server.state, before["state"]) and protocol.server.mask_version == 0
    assert protocol.link.state_dict() == before["link"]


def test_a_participant_without_data_may_not_report_samples() -> None:
    # Prepare: the server knows participant 2 holds no sample (a Flower node that declared an empty partition)
    plan, replies = _honest_replies(_UploadEveryRound())
    protocol, _ = _world(_UploadEveryRound())
    protocol.partition_sizes = {0: 6, 1: 6, 2: 0}
    plan = protocol.configure_train(0, [0, 1, 2])
    # Execute
    result = protocol.aggregate_train(plan, replies)
    # Assert
    assert result.clients == [0, 1] and result.row["rejected"] == {"sample-count": 1}


class _FailingHook(_UploadEveryRound):
    """A method whose after-aggregate hook fails (a bug, or input that validation did not foresee)."""

    def after_aggregate(self, view: AggregateView) -> Decision | None:
        raise RuntimeError("hook failed")


def test_a_failing_method_hook_rolls_the_server_back() -> None:
    # Prepare: valid replies; the aggregate is swapped in, then the method's hook raises
    plan, replies = _honest_replies(_UploadEveryRound())
    protocol, _ = _world(_FailingHook())
    plan = protocol.configure_train(0, [0, 1, 2])
    before = _snapshot(protocol)
    # Execute
    with pytest.raises(RuntimeError, match="hook failed"):
        protocol.aggregate_train(plan, replies)
    # Assert: the global model is the one before the round, bit for bit
    assert _same(protocol.server.state, before["state"]) and _same(protocol.server.masks, before["masks"])
    assert protocol.server.mask_version == 0
