"""Measure the wire codec on Conv-2-sized layers: bytes against dense float32 and the information bound, and speed.

The numbers that decide something: bytes per message relative to the information bound (kept values at 32 bits
plus H(d) bits per weight for the mask; acceptance <= 1.05 at densities <= 0.3) and to dense float32 (<= 1.01 at
density 1), and the encode / decode milliseconds a round adds per client.

Usage::

    .venv/bin/python benchmarks/codec.py                  # Conv-2 layers, 6 densities, 5 repeats
    .venv/bin/python benchmarks/codec.py --repeats 9 --values-dtype float16
    .venv/bin/python benchmarks/codec.py --smoke          # tiny layers, one repeat: checks the script runs
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import struct
import sys
import time
from pathlib import Path

import numpy as np
import zstandard

from prunefl.sparse.codec import FORMAT_VERSION, decode_state, encode_state, information_bound_bits
from prunefl.machine import cpu_model

# Prunable weights of Conv-2 (spec §6: 6,601,504), hard-coded so the benchmark does not depend on prunefl.models.
CONV2_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (32, 1, 5, 5),
    "conv2.weight": (64, 32, 5, 5),
    "fc1.weight": (2048, 3136),
    "fc2.weight": (62, 2048),
}
# Smoke sizes: the same four layers, a few hundred weights each.
TINY_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (4, 1, 3, 3),
    "conv2.weight": (8, 4, 3, 3),
    "fc1.weight": (16, 32),
    "fc2.weight": (6, 16),
}
DENSITIES = (1.0, 0.5, 0.3, 0.1, 0.05, 0.01)
SEED = 0
MAX_BOUND_RATIO = 1.05  # acceptance at densities <= 0.3
MAX_DENSE_RATIO = 1.01  # acceptance at density 1


def make_state(shapes: dict[str, tuple[int, ...]], density: float, seed: int):
    """Random N(0, 1) float32 weights under Bernoulli(density) masks; pruned coordinates are 0."""
    gen = np.random.default_rng(seed)
    state, masks = {}, {}
    for name, shape in shapes.items():
        mask = gen.random(shape, dtype=np.float32) < density
        state[name] = gen.standard_normal(shape, dtype=np.float32) * mask
        masks[name] = mask
    return state, masks


def time_runs(fn, repeats: int, burn_in: int = 1) -> tuple[list[float], object]:
    """Return the perf_counter durations of ``repeats`` calls after ``burn_in`` untimed ones, and the last result."""
    result = None
    for _ in range(burn_in):
        result = fn()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        durations.append(time.perf_counter() - start)
    return durations, result


def mask_section_bytes(data: bytes) -> int:
    """Sum the stored mask section lengths of a state message, read with the layout of the codec's docstring."""
    _, _, _, table_codec, n_entries, _, table_stored, _, _ = struct.unpack_from("<4sHBBIIQQI", data)
    table = data[40 : 40 + table_stored]  # 36-byte fixed header, no kind scalars (state), 4-byte header checksum
    if table_codec == 1:
        table = zstandard.ZstdDecompressor().decompress(table)
    pos, total = 0, 0
    for _ in range(n_entries):
        (name_len,) = struct.unpack_from("<H", table, pos)
        pos += 2 + name_len
        ndim = table[pos + 1]
        pos += 2 + 8 * ndim
        # mask code, rice k, n_kept, mask codec, mask stored, mask raw, mask CRC, wire dtype, values codec,
        # values stored, values CRC
        total += struct.unpack_from("<BBQBQQIBBQI", table, pos)[4]
        pos += 45
    return total


