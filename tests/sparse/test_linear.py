"""Tests for prunefl.sparse.linear: SparseLinear computes exactly what a masked dense nn.Linear computes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from prunefl.errors import ConfigError
from prunefl.sparse.linear import SparseLinear

# Float32 tolerances for sparse against dense results: the kernels add the same products in another order
# (CSR rows, sampled dot products), so results differ by a few ulps of the largest partial sum. With at most
# 64 terms of magnitude <= ~10 here, 1e-5 absolute and relative bounds that with room to spare.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def masked_pair(
    out_features: int, in_features: int, density: float, seed: int, bias: bool = True
) -> tuple[nn.Linear, SparseLinear, Tensor]:
    """A dense layer with its pruned weights zeroed, its sparse copy, and the mask (random, `density` kept)."""
    generator = torch.Generator().manual_seed(seed)
    dense = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(out_features, in_features, generator=generator))
        if bias:
            dense.bias.copy_(torch.randn(out_features, generator=generator))
    mask = torch.rand(out_features, in_features, generator=generator) < density
    with torch.no_grad():
        dense.weight.mul_(mask)
    return dense, SparseLinear.from_dense(dense, mask, dense_weight_grad=True), mask


def forward_backward(layer: nn.Module, x: Tensor, grad_y: Tensor) -> tuple[Tensor, Tensor]:
    """Return the output and the input gradient of one forward+backward with upstream gradient `grad_y`."""
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    y.backward(grad_y)
    assert x.grad is not None
    return y.detach(), x.grad


def assert_matches_masked_dense(out_features: int, in_features: int, batch: int, density: float, seed: int) -> None:
    # Prepare
    dense, sparse, mask = masked_pair(out_features, in_features, density, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, in_features, generator=generator)
    grad_y = torch.randn(batch, out_features, generator=generator)

    # Execute
    y_dense, grad_x_dense = forward_backward(dense, x, grad_y)
    y_sparse, grad_x_sparse = forward_backward(sparse, x, grad_y)

    # Assert: forward, input gradient, dense weight gradient (pruned coordinates too), kept values, bias
    assert sparse.nnz == int(mask.count_nonzero())
    torch.testing.assert_close(y_sparse, y_dense, **TOLERANCE)
    torch.testing.assert_close(grad_x_sparse, grad_x_dense, **TOLERANCE)
    torch.testing.assert_close(sparse.weight_grad, dense.weight.grad, **TOLERANCE)
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad[mask], **TOLERANCE)
    torch.testing.assert_close(sparse.bias.grad, dense.bias.grad, **TOLERANCE)


# --- equality with the masked dense layer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("out_features", "in_features", "batch", "density"),
    [
        (5, 7, 3, 0.0),  # fully empty matrix: nnz = 0, output = bias
        (5, 7, 3, 1.0),  # full density: every coordinate stored
        (6, 4, 1, 0.3),  # batch of one; some rows empty at this density
        (1, 9, 4, 0.5),  # a single output row
        (9, 1, 4, 0.5),  # a single input column
        (64, 48, 20, 0.1),  # fc-like, low density, the batch size of the paper
    ],
)
def test_sparse_linear_matches_masked_dense_linear(
    out_features: int, in_features: int, batch: int, density: float
) -> None:
    assert_matches_masked_dense(out_features, in_features, batch, density, seed=0)


@settings(max_examples=25, deadline=None)
@given(
    out_features=st.integers(1, 12),
    in_features=st.integers(1, 12),
    batch=st.integers(1, 5),
    density=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_sparse_linear_matches_masked_dense_on_random_shapes(
    out_features: int, in_features: int, batch: int, density: float, seed: int
) -> None:
    assert_matches_masked_dense(out_features, in_features, batch, density, seed)


def test_sparse_linear_function_passes_gradcheck_in_float64() -> None:
    # Prepare: finite differences against the analytic backward, for x, values and bias at once
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(14)) < 0.5
    layer = SparseLinear(5, 4, mask).double()
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(15), requires_grad=True)
    values = torch.randn(layer.nnz, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def forward(x: Tensor, values: Tensor, bias: Tensor) -> Tensor:
        return torch.func.functional_call(layer, {"values": values, "bias": bias}, (x,))

    # Execute / Assert
    assert torch.autograd.gradcheck(forward, (x, values, bias))


def test_sparse_linear_with_empty_rows_outputs_bias_there() -> None:
    # Prepare: row 1 keeps nothing, so its output is its bias, whatever x is
    dense = nn.Linear(3, 2)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    with torch.no_grad():
        dense.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        dense.bias.copy_(torch.tensor([0.5, -1.0]))
    sparse = SparseLinear.from_dense(dense, mask)

    # Execute
    y = sparse(torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]]))

    # Assert: row 0: 1·x0 + 3·x2 + 0.5 = 4.5 and -0.5; row 1: -1.0
    torch.testing.assert_close(y, torch.tensor([[4.5, -1.0], [-0.5, -1.0]]), rtol=0, atol=0)


def test_sparse_linear_accepts_leading_batch_dimensions() -> None:
    # Prepare
    dense, sparse, _ = masked_pair(4, 6, 0.5, seed=3)
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(4))

    # Execute
    y = sparse(x)

    # Assert
    assert y.shape == (2, 3, 4)
    torch.testing.assert_close(y, dense(x), **TOLERANCE)


def test_sparse_linear_without_bias_matches_dense() -> None:
    # Prepare
    dense, sparse, mask = masked_pair(4, 5, 0.5, seed=5, bias=False)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(6))

    # Execute
    sparse(x).sum().backward()
    dense(x).sum().backward()

    # Assert
    assert sparse.bias is None
    torch.testing.assert_close(sparse.values.grad, dense.weight.grad[mask], **TOLERANCE)


# --- stored values and the dense weight gradient ---------------------------------------------------------


def test_nnz_equals_mask_count_when_kept_values_are_exactly_zero() -> None:
    # Prepare: all weights 0, so value-based conversion (the official to_sparse) would store nothing
    dense = nn.Linear(4, 3)
    with torch.no_grad():
        dense.weight.zero_()
    mask = torch.tensor([[True, False, True, False], [False, False, False, False], [True, True, True, True]])

    # Execute
    sparse = SparseLinear.from_dense(dense, mask)

    # Assert: 2 + 0 + 4 explicit zeros, in row-major order
    assert sparse.nnz == 6
    assert torch.equal(sparse.values.detach(), torch.zeros(6))
    assert sparse.crow_indices.tolist() == [0, 2, 2, 6]
    assert sparse.col_indices.tolist() == [0, 2, 0, 1, 2, 3]


def test_kept_zero_values_still_get_gradient() -> None:
    # Prepare: kept weight 0 must train like any kept weight
    dense = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        dense.weight.zero_()
    sparse = SparseLinear.from_dense(dense, torch.tensor([[True, False]]))

    # Execute: y = w·x0, dL/dw = x0 = 3
    sparse(torch.tensor([[3.0, 7.0]])).sum().backward()

    # Assert
    assert sparse.values.grad is not None
    assert sparse.values.grad.tolist() == [3.0]


def test_csc_pattern_lists_the_csr_values_column_by_column() -> None:
    # Prepare: W = [[1, 0, 2], [0, 3, 4]], row-major values [1, 2, 3, 4]
    mask = torch.tensor([[True, False, True], [False, True, True]])
    sparse = SparseLinear(3, 2, mask, bias=False)
    with torch.no_grad():
        sparse.values.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))

    # Execute
    by_column = sparse.values.detach()[sparse.csc_permutation]

    # Assert: columns 0 → [1], 1 → [3], 2 → [2, 4]
    assert by_column.tolist() == [1.0, 3.0, 2.0, 4.0]
    assert sparse.ccol_indices.tolist() == [0, 1, 2, 4]
    assert sparse.csc_row_indices.tolist() == [0, 1, 0, 1]


def test_pattern_from_with_the_same_mask_shares_index_buffers() -> None:
    # Prepare
    dense, first, mask = masked_pair(5, 6, 0.4, seed=13)

    # Execute
    second = SparseLinear.from_dense(dense, mask.clone(), pattern_from=first)

    # Assert: the same index tensors (no rebuild), fresh values and parameters
    assert second.col_indices is first.col_indices and second.csc_permutation is first.csc_permutation
    assert second.values is not first.values
    torch.testing.assert_close(second.values, first.values, rtol=0, atol=0)


def test_pattern_from_with_another_mask_builds_new_indices() -> None:
    # Prepare: the same kept count, one coordinate moved, so only a full comparison tells them apart
    dense = nn.Linear(3, 2)
    before = torch.tensor([[True, False, True], [False, True, False]])
    after = torch.tensor([[True, True, False], [False, True, False]])
    first = SparseLinear.from_dense(dense, before)

    # Execute
    second = SparseLinear.from_dense(dense, after, pattern_from=first)

    # Assert
    assert not first.matches_mask(after)
    assert second.col_indices is not first.col_indices
    assert second.col_indices.tolist() == [0, 1, 1]
    torch.testing.assert_close(second.values.detach(), dense.weight.detach()[after], rtol=0, atol=0)


def test_dense_weight_grad_off_computes_no_dense_gradient() -> None:
    # Prepare
    _, sparse, _ = masked_pair(3, 4, 0.5, seed=7)
    sparse.dense_weight_grad = False

    # Execute
    sparse(torch.ones(2, 4)).sum().backward()

    # Assert
    assert sparse.weight_grad is None
    assert sparse.values.grad is not None


def test_dense_weight_grad_accumulates_and_zero_grad_resets_it() -> None:
    # Prepare: y = W x with x = ones, upstream ones: dL/dW = 1 everywhere, pruned coordinates included
    sparse = SparseLinear(2, 2, torch.tensor([[True, False], [False, False]]), bias=False, dense_weight_grad=True)

    # Execute
    sparse(torch.ones(1, 2)).sum().backward()
    sparse(torch.ones(1, 2)).sum().backward()
    accumulated = sparse.weight_grad.clone() if sparse.weight_grad is not None else None
    sparse.zero_grad()

    # Assert: two passes add up, as .grad does
    assert accumulated is not None
    assert accumulated.tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert sparse.weight_grad is None and sparse.values.grad is None


def test_no_grad_forward_builds_no_graph() -> None:
    # Prepare
    _, sparse, _ = masked_pair(3, 4, 0.5, seed=8)

    # Execute
    with torch.no_grad():
        y = sparse(torch.ones(2, 4))

    # Assert
    assert not y.requires_grad
    assert sparse.weight_grad is None


# --- training and conversion ------------------------------------------------------------------------------


def test_sgd_with_sparse_layer_equals_masked_dense_training() -> None:
    # Prepare: the same layer trained both ways, 3 SGD steps with momentum-free SGD
    dense, sparse, mask = masked_pair(6, 8, 0.4, seed=9)
    generator = torch.Generator().manual_seed(10)
    batches = [(torch.randn(5, 8, generator=generator), torch.randn(5, 6, generator=generator)) for _ in range(3)]
    dense_optimizer = torch.optim.SGD(dense.parameters(), lr=0.1)
    sparse_optimizer = torch.optim.SGD(sparse.parameters(), lr=0.1)

    # Execute: dense path = the masked step of spec §3 (mask the update, re-zero pruned weights)
    for x, target in batches:
        dense_optimizer.zero_grad()
        nn.functional.mse_loss(dense(x), target).backward()
        with torch.no_grad():
            assert dense.weight.grad is not None
            dense.weight.grad.mul_(mask)
        dense_optimizer.step()
        with torch.no_grad():
            dense.weight.mul_(mask)
        sparse_optimizer.zero_grad()
        sparse.zero_grad()
        nn.functional.mse_loss(sparse(x), target).backward()
        sparse_optimizer.step()
    exported = nn.Linear(8, 6)
    sparse.to_dense_(exported)

    # Assert: same weights, updated only at kept coordinates, pruned ones 0
    torch.testing.assert_close(exported.weight, dense.weight, **TOLERANCE)
    torch.testing.assert_close(exported.bias, dense.bias, **TOLERANCE)
    assert torch.count_nonzero(exported.weight.detach()[~mask]) == 0


def test_from_dense_to_dense_round_trip_keeps_kept_values_and_zeroes_pruned() -> None:
    # Prepare: weights not yet masked, so pruned coordinates hold non-zeros that must be dropped
    source = nn.Linear(5, 4)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(11)) < 0.5
    target = nn.Linear(5, 4)
    weight_id = id(target.weight)

    # Execute
    SparseLinear.from_dense(source, mask).to_dense_(target)

    # Assert: exact copies (no arithmetic), target's parameter objects kept
    assert torch.equal(target.weight, source.weight * mask)
    assert torch.equal(target.bias, source.bias)
    assert id(target.weight) == weight_id


def test_from_dense_shares_no_storage_with_the_dense_layer() -> None:
    # Prepare
    dense = nn.Linear(3, 2)
    sparse = SparseLinear.from_dense(dense, torch.ones(2, 3, dtype=torch.bool))

    # Execute
    with torch.no_grad():
        sparse.values.add_(1.0)
        assert sparse.bias is not None
        sparse.bias.add_(1.0)

    # Assert
    assert not torch.equal(sparse.values.detach(), dense.weight.detach().flatten())
    assert not torch.equal(sparse.bias.detach(), dense.bias.detach())


def test_state_dict_round_trip_restores_values_and_pattern() -> None:
    # Prepare
    _, sparse, mask = masked_pair(3, 4, 0.5, seed=12)
    copy = SparseLinear(4, 3, mask)

    # Execute
    copy.load_state_dict(sparse.state_dict())

    # Assert
    torch.testing.assert_close(copy(torch.ones(2, 4)), sparse(torch.ones(2, 4)), rtol=0, atol=0)


# --- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "expected_in_message"),
    [
        # a float 0/1 mask, as the official code used
        (torch.ones(2, 3), "torch.bool"),
        # transposed shape (in, out)
        (torch.ones(3, 2, dtype=torch.bool), r"\(2, 3\)"),
        # not a tensor at all
        ([[True, True, True], [True, True, True]], "torch.Tensor"),
    ],
)
def test_from_dense_bad_mask_raises(mask: object, expected_in_message: str) -> None:
    # Prepare
    dense = nn.Linear(3, 2)

    # Execute / Assert
    with pytest.raises(ConfigError, match=expected_in_message):
        SparseLinear.from_dense(dense, mask)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target",
    [
        nn.Linear(3, 3),  # wrong out_features
        nn.Linear(4, 2),  # wrong in_features
        nn.Linear(3, 2, bias=False),  # bias missing
    ],
)
def test_to_dense_into_mismatching_linear_raises(target: nn.Linear) -> None:
    # Prepare
    sparse = SparseLinear.from_dense(nn.Linear(3, 2), torch.ones(2, 3, dtype=torch.bool))

    # Execute / Assert
    with pytest.raises(ConfigError, match="out_features, in_features, has_bias"):
        sparse.to_dense_(target)
