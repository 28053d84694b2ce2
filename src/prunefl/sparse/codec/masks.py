"""Mask and position coding: all-ones, bitmask and Golomb-Rice codes of flat boolean masks, both ways."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from prunefl.errors import DecodeError
from prunefl.sparse.codec.format import _MAX_RICE_K, _Entry, _MaskCode



# Rice coding beats a bitmask by 1 - H(p) bits per weight at minority fraction p (< 7 % for p > 0.35) while
# its cost grows with the number of positions: above this fraction the bitmask is taken without trying.
_RICE_MAX_FRACTION = 0.35


def information_bound_bits(n_total: int, n_kept: int, value_bits: int = 32) -> float:
    """Return the bits needed to send ``n_kept`` values and which of ``n_total`` positions they sit at.

    ``n_kept · value_bits + n_total · H(d)`` with density ``d = n_kept / n_total`` and binary entropy
    ``H(d) = -d·log2(d) - (1-d)·log2(1-d)`` (``H(0) = H(1) = 0``): incompressible values plus an ideal code
    for a random mask of that density. The benchmark compares codec sizes against it.

    Parameters
    ----------
    n_total : int
        Positions (weights in the layer), >= 0.
    n_kept : int
        Kept positions, in [0, n_total].
    value_bits : int
        Bits per value (default: 32).

    Returns
    -------
    float
        Bits.

    Raises
    ------
    ValueError
        If the counts are negative or ``n_kept > n_total``.

    Examples
    --------
    >>> information_bound_bits(8, 4, value_bits=32)  # 4·32 + 8·H(0.5) = 128 + 8
    136.0
    """
    if n_total < 0 or not 0 <= n_kept <= n_total:
        raise ValueError(f"need 0 <= n_kept <= n_total, got n_kept={n_kept}, n_total={n_total}")
    if n_kept in (0, n_total):
        return float(n_kept * value_bits)
    d = n_kept / n_total
    entropy_bits = -(d * math.log2(d) + (1.0 - d) * math.log2(1.0 - d))
    return n_kept * value_bits + n_total * entropy_bits


def _top_k_mask(flat: np.ndarray, k: int, name: str) -> np.ndarray:
    """Return a bool mask of the k largest values of ``flat``; among equal values the lower positions win."""
    n = flat.size
    if k >= n:
        return np.ones(n, dtype=bool)
    if np.isnan(flat).any():
        raise ValueError(f"importance of {name!r} has NaN values, which have no top-k order")
    threshold = np.partition(flat, n - k)[n - k]  # the k-th largest value
    top = flat > threshold
    ties = np.flatnonzero(flat == threshold)[: k - int(np.count_nonzero(top))]
    top[ties] = True
    return top


def _encode_mask(mask: np.ndarray, n_kept: int) -> tuple[_MaskCode, int, bytes, np.ndarray | None]:
    """Return (code, rice k, raw section, kept positions if computed) for a flat boolean mask."""
    n_total = mask.size
    if n_kept == n_total:
        return _MaskCode.ALL_ONES, 0, b"", None
    bitmask_bytes = (n_total + 7) // 8
    n_minority = min(n_kept, n_total - n_kept)
    if n_minority <= _RICE_MAX_FRACTION * n_total:
        kept_side = n_kept <= n_total - n_kept
        positions = np.flatnonzero(mask if kept_side else ~mask)
        gaps = np.diff(positions, prepend=-1) - 1
        rice_bytes, rice_k = _rice_best_k(gaps)
        if rice_bytes < bitmask_bytes:
            code = _MaskCode.RICE_KEPT if kept_side else _MaskCode.RICE_PRUNED
            return code, rice_k, _rice_encode(gaps, rice_k), positions if kept_side else None
    return _MaskCode.BITMASK, 0, np.packbits(mask, bitorder="little").tobytes(), None


def _rice_best_k(gaps: np.ndarray) -> tuple[int, int]:
    """Return (section bytes, k) of the cheapest Rice parameter for these gaps (ties: the smaller k)."""
    m = gaps.size
    if m == 0:
        return 0, 0
    # Golomb's optimum for geometric gaps of mean μ is about μ·ln 2; try the power of two below it and its
    # neighbours, with exact costs: ceil(m·k/8) remainder bytes + ceil((m + Σ q)/8) unary bytes.
    mean_gap = float(gaps.mean()) + 1.0
    k0 = int(math.floor(math.log2(max(mean_gap * math.log(2.0), 1.0))))
    best = None
    for k in range(max(0, k0 - 1), min(_MAX_RICE_K, k0 + 1) + 1):
        cost = (m * k + 7) // 8 + (m + int(np.sum(gaps >> k)) + 7) // 8
        if best is None or cost < best[0]:
            best = (cost, k)
    assert best is not None  # the range above is never empty
    return best


def _rice_encode(gaps: np.ndarray, k: int) -> bytes:
    """Rice-code non-negative gaps into [k-bit remainders][unary quotients], both LSB-first (package docstring)."""
    if gaps.size == 0:
        return b""
    remainder_bits = ((gaps[:, None] >> np.arange(k)) & 1).astype(np.uint8)  # (m, k), bit j of each remainder
    remainders = np.packbits(remainder_bits.reshape(-1), bitorder="little")
    # Each gap contributes q zero bits and a one bit: the one bits sit at cumsum(q + 1) - 1.
    terminators = np.cumsum((gaps >> k) + 1) - 1
    unary_bits = np.zeros(int(terminators[-1]) + 1, dtype=np.uint8)
    unary_bits[terminators] = 1
    return remainders.tobytes() + np.packbits(unary_bits, bitorder="little").tobytes()


def _decode_mask(
    e: _Entry, raw: bytes | bytearray | memoryview, known_masks: Mapping[str, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the flat boolean mask of a masked entry, and the sorted kept positions when they are at hand."""
    if e.mask_code == _MaskCode.KNOWN:
        assert known_masks is not None  # _check_entries required it
        return np.asarray(known_masks[e.name]).reshape(-1), None
    return _decode_positions(e.mask_code, e.rice_k, e.n_kept, e.numel, raw, f"entry {e.name!r} mask")


