"""Compact, safe wire codec for model states and train messages (spec §3.8-3.9, §10 items 1-2, §12 item 12).

A message is plain little-endian binary: fixed struct fields, a layer table and raw array sections. Nothing is
pickled, ``eval``-ed or loaded with ``allow_pickle``; the decoder validates every field against the format and
against `DecodeLimits` before it allocates, and raises only `prunefl.errors.DecodeError`.

What a decoder trusts (format version 2)
----------------------------------------
* **Integrity.** A CRC32 (``zlib.crc32``) covers the fixed header and scalars, another the stored layer table,
  and one each stored section; each is verified before the bytes it covers are used. CRC32 detects every
  single-bit error (and every burst up to 32 bits) in what it covers, and magic, version and kind, read before
  the header checksum, are each rejected on their own when wrong: every single-bit flip of a message is
  rejected. A CRC is no signature: it catches corruption, not a forger, whom the bounds below are for.
* **Memory.** Every size is bounded before anything is allocated: shapes (dims, each dim, elements per entry
  and in total) by `DecodeLimits`, and by ``expected_shapes`` when the receiver knows the model (a server
  passes the shapes it sent); the raw length of a values section is implied by its count and dtype, that of a
  mask by its code, count and Rice ``k`` (itself at most ``numel.bit_length()``); the table by its entry
  counts. A zstd section must declare its raw length and a window no larger, must end where the section ends,
  and is decompressed in a stream, in chunks, never past it (memory follows what a frame holds, not what it
  declares). Decoding then needs O(decoded arrays) memory: Rice remainders are read as words, not a byte a bit.
* **One exception type.** Every malformed input raises `DecodeError`; any other exception inside the decoder
  (a bug) is turned into one whose message starts with "malformed message (no explicit check caught it)".

What is sent per state entry (layer)
------------------------------------
* **Masked entry** (a key of ``masks``): only the *kept* values, in row-major mask order, as float32 (option
  float16), plus the mask itself when ``include_masks`` is true. Pruned coordinates decode as exactly 0: the
  server's stale values there never travel (the client zeroes them anyway, spec §3.8) and a client's are 0.
* **Unmasked entry** (biases, BN statistics, ``num_batches_tracked``): all values, losslessly in their dtype.
* **Importance** (train-res, reconfiguration rounds): for every entry it names, float32 (option float16); dense,
  or (option ``importance_top_fraction`` f < 1) *top-k*: only the ``k = ceil(f·n)`` largest values of the entry
  (ties: lower flat position first), their positions coded like a mask (the choices below, except ``KNOWN``),
  and the values in row-major position order. The receiver fills the other positions with 0.

Mask encoding, chosen per entry as the smallest of:

* ``ALL_ONES``: no bytes (density 1 costs nothing).
* ``BITMASK``: ``numpy.packbits(mask.ravel(), bitorder="little")``: bit ``j`` of the mask is bit ``j % 8``
  (least significant first) of byte ``j // 8``; padding bits of the last byte are 0. One bit per weight.
* ``RICE_KEPT`` / ``RICE_PRUNED``: the sorted flat positions of the kept (or, when fewer, the pruned)
  coordinates, delta-encoded as gaps ``g_i = p_i - p_{i-1} - 1 >= 0`` (``p_{-1} = -1``) and Golomb-Rice coded
  with parameter ``k``: ``g = q·2^k + r``. The ``k``-bit remainders and the unary quotients go into two separate
  bit streams (both LSB-first, zero-padded to whole bytes): ``[remainders: ceil(m·k/8) bytes][unary: rest]``,
  where the unary stream holds, for each gap, ``q`` zero bits and a terminating one bit. Separate streams make
  both directions vectorised: remainders are a fixed-width ``(m, k)`` bit matrix, and the quotients are the
  differences of the positions of the one bits (``numpy.flatnonzero``). Gaps of a random mask are geometric,
  and a Rice code with the best ``k`` is within 1 % of the entropy ``H(d)`` bits per weight (measured: 0.0810
  vs 0.0807 bits at d = 0.01, 0.4756 vs 0.4690 at d = 0.1), where a bitmask always costs 1 bit. At d = 0.01
  the alternatives cost more: byte-aligned LEB128 gaps +26 % over ``H(d)`` (1.28 bytes per gap against 8.1
  bits of entropy, computed), a fixed-width uint16 gap +98 %, zstd on a bitmask +77 % (measured). ``k`` is
  the cheapest (by exact size) of the three powers of two around Golomb's optimum ``mean gap · ln 2``. Coding
  ``g`` (the difference minus one) makes every bit pattern a strictly increasing position list, so unsorted
  or duplicate indices cannot be expressed; the decoder checks the range and the stream lengths. Rice is only
  tried when the minority side is at most 35 % of the layer; above that ``H`` > 0.93 and the bitmask wins.
* ``KNOWN``: the mask is not sent; the receiver uses the one it has (``known_masks``), and the kept count in
  the table must match it.

Compression (zstd, level configurable, default 3) is tried per section and kept only where it makes the
section smaller, with a codec flag per section. The table and mask sections are compressed as they are.
Values are byte-shuffled first (all first bytes of the elements, then all second bytes, ...): the sign and
exponent bytes of floats are then contiguous and compress well, while mantissa bytes stay incompressible
(measured on N(0, 1) float32: zstd alone 92.5 %, shuffled 85 %, and 2.7x faster). Sections over
``4 · _SAMPLE_ELEMENTS`` elements are first tried on a sample, so incompressible values cost little time.

Byte layout (format version 2; every integer little-endian, ``uN``/``iN`` = unsigned/signed N-bit)
--------------------------------------------------------------------------------------------------
::

    message = fixed header | kind scalars | header checksum | layer table | body

    fixed header (36 bytes)
      off  size  type  field
      0    4     -     magic b"PFL1"
      4    2     u16   format version (1)
      6    1     u8    kind: 1 train-ins, 2 train-res, 3 state
      7    1     u8    table codec: 0 raw, 1 zstd
      8    4     u32   n_entries: state entries in the table
      12   4     u32   n_importance: importance entries (0 unless train-res with importance)
      16   8     u64   table stored length (bytes in the message)
      24   8     u64   table raw length (after decompression; equals stored length when raw)
      32   4     u32   table checksum: CRC32 of the table's stored bytes

    kind scalars
      train-ins (34 bytes): round i64 | lr f64 | local_steps i64 | batch_size i64 |
                            importance_mode u8 (0 off, 1 round_sum, 2 legacy_last_step) | upload_importance u8
      train-res (33 bytes): client_id i64 | num_examples i64 | train_loss f64 | compute_wall_s f64 |
                            has_importance u8
      state     (0 bytes)

    header checksum (4 bytes): u32 CRC32 of the fixed header and the kind scalars

    layer table = n_entries state entries, then n_importance importance entries
      state entry (49 + name bytes + 8·ndim bytes)
        u16 name length | name (UTF-8) | u8 dtype | u8 ndim | ndim × u64 shape |
        u8 mask code (0 dense, 1 known, 2 all-ones, 3 bitmask, 4 rice-kept, 5 rice-pruned) | u8 rice k |
        u64 n_kept (= element count when dense) |
        u8 mask codec | u64 mask stored length | u64 mask raw length | u32 mask checksum |
        u8 values wire dtype | u8 values codec (0 raw, 1 zstd, 2 byte-shuffled zstd) | u64 values stored length |
        u32 values checksum
      importance entry (19 bytes; 50 when top-k)
        u32 entry field: state entry index in bits 0-30, bit 31 set for a top-k entry |
        u8 dtype | u8 wire dtype | u8 values codec | u64 values stored length | u32 values checksum |
        top-k only: u8 position code (2 all-ones, 3 bitmask, 4 rice-kept, 5 rice-pruned) | u8 rice k |
                    u64 k (values sent) | u8 positions codec | u64 positions stored length |
                    u64 positions raw length | u32 positions checksum

    A section's checksum is the CRC32 of its stored bytes (0 for an empty section).

    body = for each state entry: mask section, values section; then for each importance entry its positions
    section (top-k only), then its values section.

    dtype codes: 1 bool, 2 uint8, 3 int8, 4 int16, 5 int32, 6 int64, 7 float16, 8 float32, 9 float64.

The raw length of a values section is ``count · itemsize(wire dtype)`` (``count`` = n_kept, the element count
of the entry, or k) and is not stored. A compressed section
is one zstd frame that declares its content size, equal to the raw length, and a window of at most
max(raw length, 1 KiB), and is smaller than the raw length. The body is exactly as long as the stored lengths
say: nothing may follow it. Version 1 (no checksums) is rejected.
"""

from __future__ import annotations

import enum
import logging
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import zstandard

from prunefl.errors import ConfigError, DecodeError
from prunefl.fl.messages import TrainIns, TrainRes

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "DecodeLimits",
    "decode_state",
    "decode_train_ins",
    "decode_train_res",
    "encode_state",
    "encode_train_ins",
    "encode_train_res",
    "information_bound_bits",
]

