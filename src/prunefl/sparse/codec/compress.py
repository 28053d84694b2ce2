"""zstd sections: per-section compression on encode, bounded streaming decompression on decode."""

from __future__ import annotations

import numpy as np
import zstandard

from prunefl.errors import DecodeError
from prunefl.sparse.codec.format import _Codec, _Section



_ZSTD_LEVELS = range(-7, zstandard.MAX_COMPRESSION_LEVEL + 1)
_MAX_WINDOW_BYTES = 1 << 27  # zstd's default decoder limit; bounds the decoder's window memory
_MIN_WINDOW_BYTES = 1 << 10  # zstd's smallest window; a frame may ask for it however short its content
_READ_CHUNK_BYTES = 1 << 20  # decompressed sections are read in chunks of this size
_MIN_COMPRESS_BYTES = 64  # below this the zstd frame header (>= 9 bytes) rarely pays for itself
_SAMPLE_ELEMENTS = 65536  # values sections over 4x this are first compressed on their first elements ...
_SAMPLE_WORTH_IT = 0.98  # ... and sent raw unless the sample shrinks to 98 % or less


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


def _section_bytes(payload: memoryview, section: _Section, what: str) -> bytes | memoryview:
    """Return a section's raw bytes; a zstd frame is decompressed into a buffer of exactly the raw length.

    The raw length was bounded by the entry's shape and dtype before this is called. The frame must declare
    that length, use a window no larger than it (libzstd allocates the window the frame asks for), end exactly
    where the section ends (its blocks are walked without decompressing), and expand to exactly that many
    bytes: the output is read in a stream and never past the raw length. A section of at most one chunk
    (1 MiB) is read once; a longer one is expanded twice, first keeping nothing to check its length, then
    into one buffer of that length (so memory is the raw length once, and only for a frame that holds it).
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
    # A frame of a few bytes may declare gigabytes that it does not hold: a first pass reads it in chunks,
    # keeping none, and checks that it expands to exactly the declared length (memory: one chunk); only then is
    # a buffer of that length allocated and filled by a second pass. A section of at most one chunk is read once.
    # Peak memory is thus the raw length (plus one chunk), never twice it, and never more than the frame holds.
    decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW_BYTES)
    try:
        if section.raw <= _READ_CHUNK_BYTES:
            reader = decompressor.stream_reader(payload, read_across_frames=False)
            data = reader.read(section.raw)
            while len(data) < section.raw:  # a reader may return fewer bytes than asked before the frame ends
                more = reader.read(section.raw - len(data))
                if not more:
                    break
                data += more
            _check_expanded(len(data), bool(reader.read(1)), section, what)
            return data
        filled, holds_more = _count_expanded(decompressor, payload, section.raw)
        _check_expanded(filled, holds_more, section, what)
        out = np.empty(section.raw, dtype=np.uint8)
        view = memoryview(out.data)
        reader = decompressor.stream_reader(payload, read_across_frames=False)
        filled = 0
        while filled < section.raw:
            n = reader.readinto(view[filled : filled + _READ_CHUNK_BYTES])
            if not n:
                break
            filled += n
        _check_expanded(filled, False, section, what)
        return view
    except zstandard.ZstdError as exc:
        raise DecodeError(f"{what}: corrupt zstd data ({exc})") from None


def _count_expanded(decompressor: zstandard.ZstdDecompressor, payload: memoryview, raw: int) -> tuple[int, bool]:
    """Decompress the frame in chunks, keeping none; return the bytes it holds up to ``raw`` and if it holds more."""
    reader = decompressor.stream_reader(payload, read_across_frames=False)
    filled = 0
    while filled < raw:
        chunk = reader.read(min(raw - filled, _READ_CHUNK_BYTES))
        if not chunk:
            return filled, False
        filled += len(chunk)
    return filled, bool(reader.read(1))


def _check_expanded(filled: int, beyond: bool, section: _Section, what: str) -> None:
    if filled != section.raw or beyond:
        raise DecodeError(
            f"{what}: expected a zstd frame of exactly {section.raw} bytes, found {'more' if beyond else filled}"
        )


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
