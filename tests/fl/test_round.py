"""The round protocol: participants as given, replies validated before anything changes, clients resumable."""

from __future__ import annotations

import dataclasses

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
from prunefl.fl.round import ClientWorkspace, RoundProtocol, apply_decision, client_round
from prunefl.fl.server import Server, ServerSettings
from prunefl.pruning.methods.base import AggregateView, Decision, Method
from prunefl.seeds import BATCH_STREAM, rng
from prunefl.sparse.codec import decode_train_res, encode_train_res
from prunefl.sparse.masks import attach_masks

PARTITIONS = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 12)]


class _ImportanceRounds(Method):
    """Tracks importance every round and uploads it in round 2."""

    def track_importance(self, round: int) -> bool:
        return True

    def upload_importance(self, round: int) -> bool:
        return round == 2


class _PruneOne(Method):
    """Prunes weight (0, 5) after every aggregation."""

    def after_aggregate(self, view: AggregateView) -> Decision:
        masks = {k: v.clone() for k, v in view.masks.items()}
        masks["1.weight"][0, 5] = False
        return Decision(masks=masks, record={"pruned": 1})


def _world(method: Method) -> tuple[RoundProtocol, ClientWorkspace]:
    """3 clients with 4 samples each of 1×4×4 images (augmented), a 16→3 linear model, 5 of 48 weights pruned."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    attach_masks(model)
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(12) % 3
    dataset = ArrayDataset("tiny", x, y, x[:3], y[:3], 3, augment="crop_flip")
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[0, :5] = False
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("_mask")}
    settings = ServerSettings(3, 3, local_steps=2, batch_size=3, lr=0.1, importance_mode="round_sum")
    protocol = RoundProtocol(Server(state, {"1.weight": mask}, settings), method, ServerLink(), devices=[])
    return protocol, ClientWorkspace(model, dataset, make_loss("cross_entropy", 3), seed=0)


def _client(cid: int, momentum: float = 0.0) -> ClientState:
    """Client ``cid`` as an engine builds it from the run's config."""
    batches = BatchStream(PARTITIONS[cid], rng(0, BATCH_STREAM, cid))
    return ClientState(cid, batches, torch.Generator().manual_seed(10 + cid), momentum=momentum, link=ClientLink())


def _train(protocol: RoundProtocol, work: ClientWorkspace, clients: dict[int, ClientState], round: int) -> None:
    """One whole round of ``clients``."""
    plan = protocol.configure_train(round, sorted(clients))
    replies = {c: client_round(plan.messages[c], clients[c], work, protocol.method, PARTITIONS[c]) for c in clients}
    protocol.aggregate_train(plan, replies)


def test_round_trains_the_given_participants_and_applies_the_decision() -> None:
    # Prepare
    protocol, work = _world(_PruneOne())
    clients = {0: _client(0), 2: _client(2)}
    plan = protocol.configure_train(0, [0, 2])
    # Execute
    replies = {c: client_round(plan.messages[c], clients[c], work, protocol.method, PARTITIONS[c]) for c in (0, 2)}
    result = protocol.aggregate_train(plan, replies)
    # Assert: only the participants were addressed; the row sums what travelled
    assert sorted(plan.messages) == [0, 2] and result.clients == [0, 2]
    row = result.row
    assert row["clients"] == [0, 2] and row["round"] == 0 and row["stage"] == "fl"
    assert row["bytes-down"] == plan.messages[0].nbytes + plan.messages[2].nbytes
    assert row["bytes-up"] == sum(r.nbytes for r in replies.values()) == sum(result.bytes_up)
    decoded = [decode_train_res(replies[c].data, plan.ins.masks) for c in (0, 2)]
    assert row["train-loss"] == pytest.approx((decoded[0].train_loss + decoded[1].train_loss) / 2)  # equal K·B
    # the global weights are the average of the two replies at kept coordinates (float32 mean: 1 ulp tolerance)
    kept = plan.ins.masks["1.weight"]
    average = (decoded[0].state["1.weight"] + decoded[1].state["1.weight"]) / 2
    np.testing.assert_allclose(protocol.server.state["1.weight"].numpy()[kept], average[kept], rtol=1e-6)
    # the decision pruned one more of 48 weights: 6 pruned, density 42/48, a new mask version
    assert row["density"] == 42 / 48 and row["reconfig"] == {"pruned": 1}
    assert protocol.server.mask_version == 1 and not bool(protocol.server.masks["1.weight"][0, 5])


def test_masks_travel_again_only_after_they_changed() -> None:
    # Prepare: FedAvg keeps the masks; the version stays 0
    protocol, work = _world(Method())
    clients = {0: _client(0)}
    first = protocol.configure_train(0, [0])
    protocol.aggregate_train(first, {0: client_round(first.messages[0], clients[0], work, Method(), PARTITIONS[0])})
    # Execute
    second = protocol.configure_train(1, [0])
    reply = client_round(second.messages[0], clients[0], work, Method(), PARTITIONS[0])
    # Assert: the second instruction omits the mask, and the client decodes it with the one it cached
    assert second.messages[0].mask_version == first.messages[0].mask_version == 0
    assert second.messages[0].nbytes < first.messages[0].nbytes
    np.testing.assert_array_equal(clients[0].link.masks["1.weight"], protocol.server.masks["1.weight"].numpy())
    assert protocol.aggregate_train(second, {0: reply}).clients == [0]


