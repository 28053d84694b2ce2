"""Data files that lie about their size or expand without bound give DataError naming the file (issue 10, part 4).

Every file is small and made here in tmp_path; a "huge" file is sparse (its size is a hole, nothing is written), and
memory bounds are measured with tracemalloc, which sees every bytes object Python allocates.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from idx_files import write_fashion_like, write_idx
from prunefl.cli import main
from prunefl.data.cifar import MAX_CIFAR_BATCH_BYTES, read_cifar_batch
from prunefl.data.idx import MAX_IDX_PAYLOAD_BYTES, load_fashion_mnist, read_idx
from prunefl.data.imagefolder import MAX_IMAGE_PIXELS, read_images
from prunefl.data.leaf import MAX_LEAF_JSON_BYTES, read_femnist
from prunefl.errors import DataError


def _idx_header(dims: tuple[int, ...], type_code: int = 0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, type_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def _traced_peak_bytes(call: Any) -> tuple[BaseException | None, int]:
    """Run ``call()``; return what it raised and the peak of Python allocations meanwhile."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except BaseException as exc:  # noqa: BLE001 - handed back to the test
        raised = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return raised, peak


# ----------------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize(
    "content, fragment",
    [
        (_idx_header((1000,)) + b"\x07" * 3, "IDX payload is 3 bytes, expected 1000"),  # product > length
        (_idx_header((2, 2)) + b"\x07" * 5, "IDX payload is 5 bytes, expected 4"),  # product < length
        (_idx_header((2**32 - 1,) * 3), "declares shape (4294967295, 4294967295, 4294967295) of uint8"),  # huge
        (_idx_header((2**32 - 1,) * 255), "255 dims"),  # 2^8160 bytes: would wrap an int64 product around
        (_idx_header((2**30 + 1,), 0x0E), f"at most {MAX_IDX_PAYLOAD_BYTES} are read"),  # 8 GiB of float64
        (_idx_header((0, 2**32 - 1)), None),  # an empty array of a huge row is fine: 0 bytes
    ],
)
def test_raw_idx_header_that_lies_is_refused_before_reading_payload(
    tmp_path: Path, content: bytes, fragment: str | None
) -> None:
    # Prepare
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(content)
    # Execute
    raised, peak = _traced_peak_bytes(lambda: read_idx(path))
    # Assert
    if fragment is None:
        assert raised is None
    else:
        assert isinstance(raised, DataError)
        assert fragment in str(raised) and str(path) in str(raised)
    assert peak < 1 << 20  # nothing the size of the declared payload was allocated


def test_gzip_bomb_is_decompressed_only_one_byte_past_its_declared_size(tmp_path: Path) -> None:
    # Prepare: a 3-label header followed by 64 MiB of zeros, ~65 kB compressed (deflate's ~1000:1 ratio)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header((3,)) + bytes(64 << 20), compresslevel=9))
    # Execute
    raised, peak = _traced_peak_bytes(lambda: read_idx(path))
    # Assert: "trailing bytes", found by reading 1 byte more than declared, not by inflating 64 MiB
    assert isinstance(raised, DataError)
    assert "IDX payload is longer than the 3 bytes expected for shape (3,)" in str(raised)
    assert str(path) in str(raised)
    assert peak < 4 << 20  # the compressed file (65 kB) and zlib's window, not 64 MiB


def test_gzip_header_declaring_more_than_the_file_can_expand_to_is_refused_undecompressed(tmp_path: Path) -> None:
    # Prepare: 10^9 labels declared, a few bytes of payload: no gzip of ~40 bytes expands to 1 GB
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header((10**9,)) + b"\x01\x02"))
    # Execute
    raised, peak = _traced_peak_bytes(lambda: read_idx(path))
    # Assert
    assert isinstance(raised, DataError)
    assert "declares 1000000008 bytes, more than a gzip file of" in str(raised) and str(path) in str(raised)
    assert peak < 1 << 20


def test_gzip_stream_cut_mid_payload_is_data_error(tmp_path: Path) -> None:
    # Prepare: 20 kB of random labels, so the deflate stream is long and cutting it loses payload
    labels = np.random.default_rng(0).integers(0, 10, 20_000).astype(np.uint8)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header((20_000,)) + labels.tobytes())[:5000])
    # Execute / Assert
    with pytest.raises(DataError, match="corrupt or truncated gzip data") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_gzip_with_a_corrupt_deflate_stream_is_data_error(tmp_path: Path) -> None:
    # Prepare: a gzip header followed by bytes that are not deflate (block type 3 is reserved)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 32)
    # Execute / Assert
    with pytest.raises(DataError, match="corrupt or truncated gzip data"):
        read_idx(path)


