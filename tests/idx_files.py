"""Write small, learnable data sets in the real MNIST/Fashion-MNIST IDX format, for end-to-end tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write ``array`` (uint8) as an IDX file: magic (0, 0, 0x08, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_fashion_like(directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Create the four Fashion-MNIST files: 10 classes, each a fixed random 28x28 pattern plus noise."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    patterns = rng.integers(0, 256, size=(10, 28, 28))

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        noise = rng.normal(0, 40, size=(n, 28, 28))
        images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
        return images, labels

    x, y = make(n_train)
    write_idx(directory / "train-images-idx3-ubyte", x)
    write_idx(directory / "train-labels-idx1-ubyte", y)
    x, y = make(n_test)
    write_idx(directory / "t10k-images-idx3-ubyte", x)
    write_idx(directory / "t10k-labels-idx1-ubyte", y)
    return directory