def _decode_positions(
    code: int, rice_k: int, n_kept: int, numel: int, raw: bytes | bytearray | memoryview, what: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a sent mask (any code but KNOWN): the flat mask, and the sorted kept positions when at hand."""
    if code == _MaskCode.ALL_ONES:
        return np.ones(numel, dtype=bool), None
    if code == _MaskCode.BITMASK:
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
        if bits[numel:].any():
            raise DecodeError(f"{what}: expected zero padding bits after bit {numel}, found ones")
        mask = bits[:numel].view(bool)
        found = int(np.count_nonzero(mask))
        if found != n_kept:
            raise DecodeError(f"{what}: table says {n_kept} kept coordinates, bitmask has {found}")
        return mask, None
    kept_side = code == _MaskCode.RICE_KEPT
    m = n_kept if kept_side else numel - n_kept
    positions = _rice_decode(raw, m, rice_k, numel, what)
    if kept_side:
        mask = np.zeros(numel, dtype=bool)
        mask[positions] = True
        return mask, positions
    mask = np.ones(numel, dtype=bool)
    mask[positions] = False
    return mask, None


_RICE_CHUNK_BYTES = 1024  # unary bytes decoded at a time (<= 8192 codes): transients stay near 400 kB


def _rice_decode(raw: bytes | bytearray | memoryview, m: int, k: int, n_total: int, what: str) -> np.ndarray:
    """Invert `_rice_encode`: return m strictly increasing positions in [0, n_total), as int32.

    The unary stream is decoded in chunks of `_RICE_CHUNK_BYTES`: besides the int32 result (4 bytes a code) and
    a copy of the remainder bytes, memory is a few hundred kB whatever the layer. With ``e_i`` the bit index of
    code i's terminating one bit, the quotients sum to ``Σ_{j<=i} q_j = e_i - i``, so position
    ``p_i = Σ_{j<=i} (g_j + 1) - 1 = (e_i - i)·2^k + Σ_{j<=i} r_j + i``: a chunk needs only its own codes and
    the running sum of the remainders before it.
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    if m == 0:
        if data.size:
            raise DecodeError(f"{what}: expected no bytes for zero Rice codes, found {data.size}")
        return np.zeros(0, dtype=np.int32)
    n_remainder_bytes = (m * k + 7) // 8  # len(raw) >= this was checked in _check_entries
    unary = data[n_remainder_bytes:]
    words = None
    if k:
        used_bits = (m * k) % 8
        if used_bits and int(data[n_remainder_bytes - 1]) >> used_bits:
            raise DecodeError(f"{what}: expected zero padding bits after the Rice remainders, found ones")
        padded = np.zeros(n_remainder_bytes + 8, dtype=np.uint8)  # 8 zero bytes: a word may run past the data
        padded[:n_remainder_bytes] = data[:n_remainder_bytes]
        words = np.ndarray(shape=(n_remainder_bytes + 1,), dtype="<u8", buffer=padded, strides=(1,))  # every byte
    positions = np.empty(m, dtype=np.int32)  # positions < n_total <= 2**31
    found, remainder_sum, last_one = 0, 0, -1
    # Overflow-free: e_i - i <= 8·len(unary) < 2**32 (the raw length was bounded by n_total), shifted by k <= 31,
    # plus a remainder sum below m·2**31 <= 2**62, plus i: below 2**63. Each gap is >= 0, so positions increase
    # strictly, and the last one of each chunk below n_total bounds them all.
    for start in range(0, unary.size, _RICE_CHUNK_BYTES):
        ends = np.flatnonzero(np.unpackbits(unary[start : start + _RICE_CHUNK_BYTES], bitorder="little").view(bool))
        count = ends.size
        if not count:
            continue
        if found + count > m:
            raise DecodeError(f"{what}: expected {m} Rice codes (one bits in the unary stream), found more")
        ends += 8 * start
        last_one = int(ends[-1])
        index = np.arange(found, found + count, dtype=np.int64)
        ends -= index
        ends <<= k
        if words is not None:
            fields = _read_bit_fields(words, index, k)
            np.cumsum(fields, out=fields)
            fields += remainder_sum
            remainder_sum = int(fields[-1])
            ends += fields
            del fields
        ends += index
        if int(ends[-1]) >= n_total:
            before = int(positions[found - 1]) if found else -1
            if int(np.diff(ends, prepend=before).max()) > n_total:  # a gap g = difference - 1 >= n_total
                raise DecodeError(f"{what}: a position gap exceeds the layer size {n_total}")
            raise DecodeError(f"{what}: expected positions below {n_total}, found {int(ends[-1])}")
        positions[found : found + count] = ends
        found += count
    if found != m:
        raise DecodeError(f"{what}: expected {m} Rice codes (one bits in the unary stream), found {found}")
    if last_one < 8 * unary.size - 8:
        raise DecodeError(f"{what}: unary stream has trailing zero bytes after its last code")
    return positions


def _read_bit_fields(words: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """Return the k-bit LSB-first fields number ``index`` (int64) of a bit stream (1 <= k <= 31), as int64.

    ``words`` holds the little-endian 8-byte word at every byte of the stream (zero-padded past its end).
    Field i starts at bit i·k: it is the word at byte (i·k) >> 3, shifted right by (i·k) & 7 and masked to k
    bits (7 + 31 < 64). Memory is a few words per field, in place where numpy allows.
    """
    starts = index * k
    fields = words[starts >> 3]
    starts &= 7
    fields >>= starts.view(np.uint64)
    fields &= np.uint64((1 << k) - 1)
    return fields.view(np.int64)
