"""Native CSR kernels for `SparseLinear`: compiled from `csr_kernels.c` on first use, torch kernels otherwise.

Why a compiled kernel: a sparse training step makes three passes over the kept weights, and torch's CSR
kernels (MKL SpMM, `sampled_addmm`, plus a per-step gather of the values into column order for the input
gradient) leave the backward at about three SpMMs. The C file fuses the backward into one pass and keeps the
batch in registers; `benchmarks/kernels.py` measures both paths side by side.

Why built here, not at install: the project installs editable from source, the file is small (one C file,
~0.5 s with gcc), and a build keyed on the source, the compiler flags and the CPU can use ``-march=native``
safely. Where no C compiler works (a phone, a minimal container), `library()` returns None, one warning is
logged, and `SparseLinear` uses torch's kernels: results are the same up to float rounding.

The library is cached in ``$PRUNEFL_CACHE_DIR/kernels`` (default ``~/.cache/prunefl/kernels``), written to a
temporary name and renamed, so concurrent processes never load a half-written file. ``PRUNEFL_NATIVE=0``
disables it. Calls go through `ctypes`, which releases the GIL. The kernels run their threads on the
process's OpenMP runtime, torch's own (measured: with fresh pthreads instead, a Conv-2 update slowed by ~10 %
under libgomp's default spin-waiting, as torch's idle workers and the new threads shared two cores); they use
``torch.get_num_threads()`` threads, fewer for small layers.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from prunefl.machine import cpu_model

__all__ = [
    "MAX_BATCH",
    "available",
    "csr_backward",
    "csr_forward",
    "csr_gather",
    "csr_scatter",
    "library",
    "pad_transpose",
    "padded_batch",
    "threads_for",
]

logger = logging.getLogger(__name__)

MAX_BATCH = 64
"""Largest batch (rows of x) the native kernels take; larger batches use torch's kernels."""

_LANES = 8  # floats per vector block of the C kernels
_SOURCE = "csr_kernels.c"
# Tried in order. -fopenmp links libgomp.so.1, which the loader resolves to the copy torch already loaded (same
# SONAME): the kernels then share torch's thread pool. -march=native is not accepted by every compiler.
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-fopenmp"],
    ["-O3", "-march=native"],
    ["-O3"],
)

_lock = threading.Lock()
_state: dict[str, ctypes.CDLL | None] = {}


def available() -> bool:
    """Return whether the native kernels are built and loaded (building them on the first call)."""
    return library() is not None


def library() -> ctypes.CDLL | None:
    """Return the loaded kernel library, building it if needed; None if disabled or no compiler works."""
    with _lock:
        if "lib" not in _state:
            _state["lib"] = _load()
        return _state["lib"]


def pad_transpose(a: Tensor, padded: int) -> Tensor:
    """Return ``a`` (batch, features) transposed to (features, padded), the batch zero-padded to `padded`.

    `a` is float32 on the CPU with any strides; `padded` is a multiple of 8, at least the batch.
    """
    lib = _require()
    _expect(a.dim() == 2 and a.dtype == torch.float32 and a.device.type == "cpu", "a must be 2-D float32 on the CPU")
    batch, features = a.shape
    _expect(padded % _LANES == 0 and batch <= padded <= MAX_BATCH, f"bad padded batch {padded} for {batch} rows")
    out = torch.empty((features, padded), dtype=torch.float32)
    lib.prunefl_pad_transpose(
        a.data_ptr(), batch, features, a.stride(0), a.stride(1), out.data_ptr(), padded
    )
    return out


def csr_forward(
    crow: Tensor, col: Tensor, values: Tensor, bias: Tensor | None, x_t: Tensor, rows: int
) -> Tensor:
    """Return ``bias + W x_t`` (rows, padded) for W in CSR and `x_t` (cols, padded) from `pad_transpose`."""
    lib = _require()
    _check_csr(crow, col, values, rows)
    _check_activations(x_t, None, "x_t")
    if bias is not None:
        _expect(_is_f32(bias) and bias.shape == (rows,), "bias must be contiguous float32 of shape (rows,)")
    padded = x_t.shape[1]
    y_t = torch.empty((rows, padded), dtype=torch.float32)
    rc = lib.prunefl_csr_forward(
        crow.data_ptr(),
        col.data_ptr(),
        values.data_ptr(),
        None if bias is None else bias.data_ptr(),
        x_t.data_ptr(),
        y_t.data_ptr(),
        rows,
        padded // _LANES,
        threads_for(values.numel()),
    )
    if rc != 0:
        raise ValueError(f"native csr_forward rejected a batch padded to {padded}")
    return y_t


