"""Tests for prunefl.sparse.native: the compiled CSR kernels compute what torch's kernels compute, and fall back."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from prunefl.sparse import native
from prunefl.sparse.linear import SparseLinear

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: native CSR kernels not built")


def test_native_kernels_build_where_ci_requires_them() -> None:
    # scripts/test.sh sets PRUNEFL_REQUIRE_NATIVE=1: a silent fallback there would leave the kernels untested.
    if os.environ.get("PRUNEFL_REQUIRE_NATIVE") != "1":
        pytest.skip("PRUNEFL_REQUIRE_NATIVE is not set")
    assert native.available()


def sparse_pair(out_features: int, in_features: int, density: float, seed: int, bias: bool = True):
    """Two SparseLinear copies of one random masked layer: native kernels, and torch's kernels."""
    generator = torch.Generator().manual_seed(seed)
    dense = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(out_features, in_features, generator=generator))
    mask = torch.rand(out_features, in_features, generator=generator) < density
    fast = SparseLinear.from_dense(dense, mask, dense_weight_grad=True)
    slow = SparseLinear.from_dense(dense, mask, dense_weight_grad=True)
    slow.native = False
    return fast, slow


def run(layer: SparseLinear, x: Tensor, grad_y: Tensor) -> dict[str, Tensor]:
    layer.zero_grad()
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    y.backward(grad_y)
    out = {"y": y.detach(), "grad_x": x.grad, "grad_values": layer.values.grad, "weight_grad": layer.weight_grad}
    if layer.bias is not None:
        out["grad_bias"] = layer.bias.grad
    return out


@needs_native
@pytest.mark.parametrize("batch", [1, 7, 8, 9, 20, 33, 63, 64])
@pytest.mark.parametrize("bias", [True, False])
def test_native_matches_torch_kernels_for_every_batch_block_count(batch: int, bias: bool) -> None:
    # Prepare
    fast, slow = sparse_pair(40, 70, 0.3, seed=batch, bias=bias)
    generator = torch.Generator().manual_seed(batch + 100)
    x = torch.randn(batch, 70, generator=generator)
    grad_y = torch.randn(batch, 40, generator=generator)

    # Execute
    got, expected = run(fast, x, grad_y), run(slow, x, grad_y)

    # Assert
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], **TOLERANCE, msg=lambda m, k=key: f"{k}: {m}")


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_native_backward_is_the_same_whatever_the_thread_count(threads: int) -> None:
    # Prepare: 256×512 at density 0.6 keeps ~79k weights, enough for up to 2 kernel threads (32k each)
    fast, slow = sparse_pair(256, 512, 0.6, seed=1)
    generator = torch.Generator().manual_seed(2)
    x, grad_y = torch.randn(20, 512, generator=generator), torch.randn(20, 256, generator=generator)
    before = torch.get_num_threads()

    # Execute
    torch.set_num_threads(threads)
    try:
        got = run(fast, x, grad_y)
    finally:
        torch.set_num_threads(before)
    expected = run(slow, x, grad_y)

    # Assert: sums of ~300 products of N(0, 1) terms, added in another order: a few ulps of values up to ~60
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)


@needs_native
def test_native_kernels_take_strided_inputs_and_upstream_gradients() -> None:
    # Prepare: x as a transposed view, grad_y as a column slice of a wider tensor
    fast, slow = sparse_pair(16, 24, 0.4, seed=3)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(24, 10, generator=generator).t()
    grad_y = torch.randn(10, 32, generator=generator)[:, ::2]
    assert not x.is_contiguous() and not grad_y.is_contiguous()

    # Execute
    got, expected = run(fast, x, grad_y), run(slow, x, grad_y)

    # Assert
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], **TOLERANCE)


@needs_native
def test_native_backward_skips_what_no_one_needs() -> None:
    # Prepare: input without grad (first layer) and frozen values: only the bias gets a gradient
    fast, _ = sparse_pair(8, 12, 0.5, seed=5)
    fast.dense_weight_grad = False
    fast.values.requires_grad_(False)
    x = torch.randn(4, 12)

    # Execute
    fast(x).sum().backward()

    # Assert
    assert fast.values.grad is None and fast.weight_grad is None
    torch.testing.assert_close(fast.bias.grad, torch.full((8,), 4.0))


@needs_native
def test_native_forward_of_an_empty_pattern_is_the_bias() -> None:
    layer = SparseLinear(5, 3, torch.zeros(3, 5, dtype=torch.bool))
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, -2.0, 3.0]))

    y = layer(torch.randn(6, 5))

    torch.testing.assert_close(y, torch.tensor([[1.0, -2.0, 3.0]]).expand(6, 3))