def _bad_shape_reply(masks: dict[str, np.ndarray]) -> TrainReply:
    state = {"1.weight": np.zeros((3, 16), np.float32), "1.bias": np.zeros(4, np.float32)}  # 4 biases, not 3
    return TrainReply(encode_train_res(TrainRes(1, 6, state, 0.5, 0.0), masks))


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("truncated", "decode"),  # the second reply lost its last bytes
        ("bad-shape", "shape"),  # the second reply's bias has 4 entries, the model (and the shapes sent) 3
        ("not-asked", "not-selected"),  # client 2, which was not selected, replied instead of client 1
        ("wrong-id", "client-id"),  # participant 1 sent client 0's reply
    ],
)
def test_a_bad_reply_changes_nothing_even_after_a_good_one(case: str, reason: str) -> None:
    # Prepare: two participants, both needed (fl.min_valid_replies = 2); client 0's reply is fine, the other bad
    protocol, work = _world(_PruneOne())
    server = protocol.server
    server.settings = dataclasses.replace(server.settings, min_valid_replies=2)
    clients = {0: _client(0), 1: _client(1)}
    plan = protocol.configure_train(0, [0, 1])
    replies = {c: client_round(plan.messages[c], clients[c], work, protocol.method, PARTITIONS[c]) for c in (0, 1)}
    if case == "truncated":
        replies[1] = TrainReply(replies[1].data[:-3])
    elif case == "bad-shape":
        replies[1] = _bad_shape_reply(plan.ins.masks)
    elif case == "not-asked":
        replies[2] = replies.pop(1)
    else:
        replies[1] = replies[0]
    state, masks = server.state, server.masks
    before = {k: v.clone() for k, v in state.items()}
    # Execute
    with pytest.raises(TooFewRepliesError) as caught:
        protocol.aggregate_train(plan, replies)
    # Assert: the bad reply was rejected with its reason; same state objects and values, masks and version
    # untouched (the method's decision never ran)
    assert [(r.participant, r.reason) for r in caught.value.rejections] == [(1 if case != "not-asked" else 2, reason)]
    assert server.state is state and server.masks is masks and server.mask_version == 0
    assert all(torch.equal(before[k], v) for k, v in server.state.items())
    assert bool(server.masks["1.weight"][0, 5])


def test_a_client_restored_from_its_state_dict_replies_exactly_as_one_never_interrupted() -> None:
    # Prepare: momentum buffers, importance accumulated over rounds 0-1 and uploaded in round 2, augmentation,
    # a batch stream that crosses passes (2 steps of 3 samples from 4), masks cached from round 0
    protocol, work = _world(_ImportanceRounds())
    clients = {0: _client(0, momentum=0.9), 1: _client(1, momentum=0.9)}
    for r in range(2):
        _train(protocol, work, clients, r)
    saved = clients[0].state_dict()
    plan = protocol.configure_train(2, [0, 1])
    # Execute: the original client goes on; a fresh one, built from the config, loads the saved state
    original = client_round(plan.messages[0], clients[0], work, protocol.method, PARTITIONS[0])
    restored_client = _client(0, momentum=0.9)
    restored_client.load_state_dict(saved)
    fresh_work = _world(_ImportanceRounds())[1]  # a new process: another model workspace
    restored = client_round(plan.messages[0], restored_client, fresh_work, protocol.method, PARTITIONS[0])
    # Assert: the instruction relied on the cached masks, and the replies are equal bit for bit, except the
    # measured compute seconds the reply also carries
    assert plan.messages[0].nbytes < protocol.link.encode_ins(plan.ins, [9], plan.messages[0].mask_version)[9].nbytes
    a, b = (decode_train_res(r.data, plan.ins.masks) for r in (original, restored))
    assert a.importance is not None and b.importance is not None
    assert all(np.array_equal(a.state[k], b.state[k]) for k in a.state)
    assert all(np.array_equal(a.importance[k], b.importance[k]) for k in a.importance)
    assert (a.train_loss, a.num_examples, a.client_id) == (b.train_loss, b.num_examples, b.client_id)
    assert len(original.data) == len(restored.data)
    # and the fresh client now holds what the original holds
    assert torch.equal(restored_client.momentum_buffers["1.weight"], clients[0].momentum_buffers["1.weight"])
    assert torch.equal(restored_client.augment_generator.get_state(), clients[0].augment_generator.get_state())


def test_apply_decision_sets_the_state_before_the_masks_so_zero_regrowth_sees_them() -> None:
    # Prepare
    settings = ServerSettings(1, 1, 1, 1, 0.1, regrow_init="zero")
    server = Server({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([True, True])}, settings)
    # Execute
    apply_decision(server, Decision(state={"w": torch.tensor([3.0, 4.0])}, masks={"w": torch.tensor([True, False])}))
    # Assert: the new state, zeroed where the new mask prunes
    assert server.state["w"].tolist() == [3.0, 0.0] and server.mask_version == 1
