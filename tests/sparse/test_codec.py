"""Tests for prunefl.sparse.codec: round trips, byte layout worked by hand, and every validation failure."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from prunefl.errors import ConfigError, DecodeError
from prunefl.fl.messages import TrainIns, TrainRes
from prunefl.sparse.codec import (
    FORMAT_VERSION,
    MAGIC,
    DecodeLimits,
    decode_state,
    decode_train_ins,
    decode_train_res,
    encode_state,
    encode_train_ins,
    encode_train_res,
    information_bound_bits,
)

# --- the documented byte layout, rebuilt independently of the codec (prunefl.sparse.codec docstring) ---
FIXED = struct.Struct("<4sHBBIIQQI")  # ..., table CRC32; then the scalars and the header CRC32
INS_SCALARS = struct.Struct("<qdqqBB")
RES_SCALARS = struct.Struct("<qqddB")
ENTRY_TAIL = struct.Struct("<BBQBQQIBBQI")  # mask: code, k, n_kept, codec, stored, raw, CRC; values: ..., CRC
IMPORTANCE_ENTRY = struct.Struct("<IBBBQI")
IMPORTANCE_POSITIONS = struct.Struct("<BBQBQQI")  # top-k entries: code, rice k, k, codec, stored, raw, CRC
TOP_K = 2**31  # flag bit of the importance entry field
KIND_INS, KIND_RES, KIND_STATE = 1, 2, 3
DENSE, KNOWN, ALL_ONES, BITMASK, RICE_KEPT, RICE_PRUNED = range(6)
RAW, ZSTD, SHUFFLED_ZSTD = range(3)
BOOL, UINT8, INT8, INT16, INT32, INT64, FLOAT16, FLOAT32, FLOAT64 = range(1, 10)
HEADER_BYTES = 40  # fixed header (36) + header checksum (4) of a state message (no scalars)
crc = zlib.crc32


def entry(
    name: bytes = b"w",
    dtype: int = FLOAT32,
    shape: tuple[int, ...] = (4,),
    mask_code: int = DENSE,
    rice_k: int = 0,
    n_kept: int | None = None,
    mask: bytes = b"",
    mask_codec: int = RAW,
    mask_raw: int | None = None,
    wire: int | None = None,
    values: bytes | None = None,
    values_codec: int = RAW,
) -> tuple[bytes, bytes]:
    """Return (table bytes, body bytes) of one state entry, defaults filled in as the encoder would."""
    numel = math.prod(shape)
    n_kept = numel if n_kept is None else n_kept
    values = np.arange(n_kept, dtype="<f4").tobytes() if values is None else values
    table = (
        struct.pack("<H", len(name))
        + name
        + struct.pack("<BB", dtype, len(shape))
        + struct.pack(f"<{len(shape)}Q", *shape)
        + ENTRY_TAIL.pack(
            mask_code,
            rice_k,
            n_kept,
            mask_codec,
            len(mask),
            len(mask) if mask_raw is None else mask_raw,
            crc(mask),
            dtype if wire is None else wire,
            values_codec,
            len(values),
            crc(values),
        )
    )
    return table, mask + values


def message(
    entries: list[tuple[bytes, bytes]],
    kind: int = KIND_STATE,
    scalars: bytes = b"",
    importance: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    magic: bytes = MAGIC,
    version: int = FORMAT_VERSION,
) -> bytes:
    """Assemble a message from (table, body) pairs with a raw table."""
    table = b"".join(t for t, _ in entries) + b"".join(t for t, _ in importance)
    body = b"".join(b for _, b in entries) + b"".join(b for _, b in importance)
    return header(kind, len(entries), len(importance), table, scalars, magic=magic, version=version) + table + body


def header(
    kind: int,
    n_entries: int,
    n_importance: int,
    table: bytes,
    scalars: bytes = b"",
    table_codec: int = RAW,
    table_raw: int | None = None,
    magic: bytes = MAGIC,
    version: int = FORMAT_VERSION,
) -> bytes:
    """Fixed header (with the table's CRC32), scalars and the header CRC32: everything before the table."""
    raw = len(table) if table_raw is None else table_raw
    fixed = FIXED.pack(magic, version, kind, table_codec, n_entries, n_importance, len(table), raw, crc(table))
    return fixed + scalars + struct.pack("<I", crc(fixed + scalars))


def imp_entry(field: int, dtype: int, wire: int, codec: int, values: bytes) -> bytes:
    """An importance table entry for the stored ``values`` (length and CRC32 filled in)."""
    return IMPORTANCE_ENTRY.pack(field, dtype, wire, codec, len(values), crc(values))


def ins_scalars(round_: int = 4, lr: float = 0.25, steps: int = 5, batch: int = 10, mode: int = 1, up: int = 0):
    return INS_SCALARS.pack(round_, lr, steps, batch, mode, up)


def res_scalars(client: int = 2, n: int = 50, loss: float = 0.5, wall: float = 0.125, has_imp: int = 0):
    return RES_SCALARS.pack(client, n, loss, wall, has_imp)


def kept_state(rng: np.random.Generator, shape: tuple[int, ...], density: float):
    mask = rng.random(shape) < density
    return (rng.standard_normal(shape).astype(np.float32) * mask).astype(np.float32), mask


# ---------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def states(draw: st.DrawFn):
    """Small states of every entry kind: masked float32 at any density (0 and 1 included), dense float32,
    float64, int64 (0-d like num_batches_tracked), bool buffers, and empty layers."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    state: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for i in range(draw(st.integers(0, 5))):
        shape = tuple(draw(st.lists(st.integers(0, 9), max_size=3)))
        if draw(st.booleans()) and len(shape) == 1:
            shape = (draw(st.integers(0, 3000)),)  # long enough to compress and to Rice-code
        kind = draw(st.sampled_from(["masked", "float32", "float64", "int64", "bool"]))
        name = f"layer{i}.{kind}"
        if kind == "masked":
            density = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
            state[name], masks[name] = kept_state(rng, shape, density)
        elif kind == "float32":
            state[name] = rng.standard_normal(shape).astype(np.float32)
        elif kind == "float64":
            state[name] = rng.standard_normal(shape)
        elif kind == "int64":
            state[name] = rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64)
        else:
            state[name] = rng.random(shape) < 0.5
    return state, masks


@settings(max_examples=150, deadline=None)
@given(states(), st.booleans(), st.sampled_from([None, 1, 3]))
def test_state_round_trip_is_exact_for_float32_values(case, include_masks: bool, level: int | None) -> None:
    # Prepare
    state, masks = case
    # Execute
    data = encode_state(state, masks, include_masks, level=level)
    decoded, decoded_masks = decode_state(data, known_masks=None if include_masks else masks)
    # Assert
    assert list(decoded) == list(state)
    for name, value in state.items():
        assert decoded[name].dtype == value.dtype and decoded[name].shape == value.shape
        np.testing.assert_array_equal(decoded[name], value)  # pruned coordinates were 0 and decode as 0
        assert decoded[name].flags.writeable and decoded[name].flags.c_contiguous
    assert set(decoded_masks) == set(masks)
    for name, mask in masks.items():
        np.testing.assert_array_equal(decoded_masks[name], mask)


@settings(max_examples=60, deadline=None)
@given(states())
def test_float16_values_round_trip_within_half_precision(case) -> None:
    # Prepare
    state, masks = case
    # Execute
    decoded, _ = decode_state(encode_state(state, masks, values_dtype="float16"))
    # Assert
    for name, value in state.items():
        assert decoded[name].dtype == value.dtype
        if name in masks:
            # Round to nearest float16: relative error <= 2**-11 for normal values; below 2**-14 the spacing of
            # float16 subnormals is 2**-24, so the absolute error is <= 2**-25.
            np.testing.assert_allclose(decoded[name], value, rtol=2**-11, atol=2**-25)
        else:
            np.testing.assert_array_equal(decoded[name], value)  # unmasked entries stay lossless


def test_stale_values_at_pruned_coordinates_decode_as_zero() -> None:
    # Prepare: the server's state keeps stale values under its mask (spec §3.8)
    ins = TrainIns(
        round=2,
        state={"w": np.array([1.0, 2.0, 3.0, 4.0], np.float32)},
        masks={"w": np.array([True, False, False, True])},
        lr=0.1,
        local_steps=5,
        batch_size=10,
    )
    # Execute
    out = decode_train_ins(encode_train_ins(ins))
    # Assert
    np.testing.assert_array_equal(out.state["w"], [1.0, 0.0, 0.0, 4.0])


@pytest.mark.parametrize("mode", ["off", "round_sum", "legacy_last_step"])
@pytest.mark.parametrize("upload", [False, True])
def test_train_ins_round_trip_keeps_every_scalar(mode: str, upload: bool) -> None:
    # Prepare
    rng = np.random.default_rng(0)
    w, m = kept_state(rng, (6, 5), 0.4)
    ins = TrainIns(
        round=123,
        state={"w": w, "b": np.ones(6, np.float32), "bn.num_batches_tracked": np.array(17, np.int64)},
        masks={"w": m},
        lr=0.0625,
        local_steps=5,
        batch_size=20,
        importance_mode=mode,
        upload_importance=upload,
    )
    # Execute
    out = decode_train_ins(encode_train_ins(ins))
    # Assert
    assert (out.round, out.lr, out.local_steps, out.batch_size) == (123, 0.0625, 5, 20)
    assert (out.importance_mode, out.upload_importance) == (mode, upload)
    np.testing.assert_array_equal(out.state["w"], w)
    np.testing.assert_array_equal(out.masks["w"], m)
    assert out.state["bn.num_batches_tracked"].shape == () and out.state["bn.num_batches_tracked"] == 17


@pytest.mark.parametrize("importance_dtype", ["float32", "float16"])
def test_train_res_round_trip_with_importance(importance_dtype: str) -> None:
    # Prepare
    rng = np.random.default_rng(1)
    w, m = kept_state(rng, (40, 30), 0.2)
    importance = {"w": rng.random((40, 30)).astype(np.float32), "b": rng.random(40).astype(np.float32)}
    res = TrainRes(3, 100, {"w": w, "b": rng.standard_normal(40).astype(np.float32)}, 1.5, 0.75, importance)
    # Execute
    out = decode_train_res(encode_train_res(res, {"w": m}, importance_dtype=importance_dtype), {"w": m})
    # Assert
    assert (out.client_id, out.num_examples, out.train_loss, out.compute_wall_s) == (3, 100, 1.5, 0.75)
    np.testing.assert_array_equal(out.state["w"], w)
    assert out.importance is not None and set(out.importance) == {"w", "b"}
    rtol = 0.0 if importance_dtype == "float32" else 2**-11  # values in [0, 1): float16 relative rounding
    for name, value in importance.items():
        assert out.importance[name].dtype == np.float32
        np.testing.assert_allclose(out.importance[name], value, rtol=rtol, atol=2**-25 if rtol else 0.0)


def test_train_res_without_importance_decodes_none_and_empty_importance_decodes_empty() -> None:
    # Prepare
    state = {"b": np.ones(3, np.float32)}
    # Execute
    without = decode_train_res(encode_train_res(TrainRes(0, 1, state, 0.0, 0.0), {}), {})
    empty = decode_train_res(encode_train_res(TrainRes(0, 1, state, 0.0, 0.0, importance={}), {}), {})
    # Assert
    assert without.importance is None
    assert empty.importance == {}


@pytest.mark.parametrize("level", [None, 3])
@pytest.mark.parametrize("importance_dtype", ["float32", "float16"])
def test_top_fraction_keeps_exactly_the_largest_importance_values(importance_dtype: str, level: int | None) -> None:
    # Prepare: distinct values, so the top k of each entry is unique
    rng = np.random.default_rng(5)
    w, m = kept_state(rng, (40, 30), 0.2)
    importance = {"w": rng.permutation(1200).reshape(40, 30).astype(np.float32) / 1200,
                  "b": rng.permutation(40).astype(np.float32) / 40, "one": np.array([0.5], np.float32)}
    state = {"w": w, "b": np.zeros(40, np.float32), "one": np.zeros(1, np.float32)}
    res = TrainRes(3, 100, state, 1.5, 0.75, importance)
    # Execute
    data = encode_train_res(res, {"w": m}, importance_dtype=importance_dtype, level=level, importance_top_fraction=0.1)
    out = decode_train_res(data, {"w": m})
    # Assert: k = ceil(0.1 n) = 120, 4 and 1 values survive, the largest ones; everything else is exactly 0
    assert out.importance is not None and set(out.importance) == set(importance)
    np.testing.assert_array_equal(out.state["w"], w)
    for name, k in (("w", 120), ("b", 4), ("one", 1)):
        value, got = importance[name], out.importance[name]
        top = value >= np.sort(value, axis=None)[-k]
        assert got.dtype == np.float32 and got.shape == value.shape
        assert np.count_nonzero(top) == k
        np.testing.assert_array_equal(got[~top], 0.0)
        rtol = 0.0 if importance_dtype == "float32" else 2**-11
        np.testing.assert_allclose(got[top], value[top], rtol=rtol)


def test_top_fraction_ties_keep_the_lower_positions() -> None:
    # Prepare: k = ceil(0.5 · 6) = 3; the value 2 is largest, then three 1s compete for two places
    res = TrainRes(0, 1, {"w": np.zeros(6, np.float32)}, 0.0, 0.0,
                   {"w": np.array([1, 0, 1, 2, 0, 1], np.float32)})
    # Execute
    out = decode_train_res(encode_train_res(res, {}, importance_top_fraction=0.5), {})
    # Assert: the 1s at positions 0 and 2 win over position 5
    np.testing.assert_array_equal(out.importance["w"], [1, 0, 1, 2, 0, 0])


def test_top_fraction_count_is_not_inflated_by_float_rounding() -> None:
    # Prepare: 0.07 · 100 = 7.000000000000001 in float64, whose ceiling would be 8
    res = TrainRes(0, 1, {"w": np.zeros(100, np.float32)}, 0.0, 0.0, {"w": np.arange(1, 101, dtype=np.float32)})
    # Execute
    out = decode_train_res(encode_train_res(res, {}, importance_top_fraction=0.07), {})
    # Assert: the 7 largest, at positions 93..99
    np.testing.assert_array_equal(np.flatnonzero(out.importance["w"]), np.arange(93, 100))


def test_top_fraction_shrinks_the_importance_upload_in_proportion() -> None:
    # Prepare: 100,000 float32 importance values (400 kB dense), random order
    rng = np.random.default_rng(6)
    state = {"w": np.zeros(100_000, np.float32)}
    res = TrainRes(0, 1, state, 0.0, 0.0, {"w": rng.random(100_000).astype(np.float32)})
    base = len(encode_train_res(TrainRes(0, 1, state, 0.0, 0.0), {}, level=None))
    # Execute
    sizes = {f: len(encode_train_res(res, {}, level=None, importance_top_fraction=f)) - base
             for f in (1.0, 0.3, 0.1, 0.01)}
    # Assert: dense = 15-byte entry + 4 bytes a value; top-k = k values + positions at about H(f) bits a weight
    assert sizes[1.0] == 19 + 400_000
    for f in (0.3, 0.1, 0.01):
        ratio = sizes[f] / sizes[1.0]
        bound = information_bound_bits(100_000, math.ceil(f * 100_000)) / 8 / sizes[1.0]
        assert f < ratio < 1.05 * bound + 0.001, (f, ratio, bound)


def test_dense_importance_entries_keep_their_layout() -> None:
    # Prepare: importance_top_fraction=1.0 must write exactly the old dense entry
    res = TrainRes(0, 1, {"w": np.zeros(4, np.float32)}, 0.0, 0.0, {"w": np.arange(4, dtype=np.float32)})
    # Execute
    default = encode_train_res(res, {}, level=None)
    explicit = encode_train_res(res, {}, level=None, importance_top_fraction=1.0)
    # Assert
    assert default == explicit
    table_end = len(default) - 16 - 16  # the body: 16 bytes of state values, then 16 of importance
    importance = np.arange(4, dtype="<f4").tobytes()
    assert default[table_end - 19 : table_end] == imp_entry(0, FLOAT32, FLOAT32, RAW, importance)
    assert default.endswith(np.arange(4, dtype="<f4").tobytes())


def test_top_k_importance_entry_matches_the_layout() -> None:
    # Prepare: 4 values, k = ceil(0.5 · 4) = 2: positions 1 and 3. Half the layer is above the 35 % Rice limit,
    # so the positions go as a 1-byte bitmask.
    res = TrainRes(0, 1, {"w": np.zeros(4, np.float32)}, 0.0, 0.0, {"w": np.array([0, 3, 1, 2], np.float32)})
    # Execute
    data = encode_train_res(res, {}, level=None, importance_top_fraction=0.5)
    # Assert: the table ends with the entry field (bit 31 set) and the position block; the body with the state
    # values (16 bytes), the 1-byte bitmask 0b1010 and the values 3, 2
    values = np.array([3, 2], "<f4").tobytes()
    table_tail = imp_entry(TOP_K | 0, FLOAT32, FLOAT32, RAW, values) + IMPORTANCE_POSITIONS.pack(
        BITMASK, 0, 2, RAW, 1, 1, crc(bytes([0b1010]))
    )
    body = bytes(16) + bytes([0b1010]) + np.array([3, 2], "<f4").tobytes()
    assert data.endswith(table_tail + body)
    np.testing.assert_array_equal(decode_train_res(data, {}).importance["w"], [0, 3, 0, 2])


@pytest.mark.parametrize("density", [0.0, 1e-5, 0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 1.0])
def test_mask_section_is_near_entropy_and_round_trips(density: float) -> None:
    # Prepare
    n_total = 100_000
    rng = np.random.default_rng(int(density * 1e6))
    w, m = kept_state(rng, (n_total,), density)
    n_kept = int(m.sum())
    # Execute
    data = encode_state({"w": w}, {"w": m}, level=None)
    decoded, masks = decode_state(data)
    # Assert
    np.testing.assert_array_equal(masks["w"], m)
    np.testing.assert_array_equal(decoded["w"], w)
    mask_bytes = len(data) - HEADER_BYTES - 58 - 4 * n_kept  # 58-byte table entry for a 1-d "w"
    entropy_bytes = (information_bound_bits(n_total, n_kept, value_bits=0)) / 8
    # Rice codes are within ~1 % of H(d) for random masks, and a bitmask (1 bit/weight) is taken when
    # nothing beats it: between densities 0.35 and 0.65, H(d) > 0.93. +2 bytes: padding of the two streams.
    assert mask_bytes <= min(1.02 * entropy_bytes + 2, math.ceil(n_total / 8))


def test_rice_handles_a_single_kept_weight_far_into_a_large_layer() -> None:
    # Prepare: one gap of 2**20 - 1 needs a large Rice parameter
    w = np.zeros(2**20, np.float32)
    w[-1] = 3.0
    m = w != 0
    # Execute
    decoded, masks = decode_state(encode_state({"w": w}, {"w": m}))
    # Assert
    np.testing.assert_array_equal(masks["w"], m)
    assert decoded["w"][-1] == 3.0


def test_known_masks_are_used_when_masks_are_omitted() -> None:
    # Prepare
    rng = np.random.default_rng(2)
    w, m = kept_state(rng, (30, 20), 0.1)
    ins = TrainIns(1, {"w": w}, {"w": m}, 0.1, 5, 10)
    # Execute
    with_masks = encode_train_ins(ins, include_masks=True)
    without = encode_train_ins(ins, include_masks=False)
    out = decode_train_ins(without, known_masks={"w": m})
    # Assert
    assert len(without) < len(with_masks)
    assert out.masks["w"] is m  # the receiver's own array, not a copy
    np.testing.assert_array_equal(out.state["w"], w)


def test_known_masks_are_ignored_when_the_message_sends_its_masks() -> None:
    # Prepare: after a reconfiguration the message's mask is new; the stale known mask must not be used
    new_mask = np.array([True, True, False])
    old_mask = np.array([False, True, True])
    ins = TrainIns(1, {"w": np.array([1, 2, 3], np.float32)}, {"w": new_mask}, 0.1, 5, 10)
    # Execute
    out = decode_train_ins(encode_train_ins(ins), known_masks={"w": old_mask})
    # Assert
    np.testing.assert_array_equal(out.masks["w"], new_mask)
    np.testing.assert_array_equal(out.state["w"], [1.0, 2.0, 0.0])


def test_compressible_values_are_compressed_and_incompressible_ones_are_sent_raw() -> None:
    # Prepare: constant values compress; uniform random bit patterns (finite float32) do not
    rng = np.random.default_rng(3)
    constant = np.full(300_000, 0.5, np.float32)
    noise = rng.integers(0, 2**31, size=300_000, dtype=np.uint32).view(np.float32)
    noise[~np.isfinite(noise)] = 0.0
    # Execute
    constant_bytes = len(encode_state({"x": constant}, {}))
    noise_bytes = len(encode_state({"x": noise}, {}))
    # Assert
    assert constant_bytes < 0.01 * constant.nbytes
    assert noise_bytes == HEADER_BYTES + 58 + noise.nbytes  # raw: compression would not have helped


# ---------------------------------------------------------------------------------------------------------------
# Byte layout worked by hand
# ---------------------------------------------------------------------------------------------------------------


def test_bitmask_message_matches_the_documented_layout_byte_for_byte() -> None:
    # Prepare: 3 of 8 kept (density 0.375 > 0.35, so a bitmask); flat positions 0, 2, 7
    w = np.array([[1, 0, 3, 0], [0, 0, 0, 8]], np.float32)
    m = w != 0
    # bits 0, 2 and 7 of one byte, least significant first: 1 + 4 + 128 = 0x85
    values = struct.pack("<3f", 1.0, 3.0, 8.0)
    table = (
        b"\x01\x00" + b"w" + bytes([FLOAT32, 2]) + struct.pack("<2Q", 2, 4)
        + ENTRY_TAIL.pack(BITMASK, 0, 3, RAW, 1, 1, crc(b"\x85"), FLOAT32, RAW, 12, crc(values))
    )  # 2 + 1 + 2 + 16 + 45 = 66 bytes
    fixed = FIXED.pack(b"PFL1", 2, KIND_STATE, RAW, 1, 0, 66, 66, crc(table))
    expected = fixed + struct.pack("<I", crc(fixed)) + table + b"\x85" + values
    # Execute
    data = encode_state({"w": w}, {"w": m}, level=None)
    # Assert
    assert len(data) == 36 + 4 + 66 + 1 + 12 == 119
    assert data == expected


def test_rice_message_matches_the_documented_layout_byte_for_byte() -> None:
    # Prepare: 2 of 100 kept at flat positions 3 and 40: gaps g = 3 - (-1) - 1 = 3 and 40 - 3 - 1 = 36.
    # Mean gap + 1 = 20.5, 20.5·ln 2 = 14.2, so k0 = 3 and k ∈ {2, 3, 4} cost 1+2, 1+1, 1+1 bytes: k = 3.
    # Remainders 3 = 0b011 and 36 & 7 = 4 = 0b100, LSB first: bits 1,1,0, 0,0,1 -> 0b00100011 = 0x23.
    # Quotients 0 and 36 >> 3 = 4: one bits at 0 and 0 + 1 + 4 = 5 -> 0b00100001 = 0x21.
    w = np.zeros((10, 10), np.float32)
    w.flat[3], w.flat[40] = 0.5, -2.0
    values = struct.pack("<2f", 0.5, -2.0)
    table = (
        b"\x01\x00" + b"w" + bytes([FLOAT32, 2]) + struct.pack("<2Q", 10, 10)
        + ENTRY_TAIL.pack(RICE_KEPT, 3, 2, RAW, 2, 2, crc(b"\x23\x21"), FLOAT32, RAW, 8, crc(values))
    )
    fixed = FIXED.pack(b"PFL1", 2, KIND_STATE, RAW, 1, 0, 66, 66, crc(table))
    expected = fixed + struct.pack("<I", crc(fixed)) + table + b"\x23\x21" + values
    # Execute
    data = encode_state({"w": w}, {"w": w != 0}, level=None)
    # Assert
    assert len(data) == 36 + 4 + 66 + 2 + 8 == 116
    assert data == expected


def test_train_ins_with_full_mask_and_int64_scalar_matches_the_layout() -> None:
    # Prepare: density 1 costs no mask bytes; a 0-d int64 entry has no shape fields
    ins = TrainIns(
        round=7,
        state={"w": np.array([1, 2, 3], np.float32), "n": np.array(5, np.int64)},
        masks={"w": np.ones(3, bool)},
        lr=0.5,
        local_steps=5,
        batch_size=10,
        importance_mode="legacy_last_step",
        upload_importance=True,
    )
    w_values, n_values = struct.pack("<3f", 1, 2, 3), struct.pack("<q", 5)
    w_table = b"\x01\x00w" + bytes([FLOAT32, 1]) + struct.pack("<Q", 3) + ENTRY_TAIL.pack(
        ALL_ONES, 0, 3, RAW, 0, 0, 0, FLOAT32, RAW, 12, crc(w_values)
    )  # 2 + 1 + 2 + 8 + 45 = 58 bytes; the empty mask section's CRC32 is 0
    n_table = b"\x01\x00n" + bytes([INT64, 0]) + ENTRY_TAIL.pack(
        DENSE, 0, 1, RAW, 0, 0, 0, INT64, RAW, 8, crc(n_values)
    )  # 50
    table = w_table + n_table
    fixed_and_scalars = FIXED.pack(b"PFL1", 2, KIND_INS, RAW, 2, 0, 108, 108, crc(table)) + INS_SCALARS.pack(
        7, 0.5, 5, 10, 2, 1
    )  # 36 + 34 bytes
    expected = fixed_and_scalars + struct.pack("<I", crc(fixed_and_scalars)) + table + w_values + n_values
    # Execute
    data = encode_train_ins(ins, level=None)
    # Assert
    assert len(data) == 36 + 34 + 4 + 108 + 12 + 8 == 202
    assert data == expected


def test_omitting_masks_saves_exactly_the_mask_section() -> None:
    # Prepare: the bitmask case above: one mask byte
    w = np.array([[1, 0, 3, 0], [0, 0, 0, 8]], np.float32)
    # Execute
    with_mask = encode_state({"w": w}, {"w": w != 0}, include_masks=True, level=None)
    without = encode_state({"w": w}, {"w": w != 0}, include_masks=False, level=None)
    # Assert
    assert len(with_mask) - len(without) == 1
    assert without[HEADER_BYTES + 21] == KNOWN  # the mask code follows name length, name, dtype, ndim, shape


def test_train_res_with_importance_matches_the_layout() -> None:
    # Prepare
    res = TrainRes(9, 30, {"w": np.array([0, 2], np.float32)}, 0.25, 1.0, {"w": np.array([4, 8], np.float32)})
    m = {"w": np.array([False, True])}
    values, importance = struct.pack("<f", 2), struct.pack("<2f", 4, 8)
    table = (
        b"\x01\x00w" + bytes([FLOAT32, 1]) + struct.pack("<Q", 2)
        + ENTRY_TAIL.pack(KNOWN, 0, 1, RAW, 0, 0, 0, FLOAT32, RAW, 4, crc(values))
        + IMPORTANCE_ENTRY.pack(0, FLOAT32, FLOAT32, RAW, 8, crc(importance))
    )  # 58 + 19 bytes
    expected = header(KIND_RES, 1, 1, table, RES_SCALARS.pack(9, 30, 0.25, 1.0, 1)) + table + values + importance
    # Execute
    data = encode_train_res(res, m, level=None)
    # Assert
    assert data == expected


def test_information_bound_worked_by_hand() -> None:
    # Prepare / Execute / Assert: H(0.5) = 1, H(0.25) = 0.811278...
    assert information_bound_bits(8, 4) == 4 * 32 + 8
    assert information_bound_bits(4, 1, value_bits=16) == pytest.approx(16 + 4 * 0.8112781244591328)
    assert information_bound_bits(10, 10) == 320.0
    assert information_bound_bits(10, 0) == 0.0
    assert information_bound_bits(0, 0) == 0.0
    with pytest.raises(ValueError):
        information_bound_bits(3, 4)


# ---------------------------------------------------------------------------------------------------------------
# Validation: every malformed message raises DecodeError
# ---------------------------------------------------------------------------------------------------------------


def test_hand_built_valid_message_decodes() -> None:
    # Prepare: the builder itself must produce valid messages, or the bad cases below prove nothing
    data = message([entry(), entry(b"m", mask_code=BITMASK, n_kept=2, mask=b"\x05", shape=(3,))])
    # Execute
    state, masks = decode_state(data)
    # Assert
    np.testing.assert_array_equal(state["w"], [0, 1, 2, 3])
    np.testing.assert_array_equal(state["m"], [0, 0, 1])
    np.testing.assert_array_equal(masks["m"], [True, False, True])


BAD_MESSAGES = {
    # header
    "bad magic": (message([entry()], magic=b"PFL0"), "magic"),
    "pickle stream": (b"\x80\x04\x95" + bytes(40), "magic"),
    "future version": (message([entry()], version=3), "version"),
    "version 1, without checksums": (message([entry()], version=1), "no longer accepted"),
    "empty": (b"", "truncated"),
    "kind mismatch": (message([entry()], kind=KIND_INS, scalars=ins_scalars()), "STATE"),
    # layer table
    "name not UTF-8": (message([entry(name=b"\xff\xfe")]), "UTF-8"),
    "empty name": (message([entry(name=b"")]), "non-empty"),
    "duplicate names": (message([entry(), entry()]), "unique"),
    "unknown dtype code": (message([entry(dtype=10)]), "dtype"),
    "dtype code 0": (message([entry(dtype=0)]), "dtype"),
    "too many dims": (message([entry(shape=(1,) * 33)]), "dimensions"),
    "empty entry with a huge dim": (message([entry(shape=(0, 2**64 - 1), values=b"")]), "max_elements_per_layer"),
    "unknown mask code": (message([entry(mask_code=6)]), "mask code"),
    "dense entry with other wire dtype": (message([entry(wire=FLOAT16, values=bytes(8))]), "dense"),
    "dense entry with n_kept < numel": (message([entry(n_kept=3)]), "dense"),
    "masked int64 entry": (
        message([entry(dtype=INT64, mask_code=ALL_ONES, values=bytes(32))]), "float"),
    "rice k on a bitmask": (message([entry(mask_code=BITMASK, rice_k=2, mask=b"\x0f")]), "rice k"),
    "rice k above 31": (message([entry(mask_code=RICE_KEPT, rice_k=32, n_kept=0, values=b"")]), "rice k"),
    # a gap in a layer of 4 is below 4 = 2**2, so k = 3 (4.bit_length()) is the most a 4-weight layer accepts
    "rice k above the layer's bit length": (
        message([entry(mask_code=RICE_KEPT, rice_k=4, n_kept=0, values=b"")]), "rice k <= 3"),
    "n_kept above numel": (message([entry(mask_code=BITMASK, n_kept=5, mask=b"\x0f", values=bytes(20))]), "kept"),
    "all-ones with a pruned weight": (
        message([entry(mask_code=ALL_ONES, n_kept=3, values=bytes(12))]), "all-ones"),
    "bitmask of the wrong length": (message([entry(mask_code=BITMASK, mask=b"\x0f\x00")]), "mask bytes"),
    "unknown section codec": (message([entry(values_codec=3)]), "codec"),
    "compressed section not smaller": (message([entry(values_codec=ZSTD)]), "compressed size"),
    "values section shorter than n_kept": (message([entry(values=bytes(12))]), "stored"),
    "trailing table bytes": (header(KIND_STATE, 1, 0, entry()[0] + b"\x00") + entry()[0] + b"\x00", "layer table"),
    "table longer than its entries allow": (header(KIND_STATE, 0, 0, b"\x00") + b"\x00", "can take"),
    "more importance than entries": (header(KIND_STATE, 0, 1, b""), "importance"),
    "importance in a state message": (
        message([entry()], importance=[(imp_entry(0, FLOAT32, FLOAT32, RAW, bytes(16)), bytes(16))]),
        "importance"),
    # values
    "bool byte 2": (message([entry(dtype=BOOL, values=b"\x00\x01\x02\x00")]), "bool"),
    "NaN value": (message([entry(values=struct.pack("<4f", 0, 1, math.nan, 3))]), "finite"),
    "inf kept value": (
        message([entry(mask_code=BITMASK, n_kept=1, mask=b"\x01", values=struct.pack("<f", math.inf))]),
        "finite"),
    # masks
    "bitmask count differs from n_kept": (
        message([entry(mask_code=BITMASK, n_kept=2, mask=b"\x07", values=bytes(8))]), "bitmask has 3"),
    "bitmask padding bits set": (
        message([entry(mask_code=BITMASK, n_kept=2, mask=b"\x13", values=bytes(8))]), "padding"),
    "rice codes fewer than n_kept": (
        message([entry(shape=(100,), mask_code=RICE_KEPT, rice_k=3, n_kept=2, mask=b"\x23\x01", values=bytes(8))]),
        "Rice codes"),
    "rice position out of range": (
        # remainders 3, 0 (0x03); quotients 0, 12 (one bits 0 and 13): gaps 3 and 96, positions 3 and 100
        message([entry(shape=(100,), mask_code=RICE_KEPT, rice_k=3, n_kept=2, mask=b"\x03\x01\x20",
                       values=bytes(8))]),
        "positions below 100"),
    "rice gap of 103 in a layer of 100": (
        # one code: remainder 7 (0x07), quotient 12 (one bit 12): g = 12·8 + 7 = 103; q passes its bound
        message([entry(shape=(100,), mask_code=RICE_KEPT, rice_k=3, n_kept=1, mask=b"\x07\x00\x10",
                       values=bytes(4))]),
        "gap exceeds"),
    "rice gap above the layer size": (
        # quotient 13 (one bit 14): 13 > 99 >> 3, rejected before shifting
        message([entry(shape=(100,), mask_code=RICE_KEPT, rice_k=3, n_kept=2, mask=b"\x23\x01\x40",
                       values=bytes(8))]),
        "gap exceeds"),
    "rice unary trailing zero byte": (
        message([entry(shape=(100,), mask_code=RICE_KEPT, rice_k=3, n_kept=2, mask=b"\x23\x21\x00",
                       values=bytes(8))]),
        "trailing zero"),
    "rice remainder padding set": (
        message([entry(shape=(100,), mask_code=RICE_KEPT, rice_k=3, n_kept=2, mask=b"\xa3\x21", values=bytes(8))]),
        "padding"),
    "rice bytes for zero codes": (
        message([entry(shape=(100,), mask_code=RICE_KEPT, rice_k=3, n_kept=0, mask=b"\x00", values=b"")]),
        "no bytes"),
    "mask bytes on a known mask": (message([entry(mask_code=KNOWN, mask=b"\x0f")]), "mask bytes"),
    # framing
    "trailing byte": (message([entry()]) + b"\x00", "trailing"),
}


@pytest.mark.parametrize("case", sorted(BAD_MESSAGES))
def test_malformed_state_message_raises_decode_error(case: str) -> None:
    # Prepare
    data, expected_text = BAD_MESSAGES[case]
    # Execute / Assert
    with pytest.raises(DecodeError, match=expected_text):
        decode_state(data)


def test_non_finite_values_are_accepted_when_not_required() -> None:
    # Prepare
    data = message([entry(values=struct.pack("<4f", 0, 1, math.nan, -math.inf))])
    # Execute
    state, _ = decode_state(data, require_finite=False)
    # Assert
    assert np.isnan(state["w"][2]) and state["w"][3] == -math.inf


@pytest.mark.parametrize(
    ("scalars", "expected_text"),
    [
        (ins_scalars(round_=-1), "round"),
        (ins_scalars(lr=math.nan), "lr"),
        (ins_scalars(lr=-0.1), "lr"),
        (ins_scalars(batch=-3), "batch_size"),
        (ins_scalars(mode=3), "importance_mode"),
        (ins_scalars(up=2), "upload_importance"),
        (ins_scalars()[:-1], "checksum"),  # one byte short: the header checksum is read a byte early
    ],
)
def test_bad_train_ins_scalars_raise_decode_error(scalars: bytes, expected_text: str) -> None:
    # Prepare
    data = message([entry()], kind=KIND_INS, scalars=scalars)
    # Execute / Assert
    with pytest.raises(DecodeError, match=expected_text):
        decode_train_ins(data)


@pytest.mark.parametrize(
    ("scalars", "expected_text"),
    [
        (res_scalars(client=-1), "client_id"),
        (res_scalars(n=-5), "num_examples"),
        (res_scalars(loss=math.inf), "train_loss"),
        (res_scalars(wall=-1.0), "compute_wall_s"),
        (res_scalars(wall=math.nan), "compute_wall_s"),
        (res_scalars(has_imp=7), "has_importance"),
    ],
)
def test_bad_train_res_scalars_raise_decode_error(scalars: bytes, expected_text: str) -> None:
    # Prepare
    data = message([entry()], kind=KIND_RES, scalars=scalars)
    # Execute / Assert
    with pytest.raises(DecodeError, match=expected_text):
        decode_train_res(data, {})


def test_bad_importance_entries_raise_decode_error() -> None:
    # Prepare
    cases = {
        # index past the entries
        "index": [(imp_entry(2, FLOAT32, FLOAT32, RAW, bytes(16)), bytes(16))],
        # two entries for state entry 0 (needs n_importance <= n_entries, so two state entries)
        "one importance entry": [(imp_entry(0, FLOAT32, FLOAT32, RAW, bytes(16)), bytes(16))] * 2,
        # int importance
        "float dtypes": [(imp_entry(0, INT32, INT32, RAW, bytes(16)), bytes(16))],
    }
    for expected_text, importance in cases.items():
        data = message([entry(), entry(b"v")], kind=KIND_RES, scalars=res_scalars(has_imp=1), importance=importance)
        # Execute / Assert
        with pytest.raises(DecodeError, match=expected_text):
            decode_train_res(data, {})
    # Top-k entries: a position block and a positions section before the values
    top = lambda code, k, n_top, positions, n_values=None, raw=None: (  # noqa: E731
        imp_entry(TOP_K | 0, FLOAT32, FLOAT32, RAW, bytes(4 * (n_top if n_values is None else n_values)))
        + IMPORTANCE_POSITIONS.pack(
            code, k, n_top, RAW, len(positions), len(positions) if raw is None else raw, crc(positions)
        ),
        positions + bytes(4 * (n_top if n_values is None else n_values)),
    )
    top_cases = {
        # the state entry has 4 elements, not 5
        "5 values in a shape of 4": top(BITMASK, 0, 5, bytes([0b1111]), n_values=4),
        # a known mask is no way to send positions
        "position code": top(KNOWN, 0, 2, b""),
        # the dense code neither
        "position code in 2": top(DENSE, 0, 4, b""),
        # all-ones needs k = numel
        "all-ones mask but 2 of 4": top(ALL_ONES, 0, 2, b""),
        # bitmask with 3 bits set, table says 2
        "bitmask has 3": top(BITMASK, 0, 2, bytes([0b0111])),
        # bitmask padding bits set
        "padding": top(BITMASK, 0, 2, bytes([0b10011])),
        # bitmask of 2 bytes for 4 elements
        "positions bytes": top(BITMASK, 0, 2, bytes(2)),
        # rice k on a bitmask
        "rice k": top(BITMASK, 3, 2, bytes([0b0011])),
        # rice: two codes expected (gaps 0, 0 with k = 0 → unary 0b11), only one one bit
        "expected 2 Rice codes": top(RICE_KEPT, 0, 2, bytes([0b01])),
        # rice: gap 4 in a 4-element entry (unary 0000 1, then gap 0 → 1)
        "gap exceeds": top(RICE_KEPT, 0, 2, bytes([0b110000])),
    }
    for expected_text, importance in top_cases.items():
        data = message([entry(), entry(b"v")], kind=KIND_RES, scalars=res_scalars(has_imp=1), importance=[importance])
        # Execute / Assert
        with pytest.raises(DecodeError, match=expected_text):
            decode_train_res(data, {})
    no_flag = message([entry()], kind=KIND_RES, scalars=res_scalars(has_imp=0),
                      importance=[(imp_entry(0, FLOAT32, FLOAT32, RAW, bytes(16)), bytes(16))])
    with pytest.raises(DecodeError, match="has_importance is 0"):
        decode_train_res(no_flag, {})


def small_messages() -> dict[str, tuple[bytes, object]]:
    """Valid messages of each kind (with compressed sections) and a decoder that accepts each."""
    rng = np.random.default_rng(4)
    w, m = kept_state(rng, (12, 10), 0.1)
    v, vm = kept_state(rng, (40,), 0.5)
    state = {"w": w, "v": v, "b": np.zeros(64, np.float32), "n": np.array(3, np.int64)}
    masks = {"w": m, "v": vm}
    ins = TrainIns(5, state, masks, 0.1, 5, 10, "round_sum", True)
    res = TrainRes(2, 50, state, 0.5, 0.1, {"w": np.ones((12, 10), np.float32), "b": np.zeros(64, np.float32)})
    res_top = TrainRes(2, 50, state, 0.5, 0.1, {"w": rng.random((12, 10)).astype(np.float32)})
    return {
        "ins": (encode_train_ins(ins), lambda d: decode_train_ins(d)),
        "ins-known": (encode_train_ins(ins, include_masks=False), lambda d: decode_train_ins(d, masks)),
        "res": (encode_train_res(res, masks), lambda d: decode_train_res(d, masks)),
        "res-top-k": (
            encode_train_res(res_top, masks, importance_top_fraction=0.2), lambda d: decode_train_res(d, masks)
        ),
        "state": (encode_state(state, masks, level=None), lambda d: decode_state(d)),
    }


@pytest.mark.parametrize("kind", ["ins", "ins-known", "res", "res-top-k", "state"])
def test_every_truncation_of_a_valid_message_raises_decode_error(kind: str) -> None:
    # Prepare
    data, decode = small_messages()[kind]
    decode(data)  # the full message is valid
    # Execute / Assert
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:end])


def test_decoders_reject_other_kinds_and_non_bytes() -> None:
    # Prepare
    messages = small_messages()
    # Execute / Assert
    with pytest.raises(DecodeError, match="TRAIN_RES"):
        decode_train_res(messages["ins"][0], {})
    with pytest.raises(DecodeError, match="TRAIN_INS"):
        decode_train_ins(messages["state"][0])
    with pytest.raises(DecodeError, match="bytes-like"):
        decode_state("PFL1")  # type: ignore[arg-type]
    # memoryview and bytearray inputs are accepted
    decode_state(memoryview(messages["state"][0]))
    decode_state(bytearray(messages["state"][0]))


def test_known_mask_problems_raise_decode_error() -> None:
    # Prepare
    w = np.array([1, 0, 2, 0], np.float32)
    m = w != 0
    data = encode_state({"w": w}, {"w": m}, include_masks=False)
    cases = {
        "omits its mask": None,
        "known_masks has none": {},
        "keeps 3": {"w": np.array([True, True, True, False])},  # wrong count
        "shape": {"w": np.ones((2, 2), bool)},
        "bool known mask": {"w": m.astype(np.float32)},
        "not masked entries": {"w": m, "extra": m},
    }
    # Execute / Assert
    for expected_text, known in cases.items():
        with pytest.raises(DecodeError, match=expected_text):
            decode_state(data, known_masks=known)


def test_unexpected_names_or_shapes_raise_decode_error() -> None:
    # Prepare
    data = encode_state({"w": np.ones((2, 3), np.float32), "b": np.ones(2, np.float32)}, {})
    # Execute / Assert
    decode_state(data, expected_shapes={"w": (2, 3), "b": (2,)})  # exact match passes
    with pytest.raises(DecodeError, match=r"missing \['c'\]"):
        decode_state(data, expected_shapes={"w": (2, 3), "b": (2,), "c": (1,)})
    with pytest.raises(DecodeError, match=r"unexpected \['b'\]"):
        decode_state(data, expected_shapes={"w": (2, 3)})
    with pytest.raises(DecodeError, match="other shape"):
        decode_state(data, expected_shapes={"w": (3, 2), "b": (2,)})


@pytest.mark.parametrize(
    ("limits", "expected_text"),
    [
        (DecodeLimits(max_message_bytes=100), "max_message_bytes"),
        (DecodeLimits(max_layers=1), "max_layers"),
        (DecodeLimits(max_elements_per_layer=999), "max_elements_per_layer"),
        (DecodeLimits(max_total_elements=1500), "max_total_elements"),
        (DecodeLimits(max_decompressed_bytes=3999), "max_decompressed_bytes"),
    ],
)
def test_oversized_messages_raise_decode_error(limits: DecodeLimits, expected_text: str) -> None:
    # Prepare: two entries of 1000 zeros (4000 bytes each, compressed to a few bytes)
    data = encode_state({"a": np.zeros(1000, np.float32), "b": np.zeros(1000, np.float32)}, {})
    decode_state(data, limits=DecodeLimits(max_elements_per_layer=1000, max_total_elements=2000))  # at the limits
    # Execute / Assert
    with pytest.raises(DecodeError, match=expected_text):
        decode_state(data, limits=limits)


def zstd_frame(payload: bytes, declared: int | None) -> bytes:
    """A zstd frame of ``payload`` whose header declares ``declared`` bytes (None: no size declared)."""
    frame = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(payload)
    if declared is None:
        return frame
    # Frame header descriptor (byte 4): set Frame_Content_Size_flag = 2 (4-byte field) after the window byte.
    descriptor, window = frame[4], frame[5:6]
    assert descriptor & 0xE0 == 0, "expected no size and no single-segment flag"
    return frame[:4] + bytes([descriptor | 0x80]) + window + struct.pack("<I", declared) + frame[6:]


def rle_frame(declared: int, n_blocks: int, block_bytes: int, window_log: int = 10) -> bytes:
    """A zstd frame declaring ``declared`` bytes whose RLE blocks hold ``n_blocks · block_bytes`` zero bytes.

    Built by hand from the frame format (RFC 8878): magic, a descriptor with a 4-byte content size and a window
    descriptor (window 2**window_log), then blocks with a 3-byte header (last flag, type 1 = RLE, size) and the
    one byte repeated. Four bytes a block: a few kB declare little and expand to megabytes.
    """
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0x80, (window_log - 10) << 3]) + struct.pack("<I", declared)
    for i in range(n_blocks):
        frame += (int(i == n_blocks - 1) | 1 << 1 | block_bytes << 3).to_bytes(3, "little") + b"\x00"
    return frame


def test_decompression_bombs_raise_decode_error() -> None:
    # Prepare: a 4000-byte values section (1000 float32) whose frame holds 40 MB of zeros
    bomb = bytes(40_000_000)
    cases = {
        # a window of 2 MiB for 4000 bytes of content: refused before decompressing (libzstd allocates it)
        "window of at most 4000 bytes": zstd_frame(bomb, declared=4000),
        "found no size": zstd_frame(bomb, declared=None),  # refused before decompressing
        "declaring 4000 bytes, found 40000000": zstd_frame(bomb, declared=40_000_000),
        # declares 4000 with an honest 1 KiB window, then expands to 900 blocks of 1 KiB (0.9 MB): the stream
        # stops at 4000 bytes; libzstd (its buffer is sized by the declared size) or our read limit refuses more
        "Destination buffer is too small|exactly 4000 bytes, found more": rle_frame(4000, 900, 1024),
        # declares 4000 and holds 3 KiB: libzstd checks the declared size at the frame's end
        "Data corruption detected|exactly 4000 bytes, found 3072": rle_frame(4000, 3, 1024),
    }
    for expected_text, frame in cases.items():
        assert len(frame) < 4000
        data = message([entry(shape=(1000,), values=frame, values_codec=ZSTD)])
        # Execute / Assert
        with pytest.raises(DecodeError, match=expected_text):
            decode_state(data)


def test_honest_hand_built_frame_decodes() -> None:
    # Prepare: the RLE frame builder must make valid frames, or the bomb cases above prove nothing
    data = message([entry(shape=(1024,), values=rle_frame(4096, 4, 1024), values_codec=ZSTD)])
    # Execute
    state, _ = decode_state(data)
    # Assert
    np.testing.assert_array_equal(state["w"], np.zeros(1024, np.float32))


def test_table_bombs_raise_before_decompressing() -> None:
    # Prepare: a compressed table declaring 1 GiB raw
    frame = zstandard.ZstdCompressor().compress(bytes(2**20))
    one_entry = header(KIND_STATE, 1, 0, frame, table_codec=ZSTD, table_raw=2**30) + frame
    no_entries = header(KIND_STATE, 0, 0, frame, table_codec=ZSTD, table_raw=2**20) + frame
    # Execute / Assert: one entry takes at most 2 + 65535 + 2 + 256 + 45 bytes; none takes 0
    with pytest.raises(DecodeError, match="above the 65840 bytes that 1 entries"):
        decode_state(one_entry)
    with pytest.raises(DecodeError, match="max_table_bytes=1000"):
        decode_state(one_entry, limits=DecodeLimits(max_table_bytes=1000))
    with pytest.raises(DecodeError, match="above the 0 bytes"):
        decode_state(no_entries)


def test_corrupt_zstd_frames_raise_decode_error() -> None:
    # Prepare
    good = zstandard.ZstdCompressor().compress(bytes(400))
    cases = {
        "zstd frame header": b"\x00" * 10,  # not a frame at all
        "corrupt": good[:-3] + b"\xff\xff\xff",  # body damaged
        "trailing": good[:-1] + b"",  # truncated frame still "smaller" but incomplete
    }
    for name, frame in cases.items():
        data = message([entry(shape=(100,), values=frame, values_codec=ZSTD)])
        # Execute / Assert
        with pytest.raises(DecodeError):
            decode_state(data)
    extra = message([entry(shape=(100,), values=good + b"\x00", values_codec=ZSTD)])
    with pytest.raises(DecodeError, match="trailing"):
        decode_state(extra)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=12), st.integers(0, 6), st.integers(0, 5))
def test_index_section_cannot_express_unsorted_or_duplicate_positions(raw: bytes, k: int, n_kept: int) -> None:
    # Prepare: gaps are coded minus one, so any accepted bytes give strictly increasing positions in range
    n_total = 64
    data = message([entry(shape=(n_total,), mask_code=RICE_KEPT, rice_k=k, n_kept=n_kept, mask=raw,
                          values=np.ones(n_kept, "<f4").tobytes())])
    # Execute
    try:
        state, masks = decode_state(data)
    except DecodeError:
        return
    # Assert
    assert int(masks["w"].sum()) == n_kept
    assert int(np.count_nonzero(state["w"])) == n_kept


# ---------------------------------------------------------------------------------------------------------------
# Encoder input checks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "masks", "kwargs", "expected_text"),
    [
        ({"w": np.ones(3, np.float32)}, {"x": np.ones(3, bool)}, {}, "name no state entry"),
        ({"w": np.ones(3, np.float32)}, {"w": np.ones(4, bool)}, {}, "must be bool of shape"),
        ({"w": np.ones(3, np.float32)}, {"w": np.ones(3, np.int8)}, {}, "must be bool of shape"),
        ({"w": np.ones(3, np.int64)}, {"w": np.ones(3, bool)}, {}, "must be float"),
        ({"w": np.ones(3, np.complex64)}, {}, {}, "does not carry"),
        ({"w": np.ones(3, object)}, {}, {}, "does not carry"),
        ({"": np.ones(3, np.float32)}, {}, {}, "non-empty"),
        ({"w": np.full(3, 1e6, np.float32)}, {"w": np.ones(3, bool)}, {"values_dtype": "float16"}, "range"),
        ({"w": np.ones(3, np.float32)}, {}, {"values_dtype": "bfloat16"}, "values_dtype"),
        ({"w": np.ones(3, np.float32)}, {}, {"level": 23}, "level"),
        ({"w": np.ones(3, np.float32)}, {}, {"level": 3.0}, "level"),
    ],
)
def test_encode_state_rejects_bad_inputs(state, masks, kwargs, expected_text: str) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=expected_text):
        encode_state(state, masks, **kwargs)


def test_encode_train_messages_reject_bad_inputs() -> None:
    # Prepare
    w = np.array([1.0, 2.0, 0.0], np.float32)
    m = np.array([True, False, False])
    # Execute / Assert
    with pytest.raises(ValueError, match="importance_mode"):
        encode_train_ins(TrainIns(0, {"w": w}, {"w": m}, 0.1, 1, 1, importance_mode="sum"))
    with pytest.raises(ValueError, match="do not fit"):
        encode_train_ins(TrainIns(2**63, {"w": w}, {}, 0.1, 1, 1))
    with pytest.raises(ValueError, match="pruned coordinates"):  # 2.0 sits at a pruned coordinate
        encode_train_res(TrainRes(0, 1, {"w": w}, 0.0, 0.0), {"w": m})
    with pytest.raises(ValueError, match="importance"):
        encode_train_res(TrainRes(0, 1, {"w": w}, 0.0, 0.0, {"w": np.ones(4, np.float32)}), {})
    with pytest.raises(ValueError, match="importance"):
        encode_train_res(TrainRes(0, 1, {"w": w}, 0.0, 0.0, {"v": np.ones(3, np.float32)}), {})
    for fraction in (0.0, 1.5, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match="importance_top_fraction"):
            encode_train_res(TrainRes(0, 1, {"w": w}, 0.0, 0.0), {}, importance_top_fraction=fraction)
    with pytest.raises(ValueError, match="NaN"):
        encode_train_res(TrainRes(0, 1, {"w": w}, 0.0, 0.0, {"w": np.array([1, np.nan, 0], np.float32)}), {},
                         importance_top_fraction=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_layers": -1},
        {"max_message_bytes": 1.5},
        {"max_total_elements": True},
        {"max_elements_per_layer": 2**31 + 1},  # above the format limit
        {"max_table_bytes": -5},
    ],
)
def test_decode_limits_reject_bad_values(kwargs: dict) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError):
        DecodeLimits(**kwargs)