def test_batches_above_the_native_limit_and_float64_use_torch_kernels() -> None:
    # Prepare: both fall outside the native kernels and must still be right
    fast, slow = sparse_pair(10, 12, 0.5, seed=6)
    x = torch.randn(native.MAX_BATCH + 1, 12)
    grad_y = torch.randn(native.MAX_BATCH + 1, 10)

    # Execute
    got, expected = run(fast, x, grad_y), run(slow, x, grad_y)
    fast64 = SparseLinear(4, 3, torch.ones(3, 4, dtype=torch.bool)).double()
    y64 = fast64(torch.randn(2, 4, dtype=torch.float64))

    # Assert
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], **TOLERANCE)
    assert y64.dtype == torch.float64


def test_pad_transpose_pads_the_batch_with_zeros() -> None:
    if not native.available():
        pytest.skip("no C compiler")
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)

    out = native.pad_transpose(a, 8)

    assert out.shape == (3, 8)
    torch.testing.assert_close(out[:, :2], a.t())
    assert bool((out[:, 2:] == 0).all())


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**{k: v for k, v in os.environ.items() if k != "CC"}, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


PROBE = """
import logging, torch
logging.basicConfig(level=logging.WARNING)
from prunefl.sparse import native
from prunefl.sparse.linear import SparseLinear
layer = SparseLinear(3, 2, torch.tensor([[True, False, True], [False, True, False]]))
with torch.no_grad():
    layer.values.copy_(torch.tensor([1.0, 2.0, 3.0]))
print(native.available(), layer(torch.ones(1, 3)).tolist())
"""


def test_prunefl_native_0_disables_the_kernels_and_results_stay_right(tmp_path: Path) -> None:
    result = _python(PROBE, {"PRUNEFL_NATIVE": "0", "PRUNEFL_CACHE_DIR": str(tmp_path)})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False [[3.0, 3.0]]"
    assert not (tmp_path / "kernels").exists()  # nothing built


def test_a_broken_compiler_falls_back_with_one_warning(tmp_path: Path) -> None:
    result = _python(PROBE, {"CC": "/bin/false", "PRUNEFL_CACHE_DIR": str(tmp_path), "PRUNEFL_NATIVE": "1"})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False [[3.0, 3.0]]"
    assert result.stderr.count("native CSR kernels unavailable") == 1
    assert not list((tmp_path / "kernels").glob("*.so"))  # no half-built library left behind


@needs_native
def test_the_library_is_built_once_into_the_cache_and_reused(tmp_path: Path) -> None:
    env = {"PRUNEFL_CACHE_DIR": str(tmp_path), "PRUNEFL_NATIVE": "1"}

    first = _python(PROBE, env)
    built = sorted((tmp_path / "kernels").glob("csr_kernels-*.so"))
    mtime = built[0].stat().st_mtime_ns if built else None
    second = _python(PROBE, env)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip() == "True [[3.0, 3.0]]"
    assert len(built) == 1
    assert sorted((tmp_path / "kernels").glob("csr_kernels-*.so")) == built
    assert built[0].stat().st_mtime_ns == mtime  # not rebuilt
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [built[0].name]  # no temporary folders left


@needs_native
@pytest.mark.parametrize("zero_pruned", [True, False])
def test_native_gather_and_scatter_move_exactly_the_kept_coordinates(zero_pruned: bool) -> None:
    # Prepare: a weight large enough for two copy threads, and a torch-kernel twin
    generator = torch.Generator().manual_seed(7)
    dense = nn.Linear(300, 400)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(400, 300, generator=generator))
    mask = torch.rand(400, 300, generator=generator) < 0.2
    fast = SparseLinear.from_dense(dense, mask)
    slow = SparseLinear(300, 400, mask)
    slow.native = False
    with torch.no_grad():
        slow.values.copy_(torch.take(dense.weight, slow.flat_indices))
    target = nn.Linear(300, 400)
    before = target.weight.detach().clone()

    # Execute
    gathered = fast.values.detach().clone()
    with torch.no_grad():
        fast.values.mul_(3.0)
    fast.to_dense_(target, zero_pruned=zero_pruned)

    # Assert: gather equals torch.take; scatter writes the kept values and zeroes (or keeps) the rest
    torch.testing.assert_close(gathered, slow.values, rtol=0, atol=0)
    torch.testing.assert_close(target.weight[mask], 3.0 * dense.weight[mask], rtol=0, atol=0)
    expected_pruned = torch.zeros_like(before[~mask]) if zero_pruned else before[~mask]
    torch.testing.assert_close(target.weight[~mask], expected_pruned, rtol=0, atol=0)
    torch.testing.assert_close(target.bias, fast.bias, rtol=0, atol=0)


def test_to_dense_into_a_non_contiguous_weight_is_still_right() -> None:
    # Prepare: a weight that is a transposed view (the native scatter needs contiguous memory: torch path)
    layer = SparseLinear(3, 2, torch.tensor([[True, False, True], [False, True, False]]))
    with torch.no_grad():
        layer.values.copy_(torch.tensor([1.0, 2.0, 3.0]))
    target = nn.Linear(3, 2)
    target.weight = nn.Parameter(torch.full((3, 2), 9.0).t())
    assert not target.weight.is_contiguous()

    # Execute
    layer.to_dense_(target, zero_pruned=False)

    # Assert: pruned coordinates are zeroed on that path whatever zero_pruned says (documented)
    torch.testing.assert_close(target.weight, torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))