def binary_entropy(d: float) -> float:
    return 0.0 if d in (0.0, 1.0) else -(d * math.log2(d) + (1 - d) * math.log2(1 - d))


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)  # no import: torch would take seconds to load
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed encode and decode runs (median)")
    parser.add_argument("--values-dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--level", default="3", help="zstd level, or 'none' for raw sections (default: 3)")
    parser.add_argument("--json", default="benchmarks/results/codec.json", help="where to write results")
    parser.add_argument("--smoke", action="store_true", help="tiny layers, one repeat: checks the script runs")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    level = None if args.level.lower() == "none" else int(args.level)
    shapes = TINY_SHAPES if args.smoke else CONV2_SHAPES
    repeats = 1 if args.smoke else args.repeats
    value_bits = 16 if args.values_dtype == "float16" else 32

    rows = []
    header = (
        f"{'density':>7} {'bytes':>11} {'dense f32':>11} {'/dense':>7} {'bound':>11} {'/bound':>7} "
        f"{'mask b/w':>8} {'H(d)':>6} {'enc ms':>7} {'dec ms':>7} {'exact':>5}"
    )
    print(header)
    print("-" * len(header))
    for i, density in enumerate(DENSITIES):
        state, masks = make_state(shapes, density, SEED + i)
        n_total = sum(m.size for m in masks.values())
        n_kept = sum(int(m.sum()) for m in masks.values())
        encode_s, data = time_runs(
            lambda: encode_state(state, masks, include_masks=True, values_dtype=args.values_dtype, level=level),
            repeats,
        )
        decode_s, (decoded, decoded_masks) = time_runs(lambda: decode_state(data), repeats)  # type: ignore[misc]
        exact = all(np.array_equal(decoded_masks[n], masks[n]) for n in masks) and (
            args.values_dtype == "float16" or all(np.array_equal(decoded[n], state[n]) for n in state)
        )
        n_bytes = len(data)
        dense_bytes = 4 * n_total
        bound_bytes = sum(information_bound_bits(m.size, int(m.sum()), value_bits) for m in masks.values()) / 8
        row = {
            "density": density,
            "measured_density": n_kept / n_total,
            "n_total": n_total,
            "n_kept": n_kept,
            "bytes": n_bytes,
            "dense_float32_bytes": dense_bytes,
            "ratio_to_dense": n_bytes / dense_bytes,
            "bound_bytes": bound_bytes,
            "ratio_to_bound": n_bytes / bound_bytes if bound_bytes else math.inf,
            "mask_bits_per_weight": 8 * mask_section_bytes(data) / n_total,
            "entropy_bits_per_weight": binary_entropy(n_kept / n_total),
            "encode_ms": 1e3 * statistics.median(encode_s),
            "encode_runs_s": encode_s,
            "decode_ms": 1e3 * statistics.median(decode_s),
            "decode_runs_s": decode_s,
            "exact_round_trip": exact,
        }
        # Acceptance (spec'd for Conv-2 sizes; tiny smoke layers are dominated by the table and not judged).
        if density <= 0.3:
            row["accepted"] = row["ratio_to_bound"] <= MAX_BOUND_RATIO
        elif density == 1.0:
            row["accepted"] = row["ratio_to_dense"] <= MAX_DENSE_RATIO
        else:
            row["accepted"] = True
        rows.append(row)
        print(
            f"{density:>7.2f} {n_bytes:>11,} {dense_bytes:>11,} {row['ratio_to_dense']:>7.4f} "
            f"{bound_bytes:>11,.0f} {row['ratio_to_bound']:>7.4f} {row['mask_bits_per_weight']:>8.4f} "
            f"{row['entropy_bits_per_weight']:>6.4f} {row['encode_ms']:>7.1f} {row['decode_ms']:>7.1f} "
            f"{str(exact):>5}"
        )

    out = {
        "benchmark": "codec",
        "config": {
            "shapes": {name: list(shape) for name, shape in shapes.items()},
            "densities": list(DENSITIES),
            "repeats": repeats,
            "burn_in": 1,
            "values_dtype": args.values_dtype,
            "level": level,
            "include_masks": True,
            "seed": SEED,
            "format_version": FORMAT_VERSION,
            "max_bound_ratio": MAX_BOUND_RATIO,
            "max_dense_ratio": MAX_DENSE_RATIO,
            "smoke": args.smoke,
        },
        "numpy_version": np.__version__,
        "torch_version": package_version("torch"),
        "zstandard_version": package_version("zstandard"),
        "python_version": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "results": rows,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    ok = all(r["exact_round_trip"] for r in rows)
    if not args.smoke:
        ok = ok and all(r["accepted"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
