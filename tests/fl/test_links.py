"""Server and client links: real codec sizes, masks sent once per version, decoded messages equal what was sent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunefl.errors import CheckpointError, DecodeError, InconsistentRepliesError
from prunefl.fl.links import ClientLink, ServerLink, TrainMessage, TrainReply, WireSettings
from prunefl.fl.messages import TrainIns, TrainRes


def _ins(density: float, seed: int = 0) -> TrainIns:
    rng = np.random.default_rng(seed)
    mask = rng.random((200, 100)) < density
    w = rng.standard_normal((200, 100)).astype(np.float32)
    return TrainIns(3, {"w": w, "b": np.ones(200, np.float32)}, {"w": mask}, 0.1, 5, 20)


def _reply_through(settings: WireSettings, ins: TrainIns, res: TrainRes) -> tuple[TrainRes, int]:
    """Send ``ins`` to participant 0, encode ``res`` at its client link, decode it at the server link."""
    server, client = ServerLink(settings), ClientLink(settings)
    client.decode_ins(server.encode_ins(ins, [0], mask_version=0)[0])
    data = client.encode_res(res)
    return server.decode_res(0, data), len(data)


def test_masks_are_sent_once_per_version_and_bytes_shrink_without_them() -> None:
    # Prepare
    link = ServerLink()
    ins = _ins(0.3)
    # Execute
    first = link.encode_ins(ins, [0, 1], mask_version=0)
    second = link.encode_ins(ins, [0, 1, 2], mask_version=0)  # participant 2 is new
    third = link.encode_ins(ins, [0], mask_version=1)  # masks changed
    # Assert
    assert first[0].nbytes == first[1].nbytes
    assert second[0].nbytes < first[0].nbytes  # no mask section
    assert second[2].nbytes == first[0].nbytes
    assert third[0].nbytes == first[0].nbytes
    assert [m.mask_version for m in (first[0], second[0], second[2], third[0])] == [0, 0, 0, 1]
    assert (link.held_mask_version(0), link.held_mask_version(1), link.held_mask_version(3)) == (1, 0, None)


def test_client_link_decodes_a_maskless_instruction_with_its_cached_masks() -> None:
    # Prepare: round one carries the masks, round two omits them (same version)
    server, client = ServerLink(), ClientLink()
    ins = _ins(0.3)
    client.decode_ins(server.encode_ins(ins, [0], mask_version=4)[0])
    # Execute
    got = client.decode_ins(server.encode_ins(ins, [0], mask_version=4)[0])
    # Assert
    np.testing.assert_array_equal(got.masks["w"], ins.masks["w"])
    np.testing.assert_array_equal(got.state["w"], ins.state["w"] * ins.masks["w"])  # pruned coordinates arrive as 0
    assert client.mask_version == 4


def test_client_link_holding_another_version_rejects_an_instruction_without_masks() -> None:
    # Prepare: the client holds version 0; the server believes it holds version 1 (e.g. a lost message)
    server, client = ServerLink(), ClientLink()
    ins = _ins(0.3)
    client.decode_ins(server.encode_ins(ins, [0], mask_version=0)[0])
    server.encode_ins(_ins(0.3, seed=1), [0], mask_version=1)  # never delivered
    maskless = server.encode_ins(_ins(0.3, seed=1), [0], mask_version=1)[0]
    # Execute / Assert: a clear error, and the cache still holds version 0
    with pytest.raises(DecodeError, match="mask version 1 omits masks, and this client holds version 0"):
        client.decode_ins(maskless)
    assert client.mask_version == 0
    np.testing.assert_array_equal(client.masks["w"], ins.masks["w"])


def test_client_link_cannot_encode_before_it_decoded_an_instruction() -> None:
    res = TrainRes(0, 1, {"b": np.ones(200, np.float32)}, 0.0, 0.0)
    with pytest.raises(InconsistentRepliesError, match="before it decoded any instruction"):
        ClientLink().encode_res(res)


def test_server_link_rejects_a_reply_from_a_participant_it_never_asked() -> None:
    with pytest.raises(InconsistentRepliesError, match="participant 7, which was sent no instruction"):
        ServerLink().decode_res(7, b"PFL1")


def test_reply_round_trip_decodes_against_the_masks_sent() -> None:
    # Prepare: a reply at the masks of the instruction, pruned coordinates 0
    ins = _ins(0.5)
    state = {"w": ins.state["w"] * ins.masks["w"], "b": ins.state["b"] + 1}
    res = TrainRes(0, 100, state, 0.25, 0.5)
    # Execute
    got, n = _reply_through(WireSettings(), ins, res)
    # Assert: 10,000 ± kept float32 values + 200 biases, no mask (the server knows it)
    np.testing.assert_array_equal(got.state["w"], state["w"])
    np.testing.assert_array_equal(got.state["b"], state["b"])
    assert got.masks is None and (got.train_loss, got.compute_wall_s) == (0.25, 0.5)
    kept = int(ins.masks["w"].sum())
    assert 4 * (kept + 200) < n < 4 * (kept + 200) + 300  # values plus header and table


def test_bytes_track_density() -> None:
    dense = ServerLink().encode_ins(_ins(1.0), [0], 0)[0].nbytes
    sparse = ServerLink().encode_ins(_ins(0.1), [0], 0)[0].nbytes
    # 20,000 float32 weights + 200 biases: dense ~80.8 kB; at 10 % ~8 kB of values + a ~0.47 bit/weight mask
    assert 80_800 <= dense <= 82_000
    assert sparse < 0.15 * dense


def test_reply_size_counts_the_extras_raw_bytes() -> None:
    reply = TrainReply(b"12345", {"x": np.zeros((3, 2), np.float32), "y": np.zeros(3, np.int64)})
    assert reply.nbytes == 5 + 24 + 24
    assert TrainMessage(b"123", mask_version=2).nbytes == 3


def test_float16_importance_halves_the_upload_and_rounds_values() -> None:
    # Prepare
    ins = _ins(0.5)
    state = {"w": ins.state["w"] * ins.masks["w"], "b": ins.state["b"]}
    imp = {"w": np.full((200, 100), 1.0 + 2**-13, np.float32), "b": np.ones(200, np.float32)}
    res = TrainRes(0, 100, state, 0.5, 0.01, imp)
    # Execute
    r32, n32 = _reply_through(WireSettings(), ins, res)
    r16, n16 = _reply_through(WireSettings(importance_dtype="float16"), ins, res)
    # Assert
    assert n32 - n16 == (20_000 + 200) * 2  # two bytes saved per importance value
    assert r32.importance["w"][0, 0] == np.float32(1.0 + 2**-13)
    assert r16.importance["w"][0, 0] == 1.0  # below float16 resolution
    np.testing.assert_array_equal(r16.state["w"], state["w"])


def test_top_fraction_importance_sends_the_largest_tenth_and_shrinks_the_upload() -> None:
    # Prepare: distinct importance values, so each layer's top 10 % is unique
    ins = _ins(0.5)
    rng = np.random.default_rng(1)
    state = {"w": ins.state["w"] * ins.masks["w"], "b": ins.state["b"]}
    imp = {"w": rng.permutation(20_000).reshape(200, 100).astype(np.float32),
           "b": rng.permutation(200).astype(np.float32)}
    res = TrainRes(0, 100, state, 0.5, 0.01, imp)
    # Execute
    dense, n_dense = _reply_through(WireSettings(), ins, res)
    top, n_top = _reply_through(WireSettings(importance_top_fraction=0.1), ins, res)
    # Assert: 2,000 and 20 values survive, the largest (>= 18,000 and >= 180); 4 bytes a value plus ~0.47 bit a
    # weight of positions replace 4 bytes a weight: the importance part shrinks from 80.8 kB to ~9.2 kB
    np.testing.assert_array_equal(dense.importance["w"], imp["w"])
    np.testing.assert_array_equal(top.importance["w"], np.where(imp["w"] >= 18_000, imp["w"], 0))
    np.testing.assert_array_equal(top.importance["b"], np.where(imp["b"] >= 180, imp["b"], 0))
    np.testing.assert_array_equal(top.state["w"], state["w"])
    saved = n_dense - n_top
    assert 0.85 * 80_800 < saved < 0.9 * 80_800


def test_client_link_state_round_trip_decodes_the_next_maskless_instruction() -> None:
    # Prepare: a client that cached version 2, saved; a fresh link loaded with its state
    server, client = ServerLink(), ClientLink()
    ins = _ins(0.3)
    client.decode_ins(server.encode_ins(ins, [0], mask_version=2)[0])
    fresh = ClientLink()
    # Execute
    fresh.load_state_dict(client.state_dict())
    got = fresh.decode_ins(server.encode_ins(ins, [0], mask_version=2)[0])  # omits the masks
    # Assert
    assert fresh.mask_version == 2
    np.testing.assert_array_equal(got.masks["w"], ins.masks["w"])


def test_server_link_state_round_trip_keeps_the_versions_held() -> None:
    # Prepare
    link = ServerLink()
    link.encode_ins(_ins(0.3), [0, 5], mask_version=3)
    fresh = ServerLink()
    # Execute
    fresh.load_state_dict(link.state_dict())
    # Assert: JSON-able, and a participant holding version 3 gets no masks again
    assert link.state_dict() == {"held": {"0": 3, "5": 3}}
    assert fresh.held_mask_version(5) == 3
    assert fresh.encode_ins(_ins(0.3), [5], 3)[5].nbytes < ServerLink().encode_ins(_ins(0.3), [5], 3)[5].nbytes


@pytest.mark.parametrize(
    "state",
    [
        {"mask-names": []},  # no mask version at all
        {"mask-version": "2", "mask-names": []},  # the version must be an int
        {"mask-version": 2, "mask-names": ["w"]},  # a named mask is missing
        {"mask-version": 2, "mask-names": ["w"], "masks/w": torch.ones(2)},  # float, not bool
    ],
)
def test_client_link_rejects_malformed_state_and_keeps_its_cache(state: dict) -> None:
    # Prepare
    link = ClientLink()
    link.decode_ins(ServerLink().encode_ins(_ins(0.3), [0], mask_version=1)[0])
    # Execute / Assert
    with pytest.raises(CheckpointError):
        link.load_state_dict(state)
    assert link.mask_version == 1



@pytest.mark.parametrize(("method", "own"), [("fedavg", False), ("prunefl-no-ip", False), ("feddst", True)])
def test_engine_link_accepts_own_masks_only_for_methods_whose_clients_change_them(method: str, own: bool) -> None:
    # Prepare: the simulation builds its server link from the method's flag
    from prunefl.engines.simulation import SimulationEngine
    from prunefl.experiments.config import load_config
    from prunefl.experiments.runner import build_simulation, load_run_dataset

    config = load_config(None, ["data.dataset=digits", "model.name=mlp", "timing.preset=uniform", "threads=1",
                                "data.num_clients=2", "clients_per_round=2", f"method={method}", "reference.density=0.5"])
    # Execute
    engine = SimulationEngine(build_simulation(config, load_run_dataset(config)))
    # Assert: only FedDST's clients may send their own masks; a reply of any other method must carry those sent
    assert engine.protocol.link.own_masks is own
