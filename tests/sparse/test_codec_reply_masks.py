"""Replies that carry the client's own masks (FedDST) survive the wire codec: masks, kept values and importance."""

from __future__ import annotations

import numpy as np
import pytest

from prunefl.errors import DecodeError
from prunefl.fl.messages import TrainRes
from prunefl.sparse.codec import decode_train_res, encode_train_res

# The server's mask this round, and a client's readjusted mask: it dropped idx 1 and regrew idx 4.
SERVER = {"w": np.array([True, True, True, False, False, False])}
OWN = {"w": np.array([True, False, True, False, True, False])}


def _reply(masks: dict | None, values: list[float], importance: dict | None = None) -> TrainRes:
    state = {"w": np.array(values, np.float32), "b": np.array([0.5, -0.5], np.float32)}
    return TrainRes(client_id=3, num_examples=100, state=state, train_loss=0.7, compute_wall_s=0.01,
                    importance=importance, masks=masks)


@pytest.mark.parametrize("level", [None, 3])  # raw sections and zstd
def test_reply_with_own_masks_round_trips_masks_and_kept_values(level: int | None) -> None:
    # Prepare: the regrown idx 4 holds a value the server's mask prunes; the dropped idx 1 holds 0
    res = _reply(OWN, [1.5, 0.0, -2.0, 0.0, 0.25, 0.0])
    # Execute: the server decodes with the mask it sent
    out = decode_train_res(encode_train_res(res, SERVER, level=level), SERVER, own_masks=True)
    # Assert
    assert out.masks is not None and set(out.masks) == {"w"}
    np.testing.assert_array_equal(out.masks["w"], OWN["w"])
    np.testing.assert_array_equal(out.state["w"], [1.5, 0.0, -2.0, 0.0, 0.25, 0.0])
    np.testing.assert_array_equal(out.state["b"], [0.5, -0.5])
    assert (out.client_id, out.num_examples, out.train_loss) == (3, 100, 0.7)


def test_reply_with_own_masks_costs_the_mask_bytes_over_one_without() -> None:
    # Prepare: the same kept count (3) under the server's mask and the client's own
    plain = _reply(None, [1.5, 0.25, -2.0, 0.0, 0.0, 0.0])
    own = _reply(OWN, [1.5, 0.0, -2.0, 0.0, 0.25, 0.0])
    # Execute
    n_plain = len(encode_train_res(plain, SERVER, level=None))
    n_own = len(encode_train_res(own, SERVER, level=None))
    # Assert: 6 weights fit one bitmask byte, which the plain reply omits (mask known to the server)
    assert n_own == n_plain + 1


def test_reply_without_own_masks_decodes_masks_as_none() -> None:
    # Prepare
    res = _reply(None, [1.5, 0.25, -2.0, 0.0, 0.0, 0.0])
    # Execute
    out = decode_train_res(encode_train_res(res, SERVER), SERVER)
    # Assert
    assert out.masks is None
    np.testing.assert_array_equal(out.state["w"], [1.5, 0.25, -2.0, 0.0, 0.0, 0.0])


def test_reply_with_own_masks_and_importance_round_trips_both() -> None:
    # Prepare
    importance = {"w": np.arange(6, dtype=np.float32), "b": np.array([1.0, 2.0], np.float32)}
    res = _reply(OWN, [1.5, 0.0, -2.0, 0.0, 0.25, 0.0], importance)
    # Execute
    out = decode_train_res(encode_train_res(res, SERVER), SERVER, own_masks=True)
    # Assert
    assert out.masks is not None and out.importance is not None
    np.testing.assert_array_equal(out.masks["w"], OWN["w"])
    np.testing.assert_array_equal(out.importance["w"], np.arange(6))
    np.testing.assert_array_equal(out.importance["b"], [1.0, 2.0])


def test_nonzero_value_where_the_own_mask_prunes_is_rejected_even_if_the_server_keeps_it() -> None:
    # Prepare: idx 1 is kept by the server's mask but dropped by the client's own, and is not 0
    res = _reply(OWN, [1.5, 0.3, -2.0, 0.0, 0.25, 0.0])
    # Execute / Assert: the encoder checks against the masks the reply carries
    with pytest.raises(ValueError, match="'w'"):
        encode_train_res(res, SERVER)


def test_reply_with_other_masks_is_rejected_unless_own_masks_are_allowed() -> None:
    # Prepare: the client's mask keeps 3 weights, as the server's does, at other positions (1 -> 4)
    data = encode_train_res(_reply(OWN, [1.5, 0.0, -2.0, 0.0, 0.25, 0.0]), SERVER)
    # Execute / Assert: the default decode compares the carried mask with the one sent
    with pytest.raises(DecodeError, match=r"\['w'\] that differ from those the server sent"):
        decode_train_res(data, SERVER)


def test_reply_carrying_the_servers_own_mask_is_accepted_by_the_strict_decode() -> None:
    # Prepare: the encoder sends the server's mask itself (include_masks=True)
    res = _reply(None, [1.5, 0.25, -2.0, 0.0, 0.0, 0.0])
    # Execute
    out = decode_train_res(encode_train_res(res, SERVER, include_masks=True), SERVER)
    # Assert
    assert out.masks is not None
    np.testing.assert_array_equal(out.masks["w"], SERVER["w"])


def test_reply_masking_an_entry_the_server_did_not_mask_is_rejected() -> None:
    # Prepare: the server sent no masks; the reply masks "w"
    data = encode_train_res(_reply(OWN, [1.5, 0.0, -2.0, 0.0, 0.25, 0.0]), {})
    # Execute / Assert
    with pytest.raises(DecodeError, match=r"server sent masks for \[\]"):
        decode_train_res(data, {})