def test_cli_exits_2_naming_a_lying_idx_file_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a real small Fashion-MNIST layout whose test labels declare 10^6 labels but hold 200 (31 bytes)
    data = write_fashion_like(tmp_path / "fm", n_train=60, n_test=200)
    bad = data / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(_idx_header((10**6,)) + bytes(200)))
    # Execute
    code = main(["run", "--config", "fmnist-conv2", "--set", f"data.data_dir={data}", "--set", "threads=1",
                 "--out", str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    # Assert
    assert code == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "IDX header declares 1000008 bytes, more than a gzip file of 31 bytes" in err
    assert not (tmp_path / "out").exists()


def test_load_fashion_mnist_still_reads_honest_files(tmp_path: Path) -> None:
    # Prepare
    data = write_fashion_like(tmp_path / "fm", n_train=30, n_test=20)
    write_idx(data / "t10k-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 10, compress=False)
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    # Execute
    ds = load_fashion_mnist(data)
    # Assert
    assert (len(ds.y_train), ds.y_test.tolist()) == (30, [i % 10 for i in range(20)])


# ---------------------------------------------------------------------------------------------------------- LEAF


_X = json.dumps([[0.5] * 784])  # one well-formed FEMNIST sample


def _leaf_root(tmp_path: Path, train_text: str | None = None) -> Path:
    root = tmp_path / "femnist"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        content = {"users": ["u"], "num_samples": [1], "user_data": {"u": {"x": [[0.5] * 784], "y": [3]}}}
        (root / split / "d.json").write_text(json.dumps(content))
    if train_text is not None:
        (root / "train" / "d.json").write_text(train_text)
    return root


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[" * 100_000 + "]" * 100_000, "cannot read LEAF JSON file"),  # deeper than the recursion limit
        ('{"users": ' + "[" * 5000 + "]" * 5000 + "}", "cannot read LEAF JSON file"),  # deep inside an object
        ('{"users": ["u"], "num_samples": [1' + "0" * 5000 + "]}", "Exceeds the limit"),  # 5001-digit integer
        (
            '{"users": ["u"], "user_data": {"u": {"x": [' + "[" * 200 + "]" * 200 + '], "y": [1]}}}',
            "samples are not lists of 784 numbers",
        ),  # a sample nested 200 deep
        ('{"users": ["u"], "user_data": {"u": {"x": ' + _X + ', "y": [[[1]]]}}}', "labels must be integers"),
        ('{"users": ["u"], "user_data": {"u": {"x": ' + _X + ', "y": [1e400]}}}', "labels must be integers"),  # inf
        ('{"users": [["u"]], "user_data": {}}', "has no \"user_data\" entry"),  # a user that is not a string
        ('\xff\xfe{"users": []}', "cannot read LEAF JSON file"),  # not UTF-8 (written as latin-1 below)
    ],
)
def test_leaf_json_too_deep_or_malformed_is_data_error_naming_the_file(
    tmp_path: Path, text: str, fragment: str
) -> None:
    # Prepare
    root = _leaf_root(tmp_path)
    path = root / "train" / "d.json"
    path.write_bytes(text.encode("latin-1"))
    # Execute
    with pytest.raises(DataError) as info:
        read_femnist(root)
    # Assert
    assert fragment in str(info.value)
    assert str(root / "train") in str(info.value)


def test_leaf_json_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    # Prepare: a sparse file one byte over the cap (a hole: no disk, no memory)
    root = _leaf_root(tmp_path)
    path = root / "train" / "d.json"
    with path.open("r+b") as f:
        f.truncate(MAX_LEAF_JSON_BYTES + 1)
    # Execute
    raised, peak = _traced_peak_bytes(lambda: read_femnist(root))
    # Assert
    assert isinstance(raised, DataError)
    assert f"is larger than {MAX_LEAF_JSON_BYTES} bytes" in str(raised) and str(path) in str(raised)
    assert peak < 1 << 20


# --------------------------------------------------------------------------------------------------------- CIFAR


class _LyingArray:
    """Pickles as an ndarray whose state declares shape (10000, 3072) but carries 10 bytes."""

    def __reduce__(self) -> Any:
        from numpy._core.multiarray import _reconstruct

        state = (1, (10000, 3072), np.dtype(np.uint8), False, bytes(10))
        return _reconstruct, (np.ndarray, (0,), b"b"), state


def _write_batch(path: Path, batch: Any) -> None:
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


def test_cifar_batch_whose_array_declares_more_rows_than_it_holds_is_data_error(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "data_batch_1"
    _write_batch(path, {b"data": _LyingArray(), b"labels": [0] * 10000})
    # Execute / Assert
    with pytest.raises(DataError, match="is not a valid CIFAR batch pickle") as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)


def test_cifar_labels_nested_by_reference_are_refused_before_numpy_expands_them(tmp_path: Path) -> None:
    # Prepare: 40 levels of [inner, inner]: a ~7 kB pickle, 2^41 ints once np.asarray flattens it
    nested: Any = [0, 0]
    for _ in range(40):
        nested = [nested, nested]
    path = tmp_path / "data_batch_1"
    _write_batch(path, {b"data": np.zeros((2, 3072), np.uint8), b"labels": nested})
    assert path.stat().st_size < 8192
    # Execute
    raised, peak = _traced_peak_bytes(lambda: read_cifar_batch(path))
    # Assert
    assert isinstance(raised, DataError)
    assert 'b"labels" must be a flat list of integer labels, found list' in str(raised) and str(path) in str(raised)
    assert peak < 4 << 20  # the 1 MiB read buffer and the unpickled object graph, not 2^41 ints


@pytest.mark.parametrize(
    "labels, fragment",
    [
        ([0, 10**30], "found object"),  # does not fit an int64
        (np.zeros((2, 1), np.int64), "found int64 (2, 1)"),  # a 2-D array
        ([0, True], "flat list of integer labels, found list"),  # a bool is not a label
    ],
)
def test_cifar_labels_of_the_wrong_kind_are_data_error(tmp_path: Path, labels: Any, fragment: str) -> None:
    # Prepare
    path = tmp_path / "test_batch"
    _write_batch(path, {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels})
    # Execute / Assert
    with pytest.raises(DataError) as info:
        read_cifar_batch(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_cifar_batch_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    # Prepare: a sparse file one byte over the cap
    path = tmp_path / "data_batch_1"
    with path.open("wb") as f:
        f.truncate(MAX_CIFAR_BATCH_BYTES + 1)
    # Execute
    raised, peak = _traced_peak_bytes(lambda: read_cifar_batch(path))
    # Assert
    assert isinstance(raised, DataError)
    assert f"is larger than {MAX_CIFAR_BATCH_BYTES} bytes" in str(raised) and str(path) in str(raised)
    assert peak < 1 << 20


# --------------------------------------------------------------------------------------------------- image folder


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG with only its IHDR chunk: Pillow opens it lazily and reports the declared size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    "width, height",
    [
        (9000, 9000),  # 81 MP: above our cap, below Pillow's own bomb error (179 MP): Pillow would decode it
        (100_000, 100_000),  # 10^10 pixels: Pillow's DecompressionBombError, reported the same way
    ],
)
def test_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    # Prepare
    path = tmp_path / "huge.png"
    _png_header_only(path, width, height)
    # Execute
    raised, peak = _traced_peak_bytes(lambda: read_images([path], 8))
    # Assert
    assert isinstance(raised, DataError)
    assert str(path) in str(raised)
    assert f"more than the {MAX_IMAGE_PIXELS} decoded" in str(raised) or "decompression bomb" in str(raised)
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "content",
    [
        b"this is a text file, not a picture\n",  # not an image at all
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # a PNG signature, then garbage
        b"\xff\xd8\xff\xe0" + b"\x00" * 16,  # a JPEG start, then nothing
    ],
)
def test_file_with_an_image_suffix_that_is_no_image_is_data_error(tmp_path: Path, content: bytes) -> None:
    # Prepare
    path = tmp_path / "n01440764_1.JPEG"
    path.write_bytes(content)
    # Execute / Assert
    with pytest.raises(DataError, match="cannot decode image") as info:
        read_images([path], 8)
    assert str(path) in str(info.value)


def test_png_that_declares_its_size_honestly_but_is_cut_is_data_error(tmp_path: Path) -> None:
    # Prepare: a real 64x64 PNG of noise, cut in the middle of its pixel data
    path = tmp_path / "cut.png"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    # Execute / Assert
    with pytest.raises(DataError, match="cannot decode image") as info:
        read_images([path], 8)
    assert str(path) in str(info.value)
