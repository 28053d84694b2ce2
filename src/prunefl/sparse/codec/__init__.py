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
  and in total) by `DecodeLimits`, and by ``expected_shapes`` and ``expected_dtypes`` when the receiver knows
  the model (a server passes the shapes and dtypes it sent; `prunefl.fl.links.ServerLink` does); the raw
  length of a values section is implied by its count and dtype, that of a mask by its code, count and Rice
  ``k`` (itself at most ``numel.bit_length()``, and a Rice code covers at most half a layer: the minority
  side); the table by its entry counts. A zstd section must declare its raw length and a window no larger,
  must end where the section ends, and is decompressed in a stream, never past it: a section over one 1 MiB
  chunk is first expanded keeping nothing, to check it holds exactly its length, and only then read into one
  buffer of that length (memory follows what a frame holds, not what it declares, and is never twice it).
  Decoding then needs O(decoded arrays) memory: Rice codes are decoded 1 kB of unary stream at a time into
  int32 positions, byte-shuffled values are unshuffled straight into the array returned, and the finiteness
  check allocates nothing. Measured (tests/sparse/test_codec_fuzz_structured.py): a reply decoded against
  the model sent never allocates more than 4 × the model's dense size + 1 MiB (at most 3.6 × for a one-layer
  model in every encoding, and for hostile Rice sections coding half the layer).
* **Replies.** `decode_train_res` requires a reply to mask exactly the entries the server masked, each with
  the shape of the mask sent, whatever ``own_masks`` says (checked on the table); without ``own_masks`` the
  masks a reply carries must equal those sent, bit for bit.
* **One exception type.** Every malformed input raises `DecodeError` (or a subclass naming the mismatch);
  any other ``Exception`` inside the decoder (a bug, or a ``MemoryError``) is turned into one whose message
  starts with "malformed message (no explicit check caught it)".

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
  A decoder rejects Rice codes for more than half a layer (never the minority side).
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
      4    2     u16   format version (2)
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

Modules
-------
``format`` (layout, codes, dtypes, checksums), ``limits`` (`DecodeLimits`, field checks), ``masks`` (bitmask and
Golomb-Rice position coding), ``compress`` (zstd sections), ``container`` (header, table and body of one message)
and ``messages`` (TrainIns, TrainRes and states; the only module that knows the message types).
"""

from __future__ import annotations

from prunefl.sparse.codec.format import FORMAT_VERSION, MAGIC
from prunefl.sparse.codec.limits import DecodeLimits
from prunefl.sparse.codec.masks import information_bound_bits
from prunefl.sparse.codec.messages import (
    decode_state,
    decode_train_ins,
    decode_train_res,
    encode_state,
    encode_train_ins,
    encode_train_res,
)

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