logger = logging.getLogger(__name__)

MAGIC = b"PFL1"
"""First four bytes of every message."""

FORMAT_VERSION = 2
"""Version of the byte layout in the module docstring; a decoder rejects any other."""

# Format limit: positions < 2**31 and at most 2**31 gaps, so Σ gaps < 2**62 fits int64 while decoding.
_MAX_ELEMENTS_PER_ENTRY = 2**31


@dataclass(frozen=True)
class DecodeLimits:
    """Size limits a decoder enforces before it allocates (spec §10 item 1).

    Parameters
    ----------
    max_message_bytes : int
        Longest accepted message (default: 2 GiB).
    max_layers : int
        Most state entries in one message (default: 4096; ResNet-18 has 122).
    max_elements_per_layer : int
        Most elements in one entry (default: 64 Mi; at most 2**31, the format's limit, so that position
        arithmetic cannot overflow int64).
    max_total_elements : int
        Most elements over all state and importance entries (default: 512 Mi, 2 GiB of float32). A sparse
        message decodes to dense arrays, so this, not the message size, bounds the memory a decoder allocates;
        receivers that know the model should also pass ``expected_shapes``.
    max_decompressed_bytes : int
        Most bytes all zstd sections may decompress to, together (default: 2 GiB).
    max_table_bytes : int
        Longest layer table, after decompression (default: 16 MiB; ResNet-18's is about 6 kB). The table is
        also bounded by what its entry counts allow (65535-byte names, 32 dims).

    Raises
    ------
    prunefl.errors.ConfigError
        If a limit is not a non-negative int, or ``max_elements_per_layer`` exceeds 2**31.

    Examples
    --------
    >>> DecodeLimits(max_layers=256).max_layers
    256
    """

    max_message_bytes: int = 2 * 1024**3
    max_layers: int = 4096
    max_elements_per_layer: int = 64 * 1024**2
    max_total_elements: int = 512 * 1024**2
    max_decompressed_bytes: int = 2 * 1024**3
    max_table_bytes: int = 16 * 1024**2

    def __post_init__(self) -> None:
        for name in (
            "max_message_bytes",
            "max_layers",
            "max_elements_per_layer",
            "max_total_elements",
            "max_decompressed_bytes",
            "max_table_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"DecodeLimits.{name} must be a non-negative int, got {value!r}")
        if self.max_elements_per_layer > _MAX_ELEMENTS_PER_ENTRY:
            raise ConfigError(
                f"DecodeLimits.max_elements_per_layer must be <= 2**31 (format limit), "
                f"got {self.max_elements_per_layer}"
            )


_DEFAULT_LIMITS = DecodeLimits()


def encode_train_ins(
    ins: TrainIns, include_masks: bool = True, *, values_dtype: str = "float32", level: int | None = 3
) -> bytes:
    """Encode a server → client message.

    Masked entries send only their kept values, so the server's stale values at pruned coordinates are not
    sent and decode as 0 (the client zeroes them anyway, spec §3.8).

    Parameters
    ----------
    ins : TrainIns
        The message; every key of ``ins.masks`` must be a float entry of ``ins.state`` with the same shape.
    include_masks : bool
        Send the masks (default: True). Pass False when the client already holds them (they did not change
        since the last message it received); it then decodes with ``known_masks``.
    values_dtype : {"float32", "float16"}
        Wire dtype of kept values (default: "float32"). float16 halves them at a relative error of at most
        2**-11 (absolute 2**-25 below 2**-14); finite values beyond ±65504 raise.
    level : int or None
        zstd level, from -7 to 22 (default: 3); None sends every section raw.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        An unknown option, a mask that does not fit its entry, an unsupported dtype, or a value float16
        cannot hold.

    Examples
    --------
    >>> ins = TrainIns(3, {"w": np.arange(4, dtype=np.float32)}, {"w": np.array([True, False, True, True])},
    ...                lr=0.1, local_steps=5, batch_size=10)
    >>> decode_train_ins(encode_train_ins(ins)).state["w"]
    array([0., 0., 2., 3.], dtype=float32)
    """
    mode = _IMPORTANCE_MODE_CODES.get(ins.importance_mode)
    if mode is None:
        raise ValueError(
            f"importance_mode must be one of {sorted(_IMPORTANCE_MODE_CODES)}, got {ins.importance_mode!r}"
        )
    scalars = _pack_scalars(
        _INS_SCALARS,
        "train-ins",
        int(ins.round),
        float(ins.lr),
        int(ins.local_steps),
        int(ins.batch_size),
        mode,
        int(bool(ins.upload_importance)),
    )
    options = _encode_options(values_dtype, "float32", level)
    return _encode(_Kind.TRAIN_INS, scalars, ins.state, ins.masks, include_masks, None, options)


def decode_train_ins(
    data: bytes | bytearray | memoryview,
    known_masks: Mapping[str, np.ndarray] | None = None,
    *,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    require_finite: bool = True,
) -> TrainIns:
    """Decode and validate a server → client message.

    Parameters
    ----------
    data : bytes-like
        The message.
    known_masks : Mapping[str, numpy.ndarray] or None
        Boolean masks the client holds; required for every entry whose mask the message omits, and then they
        must name exactly the masked entries (default: None). The returned ``masks`` reuse these arrays.
    limits : DecodeLimits
        Size limits (default: ``DecodeLimits()``).
    expected_shapes : Mapping[str, tuple of int] or None
        When given, the message must hold exactly these entries with these shapes (default: None).
    require_finite : bool
        Reject NaN and ±inf in float values (default: True).

    Returns
    -------
    TrainIns
        Fresh writable arrays; pruned coordinates are 0.

    Raises
    ------
    DecodeError
        On anything malformed, inconsistent or over a limit; the message says what was expected and found.

    Examples
    --------
    >>> ins = TrainIns(0, {"b": np.ones(2, np.float32)}, {}, lr=0.5, local_steps=1, batch_size=4)
    >>> decode_train_ins(encode_train_ins(ins)).lr
    0.5
    """
    msg = _decode(data, _Kind.TRAIN_INS, known_masks, limits, expected_shapes, require_finite)
    round_, lr, local_steps, batch_size, mode, upload = msg.scalars
    return TrainIns(
        round=round_,
        state=msg.state,
        masks=msg.masks,
        lr=lr,
        local_steps=local_steps,
        batch_size=batch_size,
        importance_mode=_IMPORTANCE_MODES[mode],
        upload_importance=bool(upload),
    )


def encode_train_res(
    res: TrainRes,
    masks: Mapping[str, np.ndarray],
    *,
    include_masks: bool = False,
    values_dtype: str = "float32",
    importance_dtype: str = "float32",
    level: int | None = 3,
    importance_top_fraction: float = 1.0,
) -> bytes:
    """Encode a client → server message: kept values of masked entries, other entries dense, then importance.

    Parameters
    ----------
    res : TrainRes
        The reply; pruned coordinates of its state must be exactly 0 (spec §3.8), since only kept values are
        sent.
    masks : Mapping[str, numpy.ndarray]
        The masks in force this round (those of the `TrainIns` the client received).
    include_masks : bool
        Also send the masks (default: False: the server knows them). A reply whose ``masks`` is set (the client
        changed its own masks, FedDST) always sends those instead of ``masks``.
    values_dtype : {"float32", "float16"}
        Wire dtype of kept values (default: "float32"); see `encode_train_ins`.
    importance_dtype : {"float32", "float16"}
        Wire dtype of importance (default: "float32"). float16 flushes values below ~6e-8 to 0.
    level : int or None
        zstd level (default: 3); None sends every section raw.
    importance_top_fraction : float
        Fraction in (0, 1] of each importance entry to send (default: 1.0: all of it, dense). Below 1, only the
        ``ceil(fraction · n)`` largest values of each entry travel, with their positions; the decoder sets the
        others to 0. NaN importance then raises.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        As `encode_train_ins`, or a non-zero pruned coordinate, importance for an unknown entry or of another
        shape, ``importance_top_fraction`` outside (0, 1], or NaN importance with a fraction below 1.

    Examples
    --------
    >>> res = TrainRes(7, 50, {"w": np.array([0.0, 1.5], np.float32)}, 0.25, 0.01)
    >>> m = {"w": np.array([False, True])}
    >>> out = decode_train_res(encode_train_res(res, m), m)
    >>> out.client_id, out.state["w"]
    (7, array([0. , 1.5], dtype=float32))
    """
    scalars = _pack_scalars(
        _RES_SCALARS,
        "train-res",
        int(res.client_id),
        int(res.num_examples),
        float(res.train_loss),
        float(res.compute_wall_s),
        int(res.importance is not None),
    )
    options = _encode_options(values_dtype, importance_dtype, level, importance_top_fraction)
    if res.masks is not None:
        masks, include_masks = res.masks, True
    return _encode(_Kind.TRAIN_RES, scalars, res.state, masks, include_masks, res.importance, options)


def decode_train_res(
    data: bytes | bytearray | memoryview,
    masks: Mapping[str, np.ndarray] | None,
    *,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    require_finite: bool = True,
    own_masks: bool = False,
) -> TrainRes:
    """Decode and validate a client → server message.

    Parameters
    ----------
    data : bytes-like
        The message.
    masks : Mapping[str, numpy.ndarray] or None
        The masks the server sent this round; they must name exactly the entries the message masks.
    limits, expected_shapes, require_finite
        As in `decode_train_ins`. A server should pass the shapes of the state it sent as ``expected_shapes``:
        they, not ``limits``, then bound the memory a reply can make it allocate.
    own_masks : bool
        Accept a reply that carries masks other than ``masks``: the client's own, for methods whose clients
        change masks (FedDST) (default: False: masks a reply carries must equal ``masks``, entry for entry).

    Returns
    -------
    TrainRes
        Fresh writable arrays; pruned coordinates are 0; ``importance`` is None unless the client sent it;
        ``masks`` is None unless the message carried masks (the client's own, FedDST).

    Raises
    ------
    DecodeError
        On anything malformed, inconsistent or over a limit, or masks other than ``masks`` without
        ``own_masks``.

    Examples
    --------
    >>> res = TrainRes(1, 10, {"w": np.ones(3, np.float32)}, 0.5, 0.1, importance={"w": np.ones(3, np.float32)})
    >>> decode_train_res(encode_train_res(res, {}), {}).importance["w"]
    array([1., 1., 1.], dtype=float32)
    """
    msg = _decode(data, _Kind.TRAIN_RES, masks, limits, expected_shapes, require_finite)
    if msg.sent_masks and not own_masks:
        _check_same_masks(msg.masks, masks)
    client_id, num_examples, train_loss, compute_wall_s, has_importance = msg.scalars
    return TrainRes(
        client_id=client_id,
        num_examples=num_examples,
        state=msg.state,
        train_loss=train_loss,
        compute_wall_s=compute_wall_s,
        importance=msg.importance if has_importance else None,
        masks=msg.masks if msg.sent_masks else None,
    )


def encode_state(
    state: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    include_masks: bool = True,
    *,
    values_dtype: str = "float32",
    level: int | None = 3,
) -> bytes:
    """Encode a model state or update: kept values of masked entries (pruned coordinates dropped), others dense.

    Parameters
    ----------
    state : Mapping[str, numpy.ndarray]
        Entries to send.
    masks : Mapping[str, numpy.ndarray]
        Boolean mask per masked entry (a subset of ``state``'s keys, float entries only).
    include_masks : bool
        Send the masks (default: True); otherwise the receiver must pass them as ``known_masks``.
    values_dtype, level
        As in `encode_train_ins`.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        As `encode_train_ins`.

    Examples
    --------
    >>> data = encode_state({"w": np.zeros(8, np.float32)}, {"w": np.zeros(8, bool)}, level=None)
    >>> len(data)  # 36-byte header + 4-byte checksum + 58-byte table entry; an empty mask and no values: 0
    98
    """
    options = _encode_options(values_dtype, "float32", level)
    return _encode(_Kind.STATE, b"", state, masks, include_masks, None, options)


def decode_state(
    data: bytes | bytearray | memoryview,
    known_masks: Mapping[str, np.ndarray] | None = None,
    *,
    limits: DecodeLimits = _DEFAULT_LIMITS,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    require_finite: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Decode and validate a message written by `encode_state`.

    Parameters
    ----------
    data, known_masks, limits, expected_shapes, require_finite
        As in `decode_train_ins`.

    Returns
    -------
    state : dict[str, numpy.ndarray]
        Fresh writable arrays; pruned coordinates are 0.
    masks : dict[str, numpy.ndarray]
        The mask of every masked entry: decoded, or the array from ``known_masks``.

    Raises
    ------
    DecodeError
        On anything malformed, inconsistent or over a limit.

    Examples
    --------
    >>> m = {"w": np.array([[True, False], [False, True]])}
    >>> data = encode_state({"w": np.full((2, 2), 7, np.float32)}, m, include_masks=False)
    >>> decode_state(data, known_masks=m)[0]["w"]
    array([[7., 0.],
           [0., 7.]], dtype=float32)
    """
    msg = _decode(data, _Kind.STATE, known_masks, limits, expected_shapes, require_finite)
    return msg.state, msg.masks


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


# --------------------------------------------------------------------------------------------------------------
# Format constants
# --------------------------------------------------------------------------------------------------------------


class _Kind(enum.IntEnum):
    TRAIN_INS = 1
    TRAIN_RES = 2
    STATE = 3


class _MaskCode(enum.IntEnum):
    DENSE = 0  # not a masked entry: every value is sent
    KNOWN = 1  # masked; the receiver has the mask
    ALL_ONES = 2  # masked, nothing pruned: no mask bytes
    BITMASK = 3
    RICE_KEPT = 4  # Rice-coded positions of kept coordinates
    RICE_PRUNED = 5  # Rice-coded positions of pruned coordinates (density > 0.5)


class _Codec(enum.IntEnum):
    RAW = 0
    ZSTD = 1
    SHUFFLED_ZSTD = 2  # byte planes (element byte 0 of all elements, then byte 1, ...), then zstd


_FIXED = struct.Struct("<4sHBBIIQQI")  # ..., table CRC32
_CRC = struct.Struct("<I")
_INS_SCALARS = struct.Struct("<qdqqBB")
_RES_SCALARS = struct.Struct("<qqddB")
_KIND_SCALARS = {_Kind.TRAIN_INS: _INS_SCALARS, _Kind.TRAIN_RES: _RES_SCALARS, _Kind.STATE: struct.Struct("<")}
_NAME_LEN = struct.Struct("<H")
_DTYPE_NDIM = struct.Struct("<BB")
_ENTRY_TAIL = struct.Struct("<BBQBQQIBBQI")
_IMPORTANCE_ENTRY = struct.Struct("<IBBBQI")
_IMPORTANCE_TOP_K_FLAG = 1 << 31  # bit 31 of the entry field: a top-k importance entry, with positions
_IMPORTANCE_POSITIONS = struct.Struct("<BBQBQQI")  # code, rice k, k, positions codec, stored, raw, CRC32

# Wire dtypes are explicitly little-endian; ("kind", itemsize) identifies a host dtype of either byte order.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("|b1"),
    2: np.dtype("|u1"),
    3: np.dtype("|i1"),
    4: np.dtype("<i2"),
    5: np.dtype("<i4"),
    6: np.dtype("<i8"),
    7: np.dtype("<f2"),
    8: np.dtype("<f4"),
    9: np.dtype("<f8"),
}
_DTYPE_CODES: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}
_FLOAT_WIRE = {"float32": 8, "float16": 7}  # options for kept values and importance

_IMPORTANCE_MODES = ("off", "round_sum", "legacy_last_step")  # wire code = index
_IMPORTANCE_MODE_CODES = {mode: code for code, mode in enumerate(_IMPORTANCE_MODES)}

_MAX_NDIM = 32
_MAX_RICE_K = 31  # a gap is < 2**31
_ZSTD_LEVELS = range(-7, zstandard.MAX_COMPRESSION_LEVEL + 1)
_MAX_WINDOW_BYTES = 1 << 27  # zstd's default decoder limit; bounds the decoder's window memory
_MIN_WINDOW_BYTES = 1 << 10  # zstd's smallest window; a frame may ask for it however short its content
_READ_CHUNK_BYTES = 1 << 20  # decompressed sections are read in chunks of this size
# Largest table entries the format allows: a 65535-byte name and 32 dims; a top-k importance entry.
_MAX_ENTRY_BYTES = _NAME_LEN.size + 0xFFFF + _DTYPE_NDIM.size + 8 * 32 + _ENTRY_TAIL.size
_MAX_IMPORTANCE_ENTRY_BYTES = _IMPORTANCE_ENTRY.size + _IMPORTANCE_POSITIONS.size
_MIN_COMPRESS_BYTES = 64  # below this the zstd frame header (>= 9 bytes) rarely pays for itself
_SAMPLE_ELEMENTS = 65536  # values sections over 4x this are first compressed on their first elements ...
_SAMPLE_WORTH_IT = 0.98  # ... and sent raw unless the sample shrinks to 98 % or less
# Rice coding beats a bitmask by 1 - H(p) bits per weight at minority fraction p (< 7 % for p > 0.35) while
# its cost grows with the number of positions: above this fraction the bitmask is taken without trying.
_RICE_MAX_FRACTION = 0.35


# --------------------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _EncodeOptions:
    values_wire: int  # dtype code of kept values
    importance_wire: int  # dtype code of importance values
    compressor: zstandard.ZstdCompressor | None
    importance_top_fraction: float = 1.0  # < 1: top-k importance entries


def _encode_options(
    values_dtype: str, importance_dtype: str, level: int | None, importance_top_fraction: float = 1.0
) -> _EncodeOptions:
    for name, value in (("values_dtype", values_dtype), ("importance_dtype", importance_dtype)):
        if value not in _FLOAT_WIRE:
            raise ValueError(f"{name} must be one of {sorted(_FLOAT_WIRE)}, got {value!r}")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level not in _ZSTD_LEVELS):
        raise ValueError(f"level must be None or an int in [-7, {zstandard.MAX_COMPRESSION_LEVEL}], got {level!r}")
    # One compressor per message; content size is always written: the decoder requires it (bomb check).
    if isinstance(importance_top_fraction, bool) or not (
        isinstance(importance_top_fraction, (int, float)) and 0.0 < importance_top_fraction <= 1.0
    ):
        raise ValueError(f"importance_top_fraction must be a number in (0, 1], got {importance_top_fraction!r}")
    compressor = None if level is None else zstandard.ZstdCompressor(level=level, write_content_size=True)
    return _EncodeOptions(
        _FLOAT_WIRE[values_dtype], _FLOAT_WIRE[importance_dtype], compressor, float(importance_top_fraction)
    )


def _pack_scalars(fmt: struct.Struct, kind: str, *values: object) -> bytes:
    try:
        return fmt.pack(*values)
    except struct.error as exc:
        raise ValueError(f"{kind} scalar fields {values} do not fit the wire format: {exc}") from exc


def _encode(
    kind: _Kind,
    scalars: bytes,
    state: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    include_masks: bool,
    importance: Mapping[str, np.ndarray] | None,
    options: _EncodeOptions,
) -> bytes:
    _check_encode_inputs(state, masks, importance)
    table: list[bytes] = []
    body: list[object] = []  # bytes-like sections, joined once at the end
    index_of: dict[str, int] = {}
    for index, (name, value) in enumerate(state.items()):
        index_of[name] = index
        arr = np.asarray(value)
        logical = _dtype_code(arr.dtype, name)
        flat = arr.reshape(-1)
        if name in masks:
            mask = np.asarray(masks[name]).reshape(-1)
            n_kept = int(np.count_nonzero(mask))
            if not include_masks:
                code, rice_k, mask_raw = _MaskCode.KNOWN, 0, b""
                positions = None
            else:
                code, rice_k, mask_raw, positions = _encode_mask(mask, n_kept)
            if code == _MaskCode.ALL_ONES or n_kept == flat.size:
                kept = flat
            elif code == _MaskCode.RICE_KEPT:
                kept = flat[positions]  # positions are sorted: row-major order, and faster than a bool index
            else:
                kept = flat[mask]
            if kind == _Kind.TRAIN_RES and kept.size < flat.size and np.count_nonzero(kept) != np.count_nonzero(flat):
                # Only kept values travel, so a non-zero pruned coordinate would be lost silently (NaN counts).
                raise ValueError(f"state entry {name!r} has non-zero values at pruned coordinates (spec §3.8)")
            wire = _DTYPES[options.values_wire]
            values = _to_wire(kept, wire, name)
            mask_codec, mask_payload = _compress_plain(mask_raw, options.compressor)
        else:
            code, rice_k, n_kept = _MaskCode.DENSE, 0, flat.size
            wire = _DTYPES[logical]
            values = np.ascontiguousarray(flat, dtype=wire)  # lossless; byte-swapped on big-endian hosts
            mask_raw, mask_codec, mask_payload = b"", _Codec.RAW, b""
        values_codec, values_payload = _compress_values(values, options.compressor)
        name_bytes = name.encode("utf-8")
        table.append(
            _NAME_LEN.pack(len(name_bytes))
            + name_bytes
            + _DTYPE_NDIM.pack(logical, arr.ndim)
            + struct.pack(f"<{arr.ndim}Q", *arr.shape)
            + _ENTRY_TAIL.pack(
                code,
                rice_k,
                n_kept,
                mask_codec,
                len(mask_payload),
                len(mask_raw),
                zlib.crc32(mask_payload),
                _dtype_code(wire, name),
                values_codec,
                _nbytes(values_payload),
                zlib.crc32(values_payload),  # type: ignore[arg-type]
            )
        )
        body += [mask_payload, values_payload]
    n_importance = 0
    if importance is not None:
        wire = _DTYPES[options.importance_wire]
        for name, value in importance.items():
            arr = np.asarray(value)
            flat = arr.reshape(-1)
            field, positions_entry = index_of[name], b""
            if options.importance_top_fraction < 1.0:
                # The relative tolerance absorbs float error: 0.07 · 100 is 7.000000000000001 and keeps 7.
                k = math.ceil(options.importance_top_fraction * flat.size * (1 - 1e-12))
                top = _top_k_mask(flat, k, name)
                n_top = int(np.count_nonzero(top))
                code, rice_k, positions_raw, positions = _encode_mask(top, n_top)
                flat = flat[positions] if positions is not None else flat[top]  # row-major position order
                positions_codec, positions_payload = _compress_plain(positions_raw, options.compressor)
                field |= _IMPORTANCE_TOP_K_FLAG
                positions_entry = _IMPORTANCE_POSITIONS.pack(
                    code,
                    rice_k,
                    n_top,
                    positions_codec,
                    len(positions_payload),
                    len(positions_raw),
                    zlib.crc32(positions_payload),
                )
                body.append(positions_payload)
            values = _to_wire(flat, wire, f"importance[{name!r}]")
            codec, payload = _compress_values(values, options.compressor)
            table.append(
                _IMPORTANCE_ENTRY.pack(
                    field,
                    _dtype_code(arr.dtype, name),
                    options.importance_wire,
                    codec,
                    _nbytes(payload),
                    zlib.crc32(payload),  # type: ignore[arg-type]
                )
                + positions_entry
            )
            body.append(payload)
            n_importance += 1
    table_raw = b"".join(table)
    table_codec, table_payload = _compress_plain(table_raw, options.compressor)
    header = _FIXED.pack(
        MAGIC,
        FORMAT_VERSION,
        kind,
        table_codec,
        len(state),
        n_importance,
        len(table_payload),
        len(table_raw),
        zlib.crc32(table_payload),
    )
    header_crc = _CRC.pack(zlib.crc32(header + scalars))
    data = b"".join([header, scalars, header_crc, table_payload, *body])  # type: ignore[list-item]
    logger.debug("encoded %s: %d entries, %d importance entries, %d bytes", kind.name, len(state), n_importance,
                 len(data))
    return data


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
    """Rice-code non-negative gaps into [k-bit remainders][unary quotients], both LSB-first (module docstring)."""
    if gaps.size == 0:
        return b""
    remainder_bits = ((gaps[:, None] >> np.arange(k)) & 1).astype(np.uint8)  # (m, k), bit j of each remainder
    remainders = np.packbits(remainder_bits.reshape(-1), bitorder="little")
    # Each gap contributes q zero bits and a one bit: the one bits sit at cumsum(q + 1) - 1.
    terminators = np.cumsum((gaps >> k) + 1) - 1
    unary_bits = np.zeros(int(terminators[-1]) + 1, dtype=np.uint8)
    unary_bits[terminators] = 1
    return remainders.tobytes() + np.packbits(unary_bits, bitorder="little").tobytes()


def _to_wire(values: np.ndarray, wire: np.dtype, what: str) -> np.ndarray:
    """Cast float values to the wire dtype; float16 must not turn finite values into inf."""
    with np.errstate(over="ignore"):  # overflow is reported below, with the entry's name
        out = np.ascontiguousarray(values, dtype=wire)
    if wire.itemsize < values.dtype.itemsize and out.size:
        overflow = np.isinf(out) & np.isfinite(values)
        if overflow.any():
            raise ValueError(
                f"{what}: {int(overflow.sum())} finite values exceed the {wire.name} range (|x| > "
                f"{float(np.finfo(wire).max)}); send float32"
            )
    return out


def _compress_plain(raw: bytes, compressor: zstandard.ZstdCompressor | None) -> tuple[_Codec, bytes]:
    if compressor is None or len(raw) < _MIN_COMPRESS_BYTES:
        return _Codec.RAW, raw
    packed = compressor.compress(raw)
    return (_Codec.ZSTD, packed) if len(packed) < len(raw) else (_Codec.RAW, raw)


def _compress_values(values: np.ndarray, compressor: zstandard.ZstdCompressor | None) -> tuple[_Codec, object]:
    """Return (codec, payload) for a contiguous 1-D wire-dtype array; the raw payload is the array's bytes."""
    raw = values.view(np.uint8)
    if compressor is None or raw.size < _MIN_COMPRESS_BYTES:
        return _Codec.RAW, raw
    itemsize = values.dtype.itemsize
    codec = _Codec.SHUFFLED_ZSTD if itemsize > 1 else _Codec.ZSTD
    if values.size > 4 * _SAMPLE_ELEMENTS:
        sample = _byte_planes(values[:_SAMPLE_ELEMENTS])
        if len(compressor.compress(sample.tobytes())) > _SAMPLE_WORTH_IT * sample.size:
            return _Codec.RAW, raw
    packed = compressor.compress((_byte_planes(values) if itemsize > 1 else raw).tobytes())
    return (codec, packed) if len(packed) < raw.size else (_Codec.RAW, raw)


def _byte_planes(values: np.ndarray) -> np.ndarray:
    """(n,) of itemsize s → (s·n,) uint8: byte 0 of every element, then byte 1, ... (inverse: `_unshuffle`)."""
    return np.ascontiguousarray(values.view(np.uint8).reshape(values.size, values.dtype.itemsize).T).reshape(-1)


def _nbytes(payload: object) -> int:
    return payload.nbytes if isinstance(payload, np.ndarray) else len(payload)  # type: ignore[arg-type]


def _dtype_code(dtype: np.dtype, name: str) -> int:
    code = _DTYPE_CODES.get((dtype.kind, dtype.itemsize))
    if code is None:
        supported = ", ".join(dt.name for dt in _DTYPES.values())
        raise ValueError(
            f"entry {name!r} has dtype {dtype}, which the codec does not carry; expected one of {supported}"
        )
    return code


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Section:
    codec: int
    stored: int
    raw: int
    crc: int = 0  # CRC32 of the stored bytes
    offset: int = 0  # start in the message, set once the table is complete


@dataclass
class _Entry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    numel: int
    mask_code: int
    rice_k: int
    n_kept: int
    mask: _Section
    wire: np.dtype
    values: _Section


@dataclass
class _ImportanceEntry:
    entry: int
    dtype: np.dtype
    wire: np.dtype
    values: _Section
    # Top-k entries only: how the positions of the k values sent are coded (a mask code), and their section.
    position_code: int = 0
    rice_k: int = 0
    n_top: int = 0
    positions: _Section | None = None


@dataclass
class _Decoded:
    scalars: tuple
    state: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    importance: dict[str, np.ndarray]
    sent_masks: bool = False  # some entry carried its own mask (not KNOWN)


class _Reader:
    """Bounds-checked sequential reads from a byte buffer; a short read raises `DecodeError`."""

    def __init__(self, buf: memoryview, what: str) -> None:
        self.buf, self.pos, self.what = buf, 0, what

    def unpack(self, fmt: struct.Struct, field: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, field))

    def take(self, n: int, field: str) -> memoryview:
        if n > len(self.buf) - self.pos:
            raise DecodeError(
                f"{self.what} truncated: expected {n} bytes of {field} at offset {self.pos}, found "
                f"{len(self.buf) - self.pos}"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def _decode(
    data: bytes | bytearray | memoryview,
    kind: _Kind,
    known_masks: Mapping[str, np.ndarray] | None,
    limits: DecodeLimits,
    expected_shapes: Mapping[str, tuple[int, ...]] | None,
    require_finite: bool,
) -> _Decoded:
    """Decode a message of ``kind``; any exception but `DecodeError` is a codec bug, reported as a DecodeError.

    Every input is meant to be rejected by an explicit check below; the net only guarantees callers a single
    exception type (a numpy or zstd error, or a MemoryError, must not take a server down). Its message starts
    with ``_UNCHECKED`` so that the fuzz tests can tell that no explicit check caught the input.
    """
    try:
        return _decode_checked(data, kind, known_masks, limits, expected_shapes, require_finite)
    except DecodeError:
        raise
    except (MemoryError, ArithmeticError, ValueError, TypeError, IndexError, KeyError, LookupError,
            struct.error, zstandard.ZstdError, UnicodeError) as exc:
        raise DecodeError(f"{_UNCHECKED}: {type(exc).__name__}: {exc}") from None


_UNCHECKED = "malformed message (no explicit check caught it)"


def _decode_checked(
    data: bytes | bytearray | memoryview,
    kind: _Kind,
    known_masks: Mapping[str, np.ndarray] | None,
    limits: DecodeLimits,
    expected_shapes: Mapping[str, tuple[int, ...]] | None,
    require_finite: bool,
) -> _Decoded:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected a bytes-like message, found {type(data).__name__}")
    try:
        buf = memoryview(data).cast("B")
    except TypeError:
        raise DecodeError("expected a contiguous bytes-like message") from None
    if len(buf) > limits.max_message_bytes:
        raise DecodeError(f"message is {len(buf)} bytes, above max_message_bytes={limits.max_message_bytes}")
    reader = _Reader(buf, "message")
    fixed = reader.take(_FIXED.size, "fixed header")
    (magic, version, wire_kind, table_codec, n_entries, n_importance, table_stored, table_raw,
     table_crc) = _FIXED.unpack(fixed)
    # Magic, version and kind are checked before the header checksum: they say which layout (and so which
    # scalars) to read, and each is rejected on its own when wrong.
    if magic != MAGIC:
        raise DecodeError(f"expected magic {MAGIC!r}, found {bytes(magic)!r}: not a prunefl message")
    if version != FORMAT_VERSION:
        old = " (version 1 messages carry no checksums and are no longer accepted: re-encode them)"
        raise DecodeError(
            f"expected format version {FORMAT_VERSION}, found {version}{old if version == 1 else ''}"
        )
    if wire_kind != kind:
        found = _Kind(wire_kind).name if wire_kind in set(_Kind) else str(wire_kind)
        raise DecodeError(f"expected a {kind.name} message, found kind {found}")
    raw_scalars = reader.take(_KIND_SCALARS[kind].size, "scalar fields")
    (header_crc,) = reader.unpack(_CRC, "header checksum")
    _check_crc(buf[: reader.pos - _CRC.size], header_crc, "fixed header and scalar fields")
    if n_entries > limits.max_layers:
        raise DecodeError(f"message has {n_entries} entries, above max_layers={limits.max_layers}")
    if n_importance > n_entries:
        raise DecodeError(
            f"expected at most {n_entries} importance entries (one per state entry), found {n_importance}"
        )
    scalars = _check_scalars(kind, _KIND_SCALARS[kind].unpack(raw_scalars), n_importance, require_finite)
    table_section = _Section(table_codec, table_stored, table_raw, table_crc)
    _check_section_codec(table_section, "layer table", allow_shuffle=False)
    # The table's size is bounded by what its entry counts allow before anything is decompressed.
    max_table = min(
        limits.max_table_bytes, n_entries * _MAX_ENTRY_BYTES + n_importance * _MAX_IMPORTANCE_ENTRY_BYTES
    )
    if table_raw > max_table:
        raise DecodeError(
            f"layer table of {table_raw} bytes is above the {max_table} bytes that {n_entries} entries and "
            f"{n_importance} importance entries can take (max_table_bytes={limits.max_table_bytes})"
        )
    if table_codec != _Codec.RAW and table_raw > limits.max_decompressed_bytes:
        raise DecodeError(
            f"layer table decompresses to {table_raw} bytes, above max_decompressed_bytes="
            f"{limits.max_decompressed_bytes}"
        )
    table_stored_bytes = reader.take(table_stored, "layer table")
    _check_crc(table_stored_bytes, table_crc, "layer table")
    table = _section_bytes(table_stored_bytes, table_section, "layer table")
    entries, importance_entries = _parse_table(table, n_entries, n_importance, limits)
    _check_entries(entries, importance_entries, known_masks, expected_shapes)

    # Lay out the body: sections follow in table order and must fill the message exactly.
    sections = [s for e in entries for s in (e.mask, e.values)]
    for imp in importance_entries:
        sections += [imp.values] if imp.positions is None else [imp.positions, imp.values]
    offset = reader.pos
    for section in sections:
        section.offset = offset
        offset += section.stored
    if offset != len(buf):
        raise DecodeError(
            f"expected a message of {offset} bytes (header, table and sections), found {len(buf)}: "
            f"{'truncated' if offset > len(buf) else 'trailing bytes'}"
        )
    # Every section's checksum is verified before any section is used.
    for e in entries:
        for section, noun in ((e.mask, "mask"), (e.values, "values")):
            _check_crc(buf[section.offset : section.offset + section.stored], section.crc, f"entry {e.name!r} {noun}")
    for imp in importance_entries:
        for part in (imp.values, imp.positions):
            if part is not None:
                what = f"importance of {entries[imp.entry].name!r}"
                _check_crc(buf[part.offset : part.offset + part.stored], part.crc, what)
    compressed_total = sum(s.raw for s in sections if s.codec != _Codec.RAW)
    compressed_total += table_raw if table_codec != _Codec.RAW else 0
    if compressed_total > limits.max_decompressed_bytes:
        raise DecodeError(
            f"sections decompress to {compressed_total} bytes, above max_decompressed_bytes="
            f"{limits.max_decompressed_bytes}"
        )

    state: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for e in entries:
        what = f"entry {e.name!r}"
        values = _decode_values(buf, e.values, e.wire, e.n_kept, f"{what} values", require_finite)
        if e.mask_code == _MaskCode.DENSE:
            state[e.name] = values.astype(e.dtype.newbyteorder("="), copy=True).reshape(e.shape)
            continue
        mask_raw = _section_bytes(buf[e.mask.offset : e.mask.offset + e.mask.stored], e.mask, f"{what} mask")
        mask_flat, positions = _decode_mask(e, mask_raw, known_masks)
        out = np.zeros(e.numel, dtype=e.dtype.newbyteorder("="))
        if e.n_kept == e.numel:
            out[:] = values
        elif positions is not None:
            out[positions] = values  # kept positions, sorted: the row-major order the values were sent in
        else:
            out[mask_flat] = values
        state[e.name] = out.reshape(e.shape)
        if e.mask_code == _MaskCode.KNOWN:
            assert known_masks is not None  # _check_entries required it
            masks[e.name] = known_masks[e.name]  # the caller's own array, not a copy
        else:
            masks[e.name] = mask_flat.reshape(e.shape)
    importance: dict[str, np.ndarray] = {}
    for imp in importance_entries:
        e = entries[imp.entry]
        what = f"importance of {e.name!r}"
        if imp.positions is None:
            values = _decode_values(buf, imp.values, imp.wire, e.numel, what, require_finite)
            importance[e.name] = values.astype(imp.dtype.newbyteorder("="), copy=True).reshape(e.shape)
            continue
        positions_raw = _section_bytes(buf[imp.positions.offset : imp.positions.offset + imp.positions.stored],
                                       imp.positions, f"{what} positions")
        top, positions = _decode_positions(imp.position_code, imp.rice_k, imp.n_top, e.numel, positions_raw,
                                           f"{what} positions")
        values = _decode_values(buf, imp.values, imp.wire, imp.n_top, what, require_finite)
        out = np.zeros(e.numel, dtype=imp.dtype.newbyteorder("="))
        out[positions if positions is not None else top] = values  # row-major position order
        importance[e.name] = out.reshape(e.shape)
    sent = any(e.mask_code not in (_MaskCode.KNOWN, _MaskCode.DENSE) for e in entries)
    return _Decoded(scalars, state, masks, importance, sent)


def _parse_table(
    table: bytes | bytearray | memoryview, n_entries: int, n_importance: int, limits: DecodeLimits
) -> tuple[list[_Entry], list[_ImportanceEntry]]:
    reader = _Reader(memoryview(table), "layer table")
    entries: list[_Entry] = []
    total_elements = 0
    for i in range(n_entries):
        (name_len,) = reader.unpack(_NAME_LEN, f"entry {i} name length")
        try:
            name = str(reader.take(name_len, f"entry {i} name"), "utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"entry {i}: expected a UTF-8 name, found invalid bytes ({exc.reason})") from None
        what = f"entry {i} ({name!r})"
        dtype_code, ndim = reader.unpack(_DTYPE_NDIM, f"{what} dtype and ndim")
        dtype = _wire_dtype(dtype_code, f"{what} dtype")
        if ndim > _MAX_NDIM:
            raise DecodeError(f"{what}: expected at most {_MAX_NDIM} dimensions, found {ndim}")
        shape = struct.unpack(f"<{ndim}Q", reader.take(8 * ndim, f"{what} shape"))
        numel = math.prod(shape)
        # Each dimension too: an empty entry (a 0 in the shape) could otherwise carry dimensions numpy refuses.
        if numel > limits.max_elements_per_layer or max(shape, default=0) > limits.max_elements_per_layer:
            raise DecodeError(
                f"{what}: shape {shape} has {numel} elements, above max_elements_per_layer="
                f"{limits.max_elements_per_layer}"
            )
        total_elements += numel
        if total_elements > limits.max_total_elements:
            raise DecodeError(f"entries have over {limits.max_total_elements} elements (max_total_elements)")
        (mask_code, rice_k, n_kept, mask_codec, mask_stored, mask_raw, mask_crc, wire_code, values_codec,
         values_stored, values_crc) = reader.unpack(_ENTRY_TAIL, f"{what} sections")
        wire = _wire_dtype(wire_code, f"{what} values wire dtype")
        entries.append(
            _Entry(
                name=name,
                dtype=dtype,
                shape=tuple(int(s) for s in shape),
                numel=numel,
                mask_code=mask_code,
                rice_k=rice_k,
                n_kept=n_kept,
                mask=_Section(mask_codec, mask_stored, mask_raw, mask_crc),
                wire=wire,
                # The raw length of values is implied; n_kept is checked against numel before it is trusted.
                values=_Section(values_codec, values_stored, min(n_kept, numel) * wire.itemsize, values_crc),
            )
        )
    importance: list[_ImportanceEntry] = []
    for j in range(n_importance):
        field, dtype_code, wire_code, codec, stored, crc = reader.unpack(_IMPORTANCE_ENTRY, f"importance entry {j}")
        what = f"importance entry {j}"
        index = field & ~_IMPORTANCE_TOP_K_FLAG
        if index >= n_entries:
            raise DecodeError(f"{what}: expected a state entry index below {n_entries}, found {index}")
        dtype = _wire_dtype(dtype_code, f"{what} dtype")
        wire = _wire_dtype(wire_code, f"{what} wire dtype")
        numel = entries[index].numel
        total_elements += numel
        if total_elements > limits.max_total_elements:
            raise DecodeError(f"entries have over {limits.max_total_elements} elements (max_total_elements)")
        if not field & _IMPORTANCE_TOP_K_FLAG:
            importance.append(_ImportanceEntry(index, dtype, wire, _Section(codec, stored, numel * wire.itemsize, crc)))
            continue
        code, rice_k, n_top, positions_codec, positions_stored, positions_raw, positions_crc = reader.unpack(
            _IMPORTANCE_POSITIONS, f"{what} positions"
        )
        importance.append(
            _ImportanceEntry(
                index,
                dtype,
                wire,
                # n_top is checked against numel before it is trusted.
                _Section(codec, stored, min(n_top, numel) * wire.itemsize, crc),
                code,
                rice_k,
                n_top,
                _Section(positions_codec, positions_stored, positions_raw, positions_crc),
            )
        )
    if reader.pos != len(reader.buf):
        raise DecodeError(
            f"layer table: expected {reader.pos} bytes for {n_entries} entries and {n_importance} importance "
            f"entries, found {len(reader.buf)}"
        )
    return entries, importance


def _decode_values(
    buf: memoryview,
    section: _Section,
    wire: np.dtype,
    count: int,
    what: str,
    require_finite: bool,
) -> np.ndarray:
    """Return ``count`` wire-dtype values (possibly a read-only view; callers copy)."""
    raw = _section_bytes(buf[section.offset : section.offset + section.stored], section, what)
    if section.codec == _Codec.SHUFFLED_ZSTD:
        planes = np.frombuffer(raw, dtype=np.uint8).reshape(wire.itemsize, count)
        values = np.ascontiguousarray(planes.T).view(wire).reshape(count)
    else:
        values = np.frombuffer(raw, dtype=wire, count=count)
    if wire.kind == "b":
        # A bool is one byte that must be 0 or 1; numpy would accept any byte and misbehave later.
        if values.size and values.view(np.uint8).max() > 1:
            raise DecodeError(f"{what}: expected bool bytes 0 or 1, found {int(values.view(np.uint8).max())}")
    elif wire.kind == "f" and require_finite and values.size:
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise DecodeError(f"{what}: expected finite values, found {bad} NaN or inf")
    return values


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


def _rice_decode(raw: bytes | bytearray | memoryview, m: int, k: int, n_total: int, what: str) -> np.ndarray:
    """Invert `_rice_encode`: return m strictly increasing positions in [0, n_total)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    if m == 0:
        if data.size:
            raise DecodeError(f"{what}: expected no bytes for zero Rice codes, found {data.size}")
        return np.zeros(0, dtype=np.int64)
    n_remainder_bytes = (m * k + 7) // 8  # len(raw) >= this was checked in _check_entries
    unary = np.unpackbits(data[n_remainder_bytes:], bitorder="little").view(bool)  # bool: nonzero is ~8x faster
    terminators = np.flatnonzero(unary)
    if terminators.size != m:
        raise DecodeError(f"{what}: expected {m} Rice codes (one bits in the unary stream), found {terminators.size}")
    if terminators[-1] < unary.size - 8:
        raise DecodeError(f"{what}: unary stream has trailing zero bytes after its last code")
    quotients = np.diff(terminators, prepend=-1) - 1
    if k:
        remainders = _read_bit_fields(data[:n_remainder_bytes], m, k)
        used_bits = (m * k) % 8
        if used_bits and int(data[n_remainder_bytes - 1]) >> used_bits:
            raise DecodeError(f"{what}: expected zero padding bits after the Rice remainders, found ones")
    else:
        remainders = np.zeros(m, dtype=np.int64)
    # Overflow-free by construction: q <= (n_total - 1) >> k keeps q << k below 2**31 and g = (q << k) + r below
    # 2**32; then every g < n_total <= 2**31, so Σ (g + 1) over at most 2**31 gaps stays below 2**62.
    if int(quotients.max()) > (n_total - 1) >> k:
        raise DecodeError(f"{what}: a position gap exceeds the layer size {n_total}")
    gaps = (quotients << k) + remainders
    if int(gaps.max()) >= n_total:
        raise DecodeError(f"{what}: a position gap exceeds the layer size {n_total}")
    positions = np.cumsum(gaps + 1) - 1
    if int(positions[-1]) >= n_total:
        raise DecodeError(f"{what}: expected positions below {n_total}, found {int(positions[-1])}")
    return positions


def _read_bit_fields(data: np.ndarray, m: int, k: int) -> np.ndarray:
    """Return the m consecutive k-bit LSB-first fields of ``data`` (1 <= k <= 31) as int64, shape (m,).

    Field i starts at bit i·k: it is read as the little-endian 8-byte word at byte (i·k) >> 3, shifted right
    by (i·k) & 7 and masked to k bits (7 + 31 < 64). Memory is O(m) words, whatever k is: unpacking to one
    byte a bit would cost 8·k bytes a field.
    """
    padded = np.zeros(data.size + 8, dtype=np.uint8)  # 8 zero bytes: the last word may run past the data
    padded[: data.size] = data
    words = np.ndarray(shape=(data.size + 1,), dtype="<u8", buffer=padded, strides=(1,))  # word at every byte
    starts = np.arange(m, dtype=np.int64) * k
    fields = (words[starts >> 3] >> (starts & 7).astype(np.uint64)) & np.uint64((1 << k) - 1)
    return fields.astype(np.int64)


def _section_bytes(payload: memoryview, section: _Section, what: str) -> bytes | memoryview:
    """Return a section's raw bytes; a zstd frame is decompressed into a buffer of exactly the raw length.

    The raw length was bounded by the entry's shape and dtype before this is called. The frame must declare
    that length, use a window no larger than it (libzstd allocates the window the frame asks for), end exactly
    where the section ends (its blocks are walked without decompressing), and expand to exactly that many
    bytes: the output is read in a stream, in chunks, and never past the raw length.
    """
    if section.codec == _Codec.RAW:
        return payload
    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"{what}: expected a zstd frame header, found invalid bytes ({exc})") from None
    if params.content_size != section.raw:
        shown = "no size" if params.content_size == zstandard.CONTENTSIZE_UNKNOWN else f"{params.content_size} bytes"
        raise DecodeError(f"{what}: expected a zstd frame declaring {section.raw} bytes, found {shown}")
    max_window = max(section.raw, _MIN_WINDOW_BYTES)
    if params.window_size > max_window or params.dict_id:
        raise DecodeError(
            f"{what}: expected a zstd frame with a window of at most {max_window} bytes and no dictionary, found "
            f"a window of {params.window_size} bytes and dictionary id {params.dict_id}"
        )
    frame_bytes = _zstd_frame_bytes(payload, what)
    if frame_bytes != len(payload):
        raise DecodeError(
            f"{what}: expected one zstd frame filling the {len(payload)}-byte section, found a frame of "
            f"{frame_bytes} bytes ({'trailing bytes' if frame_bytes < len(payload) else 'truncated'})"
        )
    # Read in chunks rather than into a buffer of the declared length: a frame of a few bytes may declare
    # gigabytes that it does not hold, and memory then follows what it does hold, never past the declared length.
    decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW_BYTES)
    chunks: list[bytes] = []
    filled = 0
    try:
        reader = decompressor.stream_reader(payload, read_across_frames=False)
        while filled < section.raw:
            chunk = reader.read(min(section.raw - filled, _READ_CHUNK_BYTES))
            if not chunk:
                break
            chunks.append(chunk)
            filled += len(chunk)
        beyond = reader.read(1) if filled == section.raw else b""
    except zstandard.ZstdError as exc:
        raise DecodeError(f"{what}: corrupt zstd data ({exc})") from None
    if filled != section.raw or beyond:
        raise DecodeError(
            f"{what}: expected a zstd frame of exactly {section.raw} bytes, found "
            f"{'more' if beyond else filled}"
        )
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _zstd_frame_bytes(payload: memoryview, what: str) -> int:
    """Return the length of the zstd frame at the start of ``payload``, from its header and block headers."""
    try:
        pos = zstandard.frame_header_size(payload)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"{what}: expected a zstd frame header, found invalid bytes ({exc})") from None
    checksum_bytes = 4 if payload[4] & 0x04 else 0  # Content_Checksum_flag of the frame header descriptor
    n = len(payload)
    while True:
        # Block header: 3 bytes LE: bit 0 last block, bits 1-2 type (0 raw, 1 RLE, 2 compressed), bits 3+ size.
        if pos + 3 > n:
            raise DecodeError(f"{what}: zstd frame truncated in a block header at byte {pos} of {n}")
        header = payload[pos] | payload[pos + 1] << 8 | payload[pos + 2] << 16
        block_type, size = (header >> 1) & 3, header >> 3
        if block_type == 3:
            raise DecodeError(f"{what}: zstd block of reserved type 3 at byte {pos}")
        pos += 3 + (1 if block_type == 1 else size)
        if header & 1:
            return pos + checksum_bytes


def _wire_dtype(code: int, what: str) -> np.dtype:
    dtype = _DTYPES.get(code)
    if dtype is None:
        raise DecodeError(f"{what}: expected a dtype code in {sorted(_DTYPES)}, found {code}")
    return dtype


# --------------------------------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------------------------------


def _check_scalars(kind: _Kind, values: tuple, n_importance: int, require_finite: bool) -> tuple:
    """Check the kind's scalar fields; return them as Python values."""
    if kind == _Kind.TRAIN_INS:
        round_, lr, local_steps, batch_size, mode, upload = values
        _check_non_negative(round=round_, local_steps=local_steps, batch_size=batch_size)
        if not (math.isfinite(lr) and lr >= 0.0):
            raise DecodeError(f"expected a finite lr >= 0, found {lr}")
        if mode >= len(_IMPORTANCE_MODES):
            raise DecodeError(f"expected an importance_mode code below {len(_IMPORTANCE_MODES)}, found {mode}")
        _check_flag("upload_importance", upload)
    elif kind == _Kind.TRAIN_RES:
        client_id, num_examples, train_loss, compute_wall_s, has_importance = values
        _check_non_negative(client_id=client_id, num_examples=num_examples)
        if require_finite and not math.isfinite(train_loss):
            raise DecodeError(f"expected a finite train_loss, found {train_loss}")
        if not (math.isfinite(compute_wall_s) and compute_wall_s >= 0.0):
            raise DecodeError(f"expected a finite compute_wall_s >= 0, found {compute_wall_s}")
        _check_flag("has_importance", has_importance)
        if n_importance and not has_importance:
            raise DecodeError(f"has_importance is 0 but the table has {n_importance} importance entries")
    if n_importance and kind != _Kind.TRAIN_RES:
        raise DecodeError(f"a {kind.name} message carries no importance, found {n_importance} entries")
    return values


def _max_rice_k(numel: int) -> int:
    """Largest Rice parameter accepted for a layer of ``numel`` weights.

    Every gap is below ``numel``, so with ``k = numel.bit_length()`` every quotient is 0 and a larger ``k``
    only adds zero bits; the encoder's choice (at most one above Golomb's optimum, itself below
    ``log2(numel)``) never exceeds it.
    """
    return min(_MAX_RICE_K, numel.bit_length())


def _check_crc(stored: bytes | bytearray | memoryview, expected: int, what: str) -> None:
    found = zlib.crc32(stored)
    if found != expected:
        raise DecodeError(f"{what}: checksum mismatch (CRC32 {found:#010x}, expected {expected:#010x}): corrupt")


def _check_non_negative(**fields: int) -> None:
    for name, value in fields.items():
        if value < 0:
            raise DecodeError(f"expected {name} >= 0, found {value}")


def _check_flag(name: str, value: int) -> None:
    if value not in (0, 1):
        raise DecodeError(f"expected {name} 0 or 1, found {value}")


def _check_section_codec(section: _Section, what: str, allow_shuffle: bool) -> None:
    allowed = (_Codec.RAW, _Codec.ZSTD, _Codec.SHUFFLED_ZSTD) if allow_shuffle else (_Codec.RAW, _Codec.ZSTD)
    if section.codec not in allowed:
        raise DecodeError(f"{what}: expected a codec in {[int(c) for c in allowed]}, found {section.codec}")
    if section.codec == _Codec.RAW and section.stored != section.raw:
        raise DecodeError(f"{what}: raw section of {section.raw} bytes is stored as {section.stored}")
    if section.codec != _Codec.RAW and not 0 < section.stored < section.raw:
        # The encoder keeps zstd only where it shrinks a section; anything else is malformed.
        raise DecodeError(
            f"{what}: expected a compressed size in (0, {section.raw}), found {section.stored}"
        )


def _check_entries(
    entries: list[_Entry],
    importance: list[_ImportanceEntry],
    known_masks: Mapping[str, np.ndarray] | None,
    expected_shapes: Mapping[str, tuple[int, ...]] | None,
) -> None:
    """Check names, dtypes, counts and section lengths of the table against each other and the caller's data."""
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise DecodeError(f"expected unique entry names, found duplicates {duplicates}")
    if expected_shapes is not None:
        expected = {name: tuple(int(s) for s in shape) for name, shape in expected_shapes.items()}
        found = {e.name: e.shape for e in entries}
        if expected != found:
            missing = sorted(set(expected) - set(found))
            unexpected = sorted(set(found) - set(expected))
            reshaped = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])
            raise DecodeError(
                f"entries differ from expected_shapes: missing {missing}, unexpected {unexpected}, "
                f"other shape {[(n, found[n], expected[n]) for n in reshaped]} (found, expected)"
            )
    uses_known = False
    for e in entries:
        what = f"entry {e.name!r}"
        if not e.name:
            raise DecodeError("expected non-empty entry names, found an empty one")
        if e.mask_code not in set(_MaskCode):
            raise DecodeError(f"{what}: expected a mask code in 0..{max(_MaskCode)}, found {e.mask_code}")
        if e.n_kept > e.numel:
            raise DecodeError(f"{what}: {e.n_kept} kept coordinates in a shape of {e.numel} elements")
        rice = e.mask_code in (_MaskCode.RICE_KEPT, _MaskCode.RICE_PRUNED)
        if e.rice_k > (_max_rice_k(e.numel) if rice else 0):
            raise DecodeError(f"{what}: expected rice k <= {_max_rice_k(e.numel) if rice else 0}, found {e.rice_k}")
        _check_section_codec(e.mask, f"{what} mask", allow_shuffle=False)
        _check_section_codec(e.values, f"{what} values", allow_shuffle=True)
        if e.mask_code == _MaskCode.DENSE:
            if e.n_kept != e.numel or e.wire != e.dtype or e.mask.raw:
                raise DecodeError(
                    f"{what}: a dense entry needs n_kept = {e.numel}, wire dtype {e.dtype} and no mask, found "
                    f"{e.n_kept}, {e.wire} and {e.mask.raw} mask bytes"
                )
            continue
        if e.dtype.kind != "f" or e.wire.kind != "f":
            raise DecodeError(f"{what}: a masked entry must be float, found dtype {e.dtype}, wire {e.wire}")
        _check_mask_bytes(e.mask_code, e.rice_k, e.n_kept, e.numel, e.mask.raw, what, "mask")
        if e.mask_code == _MaskCode.KNOWN:
            uses_known = True
            _check_known_mask(e, known_masks)
    if uses_known:
        masked = {e.name for e in entries if e.mask_code != _MaskCode.DENSE}
        extra = sorted(set(known_masks or {}) - masked)
        if extra:
            raise DecodeError(f"known masks {extra} are not masked entries of the message")
    seen: set[int] = set()
    for imp in importance:
        e = entries[imp.entry]
        what = f"importance of {e.name!r}"
        if imp.entry in seen:
            raise DecodeError(f"expected one importance entry per state entry, found two for {e.name!r}")
        seen.add(imp.entry)
        if imp.dtype.kind != "f" or imp.wire.kind != "f":
            raise DecodeError(f"{what}: expected float dtypes, found {imp.dtype} (wire {imp.wire})")
        _check_section_codec(imp.values, what, allow_shuffle=True)
        if imp.positions is None:
            continue
        positions_what = f"{what} positions"
        if imp.position_code not in (_MaskCode.ALL_ONES, _MaskCode.BITMASK, _MaskCode.RICE_KEPT,
                                     _MaskCode.RICE_PRUNED):
            raise DecodeError(
                f"{positions_what}: expected a position code in 2..{max(_MaskCode)}, found {imp.position_code}"
            )
        if imp.n_top > e.numel:
            raise DecodeError(f"{positions_what}: {imp.n_top} values in a shape of {e.numel} elements")
        rice = imp.position_code in (_MaskCode.RICE_KEPT, _MaskCode.RICE_PRUNED)
        k_max = _max_rice_k(e.numel) if rice else 0
        if imp.rice_k > k_max:
            raise DecodeError(f"{positions_what}: expected rice k <= {k_max}, found {imp.rice_k}")
        _check_section_codec(imp.positions, positions_what, allow_shuffle=False)
        _check_mask_bytes(imp.position_code, imp.rice_k, imp.n_top, e.numel, imp.positions.raw, what, "positions")


def _check_mask_bytes(code: int, rice_k: int, n_kept: int, numel: int, raw: int, what: str, noun: str) -> None:
    """Check the raw length of a mask (or positions) section against its code and counts."""
    expected: tuple[int, int]  # inclusive range of the raw length
    if code in (_MaskCode.KNOWN, _MaskCode.ALL_ONES):
        expected = (0, 0)
        if code == _MaskCode.ALL_ONES and n_kept != numel:
            raise DecodeError(f"{what}: all-ones mask but {n_kept} of {numel} kept")
    elif code == _MaskCode.BITMASK:
        expected = ((numel + 7) // 8,) * 2
    else:
        # [ceil(m·k/8) remainder bytes][unary: m one bits and Σ q <= (n_total - m) >> k zero bits]
        m = n_kept if code == _MaskCode.RICE_KEPT else numel - n_kept
        remainder_bytes = (m * rice_k + 7) // 8
        expected = (remainder_bytes + (m + 7) // 8, remainder_bytes + (m + ((numel - m) >> rice_k) + 7) // 8)
    if not expected[0] <= raw <= expected[1]:
        raise DecodeError(
            f"{what}: expected {expected[0]}..{expected[1]} {noun} bytes for mask code {_MaskCode(code).name}, "
            f"found {raw}"
        )


def _check_same_masks(found: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray] | None) -> None:
    """Check that the masks a reply carries are the ones the server sent: same names, same bits."""
    sent = sent or {}
    if set(found) != set(sent):
        raise DecodeError(
            f"reply masks entries {sorted(found)}, the server sent masks for {sorted(sent)}; a client may "
            "change masks only where the method allows it (own_masks)"
        )
    changed = sorted(n for n in found if not np.array_equal(found[n], np.asarray(sent[n])))  # shape and bits
    if changed:
        raise DecodeError(
            f"reply carries masks for {changed} that differ from those the server sent; a client may change masks "
            "only where the method allows it (own_masks)"
        )


def _check_known_mask(e: _Entry, known_masks: Mapping[str, np.ndarray] | None) -> None:
    if known_masks is None or e.name not in known_masks:
        raise DecodeError(f"entry {e.name!r}: the message omits its mask, and known_masks has none")
    mask = np.asarray(known_masks[e.name])
    if mask.dtype != np.bool_ or mask.shape != e.shape:
        raise DecodeError(
            f"entry {e.name!r}: expected a bool known mask of shape {e.shape}, found {mask.dtype} {mask.shape}"
        )
    found = int(np.count_nonzero(mask))
    if found != e.n_kept:
        raise DecodeError(f"entry {e.name!r}: message has {e.n_kept} kept values, the known mask keeps {found}")


def _check_encode_inputs(
    state: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    importance: Mapping[str, np.ndarray] | None,
) -> None:
    if len(state) >= _IMPORTANCE_TOP_K_FLAG:  # the importance entry field holds the index in 31 bits
        raise ValueError(f"at most 2**31 - 1 entries fit the format, got {len(state)}")
    for name, value in state.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"entry names must be non-empty str, got {name!r}")
        try:
            n_name_bytes = len(name.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"entry name {name!r} is not valid UTF-8: {exc.reason}") from None
        if n_name_bytes > 0xFFFF:
            raise ValueError(f"entry name {name[:40]!r}... is {n_name_bytes} bytes, above 65535")
        arr = np.asarray(value)
        _dtype_code(arr.dtype, name)
        if arr.ndim > _MAX_NDIM or arr.size > _MAX_ELEMENTS_PER_ENTRY:
            raise ValueError(
                f"entry {name!r} has shape {arr.shape}; at most {_MAX_NDIM} dims and 2**31 elements fit the format"
            )
    unknown = sorted(set(masks) - set(state))
    if unknown:
        raise ValueError(f"masks {unknown} name no state entry")
    for name, mask in masks.items():
        mask_arr, arr = np.asarray(mask), np.asarray(state[name])
        if mask_arr.dtype != np.bool_ or mask_arr.shape != arr.shape:
            raise ValueError(
                f"mask of {name!r} must be bool of shape {arr.shape}, got {mask_arr.dtype} {mask_arr.shape}"
            )
        if arr.dtype.kind != "f":
            raise ValueError(f"masked entry {name!r} must be float, got {arr.dtype}")
    if importance is not None:
        for name, value in importance.items():
            arr = np.asarray(value)
            if name not in state or arr.shape != np.shape(state[name]):
                raise ValueError(
                    f"importance of {name!r} (shape {arr.shape}) must match a state entry of the same shape"
                )
            if arr.dtype.kind != "f":
                raise ValueError(f"importance of {name!r} must be float, got {arr.dtype}")
            _dtype_code(arr.dtype, name)