@needs_native
def test_the_pthreads_build_without_openmp_computes_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a real build without -fopenmp (the path for compilers without OpenMP), swapped in as the library
    monkeypatch.setenv("PRUNEFL_CACHE_DIR", str(tmp_path))
    lib = ctypes.CDLL(str(native._build([["-O3"]])))
    native._declare(lib)
    fast, slow = sparse_pair(256, 512, 0.6, seed=8)
    generator = torch.Generator().manual_seed(9)
    x, grad_y = torch.randn(20, 512, generator=generator), torch.randn(20, 256, generator=generator)
    expected = run(slow, x, grad_y)
    target = nn.Linear(512, 256)

    # Execute: two threads, so the pthread fan-out runs
    monkeypatch.setitem(native._state, "lib", lib)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threads = native.threads_for(fast.nnz)
        got = run(fast, x, grad_y)
        fast.to_dense_(target)
    finally:
        torch.set_num_threads(before)

    # Assert
    assert threads == 2
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)
    assert bool((target.weight != 0).sum() <= fast.nnz)


@needs_native
def test_cc_with_a_launcher_and_options_is_split_like_make_does(tmp_path: Path) -> None:
    # "env gcc -O1": a launcher, the compiler, an option; our flags come after it
    result = _python(PROBE, {"CC": "env gcc -O1", "PRUNEFL_CACHE_DIR": str(tmp_path), "PRUNEFL_NATIVE": "1"})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True [[3.0, 3.0]]"
    assert len(list((tmp_path / "kernels").glob("csr_kernels-*.so"))) == 1


@needs_native
@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: native.pad_transpose(torch.zeros(2, 3, dtype=torch.float64), 8), "2-D float32"),
        (lambda: native.pad_transpose(torch.zeros(2, 3), 4), "padded batch"),
        (lambda: native.pad_transpose(torch.zeros(70, 3), 72), "padded batch"),
        (
            lambda: native.csr_forward(
                torch.tensor([0, 1], dtype=torch.int64), torch.tensor([0], dtype=torch.int32), torch.ones(1), None,
                torch.zeros(1, 8), 1,
            ),
            "int32",
        ),
        (
            lambda: native.csr_forward(
                torch.tensor([0, 2], dtype=torch.int32), torch.tensor([0], dtype=torch.int32), torch.ones(1), None,
                torch.zeros(1, 8), 1,
            ),
            "kept count",
        ),
        (
            lambda: native.csr_backward(
                torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0], dtype=torch.int32), torch.ones(1),
                torch.zeros(1, 8), torch.zeros(2, 16), 2, True, True,
            ),
            "same padded batch",
        ),
        (
            lambda: native.csr_scatter(
                torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0], dtype=torch.int32), torch.ones(1),
                torch.zeros(3, 2).t(), True,
            ),
            "contiguous 2-D float32",
        ),
    ],
)
def test_native_entry_points_reject_bad_tensors_before_touching_memory(call, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        call()


@needs_native
def test_a_damaged_cached_library_is_rebuilt(tmp_path: Path) -> None:
    # Prepare: build once, then overwrite the cached library with garbage
    env = {"PRUNEFL_CACHE_DIR": str(tmp_path), "PRUNEFL_NATIVE": "1"}
    assert _python(PROBE, env).returncode == 0
    (cached,) = (tmp_path / "kernels").glob("csr_kernels-*.so")
    cached.write_bytes(b"not a shared library")

    # Execute
    result = _python(PROBE, env)

    # Assert: rebuilt, loaded, and said so
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True [[3.0, 3.0]]"
    assert "rebuilding" in result.stderr
    assert cached.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize("use_native", [True, False])
def test_recorded_weight_grad_is_the_sum_of_the_per_step_dense_gradients(use_native: bool) -> None:
    # Prepare: the same three steps through a recording layer and a per-step dense-gradient layer
    if use_native and not native.available():
        pytest.skip("no C compiler")
    fast, slow = sparse_pair(30, 50, 0.2, seed=11)
    recording = fast
    recording.native = use_native
    recording.dense_weight_grad = False
    recording.record_inputs = True
    generator = torch.Generator().manual_seed(12)
    steps = [(torch.randn(7, 50, generator=generator), torch.randn(7, 30, generator=generator)) for _ in range(3)]

    # Execute
    expected = torch.zeros(30, 50)
    for x, grad_y in steps:
        recording(x.requires_grad_()).backward(grad_y)
        expected += run(slow, x, grad_y)["weight_grad"]
    with torch.no_grad():
        recording(steps[0][0])  # no graph: nothing recorded
    total = recording.recorded_weight_grad()

    # Assert: one sum over the three steps, then nothing left
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)
    assert recording.weight_grad is None  # no per-step dense GEMM ran
    assert recording.recorded_weight_grad() is None