def csr_backward(
    crow: Tensor,
    col: Tensor,
    values: Tensor,
    grad_y_t: Tensor,
    x_t: Tensor,
    cols: int,
    need_values: bool,
    need_x: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Return (grad of the kept values (nnz,), Wᵀ grad_y_t (cols, padded)); each None unless asked for.

    `grad_y_t` (rows, padded) and `x_t` (cols, padded) come from `pad_transpose`.
    """
    lib = _require()
    rows, padded = grad_y_t.shape
    _check_csr(crow, col, values, rows)
    _check_activations(grad_y_t, rows, "grad_y_t")
    _check_activations(x_t, cols, "x_t")
    _expect(x_t.shape[1] == padded, "x_t and grad_y_t must have the same padded batch")
    threads = threads_for(values.numel())
    grad_values = torch.empty_like(values) if need_values else None
    grad_x_t = torch.empty((cols, padded), dtype=torch.float32) if need_x else None
    scratch = torch.empty((threads - 1, cols, padded), dtype=torch.float32) if need_x and threads > 1 else None
    rc = lib.prunefl_csr_backward(
        crow.data_ptr(),
        col.data_ptr(),
        values.data_ptr(),
        grad_y_t.data_ptr(),
        x_t.data_ptr(),
        None if grad_values is None else grad_values.data_ptr(),
        None if grad_x_t is None else grad_x_t.data_ptr(),
        None if scratch is None else scratch.data_ptr(),
        rows,
        cols,
        padded // _LANES,
        threads,
    )
    if rc != 0:
        raise ValueError(f"native csr_backward rejected a batch padded to {padded}")
    return grad_values, grad_x_t


def csr_gather(crow: Tensor, col: Tensor, dense: Tensor, values: Tensor) -> None:
    """Write the kept coordinates of `dense` (rows, cols), contiguous float32, into `values` (nnz,) in CSR order."""
    lib = _require()
    rows, cols = _check_dense(dense)
    _check_csr(crow, col, values, rows)
    threads = threads_for(dense.numel() // 8)  # memory-bound over the whole weight, not just the kept values
    lib.prunefl_csr_gather(crow.data_ptr(), col.data_ptr(), dense.data_ptr(), values.data_ptr(), rows, cols, threads)


def csr_scatter(crow: Tensor, col: Tensor, values: Tensor, dense: Tensor, zero_pruned: bool) -> None:
    """Write `values` (nnz,) to their coordinates in `dense` (rows, cols), contiguous float32; optionally zero the rest."""
    lib = _require()
    rows, cols = _check_dense(dense)
    _check_csr(crow, col, values, rows)
    threads = threads_for(dense.numel() // 8)
    lib.prunefl_csr_scatter(
        crow.data_ptr(), col.data_ptr(), values.data_ptr(), dense.data_ptr(), rows, cols, int(zero_pruned), threads
    )


def threads_for(nnz: int) -> int:
    """Threads for a kernel over `nnz` kept weights: torch's count, but >= 32k weights each (a thread costs ~30 µs)."""
    return max(1, min(torch.get_num_threads(), nnz // 32768))


def padded_batch(batch: int) -> int:
    """Return the batch rounded up to the kernels' lane multiple (8)."""
    return -(-batch // _LANES) * _LANES


# Shape, dtype, device and layout checks before any pointer reaches C: a few microseconds per call. The index
# values themselves (crow monotone, col < cols) are not re-read per call: they come from a mask (`SparseLinear`).


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"native CSR kernels: {message}")


def _is_f32(t: Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def _check_csr(crow: Tensor, col: Tensor, values: Tensor, rows: int) -> None:
    index_ok = all(t.dtype == torch.int32 and t.device.type == "cpu" and t.is_contiguous() for t in (crow, col))
    _expect(index_ok and crow.dim() == 1 and col.dim() == 1, "crow and col must be contiguous 1-D int32 on the CPU")
    _expect(_is_f32(values) and values.dim() == 1, "values must be contiguous 1-D float32 on the CPU")
    _expect(crow.numel() == rows + 1, f"crow must have rows + 1 = {rows + 1} entries, got {crow.numel()}")
    _expect(col.numel() == values.numel() == int(crow[-1]), "col, values and crow[-1] must agree on the kept count")


def _check_activations(t: Tensor, features: int | None, name: str) -> None:
    shape_ok = t.dim() == 2 and (features is None or t.shape[0] == features)
    _expect(_is_f32(t) and shape_ok, f"{name} must be contiguous 2-D float32 of {features or 'any'} rows")
    _expect(t.shape[1] % _LANES == 0 and 0 < t.shape[1] <= MAX_BATCH, f"{name} must have a padded batch of 8..64")


def _check_dense(dense: Tensor) -> tuple[int, int]:
    _expect(_is_f32(dense) and dense.dim() == 2, "dense must be a contiguous 2-D float32 tensor on the CPU")
    return int(dense.shape[0]), int(dense.shape[1])


def _require() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError("the native CSR kernels are not available (see prunefl.sparse.native)")
    return lib


def _load() -> ctypes.CDLL | None:
    if os.environ.get("PRUNEFL_NATIVE", "1").strip() == "0":
        logger.info("native CSR kernels disabled by PRUNEFL_NATIVE=0; using torch's kernels")
        return None
    try:
        path = _build()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as error:  # a damaged cached file (disk full, killed copy): build it again, once
            logger.warning("cached native kernels %s do not load (%s); rebuilding", path, error)
            path.unlink(missing_ok=True)
            lib = ctypes.CDLL(str(_build()))
        _declare(lib)
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        logger.warning("native CSR kernels unavailable (%s); using torch's kernels", error)
        return None
    return lib


def _build(flag_sets: Sequence[Sequence[str]] = _FLAG_SETS) -> Path:
    """Compile the C source into the cache unless a library for this source, flags, CPU and compiler is there."""
    source = resources.files("prunefl.sparse").joinpath(_SOURCE).read_bytes()
    compiler = shlex.split(os.environ.get("CC", ""))  # may carry a launcher or options ("ccache gcc"), as for make
    if not compiler:
        found = next((path for path in map(shutil.which, ("cc", "gcc", "clang")) if path), None)
        if found is None:
            raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
        compiler = [found]
    parts = [source, " ".join(compiler).encode(), platform.machine().encode(), cpu_model().encode()]
    parts += [" ".join(flags).encode() for flags in flag_sets]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    cache = Path(os.environ.get("PRUNEFL_CACHE_DIR") or Path.home() / ".cache" / "prunefl") / "kernels"
    target = cache / f"csr_kernels-{key}.so"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src = Path(tmp) / _SOURCE
        src.write_bytes(source)
        out = Path(tmp) / "lib.so"
        errors = []
        for flags in flag_sets:
            cmd = [*compiler, *flags, "-fPIC", "-shared", "-pthread", str(src), "-o", str(out)]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode == 0:
                os.replace(out, target)  # atomic: another process sees the whole file or none
                logger.info("built native CSR kernels: %s", " ".join(cmd[:-3]))
                return target
            errors.append(f"{' '.join(flags)}: {result.stderr.strip()[-300:]}")
        raise RuntimeError("compiling csr_kernels.c failed: " + " | ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.prunefl_max_batch.restype = i64
    lib.prunefl_pad_transpose.argtypes = [p, i64, i64, i64, i64, p, i64]
    lib.prunefl_pad_transpose.restype = None
    lib.prunefl_csr_forward.argtypes = [p, p, p, p, p, p, i64, i64, i32]
    lib.prunefl_csr_forward.restype = i32
    lib.prunefl_csr_backward.argtypes = [p, p, p, p, p, p, p, p, i64, i64, i64, i32]
    lib.prunefl_csr_backward.restype = i32
    lib.prunefl_csr_gather.argtypes = [p, p, p, p, i64, i64, i32]
    lib.prunefl_csr_gather.restype = None
    lib.prunefl_csr_scatter.argtypes = [p, p, p, p, i64, i64, i32, i32]
    lib.prunefl_csr_scatter.restype = None
    if lib.prunefl_max_batch() != MAX_BATCH:
        raise RuntimeError("csr_kernels.c and native.py disagree on the largest batch")
