"""A fully connected layer whose weight is stored as CSR values at the kept coordinates of a mask.

The sparse layer computes what a masked dense `nn.Linear` computes, with CPU sparse kernels whose cost scales
with the kept count (spec §3.9, §10 items 7-8). Two implementations, same results up to float rounding:

- native (`prunefl.sparse.native`, the default for float32 CPU batches of at most 64 rows): the forward
  ``yᵀ = b ⊕ W xᵀ`` and a fused backward that, in one pass over the CSR, gives both the input gradient
  ``gxᵀ = Wᵀ gyᵀ`` and the kept-value gradient (``gyᵀ x`` sampled at the pattern), with the batch in registers;
- torch (`SparseLinear.native` False, other dtypes and devices, larger batches): forward with `torch.addmm` on
  a CSR first operand (MKL SpMM); input gradient with a CSR of ``Wᵀ`` (the CSC of W) whose indices are built
  once per mask and whose values are gathered from the CSR values at each step; kept-value gradient with
  `torch.sparse.sampled_addmm`.

Either way, `dense_weight_grad` adds the full dense weight gradient ``gyᵀ x`` (one GEMM), which PruneFL's
importance needs at pruned coordinates too (spec §3.2).

Indices come from the mask, never from the values: ``mask.nonzero()`` order (row-major), with explicit zeros
kept, so the number of stored values always equals the mask's kept count (spec §10 item 7). Building them
scans the whole mask and sorts the kept entries by column (~15 ms for Conv-2's fc1 at density 0.1, 2 threads),
so a layer for an unchanged mask can share the indices of the previous one (`pattern_from`); it then costs
one pass checking the mask (skipped with `trust_pattern`) and a gather of the kept values.

Measured on Conv-2's fc1 (2048×3136, density 0.1, batch 20, 2-core AMD EPYC, torch 2.13; `benchmarks/kernels.py`
times them side by side): the layer's forward+backward takes 2.2 ms native and 4.3 ms on torch's kernels
(masked dense 12.3 ms, dense 7.8 ms); the kernels alone, native: forward 0.36 ms, fused backward 0.68 ms;
torch: forward 0.74, gather 0.31, input gradient 0.70, `sampled_addmm` 0.95. Among torch's options, int32 CSR
with `torch.addmm` was the fastest forward (int64 indices ~15 % slower, ``dense @ csr.t()`` ~5x slower);
`torch.mm` on ``csr.t()`` or ``dense @ csr`` 4-20x slower than the prebuilt CSR of Wᵀ; the gather
``(gy[:, rows] * x[:, cols]).sum(0)`` ~50x slower than `sampled_addmm`, as it materialises two (batch, nnz)
tensors.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from prunefl.errors import ConfigError
from prunefl.sparse import native

__all__ = ["SparseLinear"]

# Index buffers of a SparseLinear, in the order _Pattern takes them.
_INDEX_BUFFERS = ("crow_indices", "col_indices", "flat_indices", "ccol_indices", "csc_row_indices", "csc_permutation")


class SparseLinear(nn.Module):
    """A linear layer ``y = x Wᵀ + b`` whose weight W (out_features, in_features) is stored as CSR.

    Build it with `SparseLinear.from_dense` from an `nn.Linear` and its mask; write it back with `to_dense_`.
    The kept pattern is fixed at construction; a new mask means a new layer (and a new optimiser, since the
    `values` parameter changes size). Inputs may have any leading dimensions, as for `nn.Linear`.

    Attributes
    ----------
    values : torch.nn.Parameter
        Shape (nnz,): W at the kept coordinates, in row-major (``mask.nonzero()``) order; zeros included.
    bias : torch.nn.Parameter or None
        Shape (out_features,).
    crow_indices, col_indices : Tensor
        int32 buffers of shapes (out_features + 1,) and (nnz,): the CSR pattern of W.
    flat_indices : Tensor
        int64 buffer of shape (nnz,): row-major position ``row · in_features + col`` of each value.
    ccol_indices, csc_row_indices : Tensor
        int32 buffers of shapes (in_features + 1,) and (nnz,): the CSC pattern of W, which is the CSR
        pattern of Wᵀ, used for the input gradient.
    csc_permutation : Tensor
        int32 buffer of shape (nnz,): ``values[csc_permutation]`` lists the values in CSC order.
    native : bool
        If True (the default), float32 CPU calls with a batch of at most `native.MAX_BATCH` rows run on the
        compiled kernels of `prunefl.sparse.native` when they are available; set False for torch's kernels.
    record_inputs : bool
        If True, every backward keeps its input rows and upstream gradient, so that `recorded_weight_grad`
        returns the sum of the dense weight gradients of all those steps with one GEMM over their rows,
        instead of one dense GEMM per step (`dense_weight_grad`). Importance needs only that sum (spec §3.2).
    dense_weight_grad : bool
        If True, backward also computes the full dense gradient ∂L/∂W (out_features, in_features), pruned
        coordinates included, and accumulates it into `weight_grad`. Costs one dense GEMM, like the dense
        layer's weight gradient; forward and input gradient stay sparse.

    Parameters
    ----------
    in_features, out_features : int
        Layer sizes, as for `nn.Linear`.
    mask : Tensor
        `torch.bool`, shape (out_features, in_features): True where W is kept. Values start at 0.
    bias : bool
        Whether the layer has a bias, initialised to 0 (default: True).
    dense_weight_grad : bool
        Initial value of the attribute (default: False).
    pattern_from : SparseLinear or None
        A layer whose index buffers are reused (shared, not copied) if its pattern is exactly `mask`
        (checked: one pass over the mask); otherwise the indices are built from `mask` (default: None).
        Shared buffers are never written by this module; `load_state_dict` into either layer would write
        both.
    trust_pattern : bool
        If True, reuse `pattern_from`'s indices without the check: the caller knows `mask` is the mask they
        were built from (e.g. the server's mask version did not change). Saves ~1.5 ms on Conv-2's fc1; a
        wrong promise trains the wrong coordinates (default: False).

    Raises
    ------
    ConfigError
        If `mask` is not a bool tensor of shape (out_features, in_features).

    Examples
    --------
    >>> linear = nn.Linear(3, 2)
    >>> mask = torch.tensor([[True, False, True], [False, False, False]])
    >>> layer = SparseLinear.from_dense(linear, mask)
    >>> layer.nnz, tuple(layer(torch.ones(4, 3)).shape)
    (2, (4, 2))
    """

    # registered buffers, declared for type checkers
    crow_indices: Tensor
    col_indices: Tensor
    flat_indices: Tensor
    ccol_indices: Tensor
    csc_row_indices: Tensor
    csc_permutation: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mask: Tensor,
        bias: bool = True,
        dense_weight_grad: bool = False,
        pattern_from: SparseLinear | None = None,
        trust_pattern: bool = False,
    ) -> None:
        super().__init__()
        _check_mask(mask, (out_features, in_features))
        self.in_features = in_features
        self.out_features = out_features
        self.dense_weight_grad = dense_weight_grad
        self.native = True
        self.record_inputs = False
        self._records: list[tuple[Tensor, Tensor]] = []  # (x (B, in), grad_y (B, out)) per recorded backward
        reuse = pattern_from is not None and (trust_pattern or pattern_from.matches_mask(mask))
        if pattern_from is not None and reuse:
            indices = {name: getattr(pattern_from, name) for name in _INDEX_BUFFERS}
        else:
            indices = _build_indices(mask)
        for name in _INDEX_BUFFERS:
            self.register_buffer(name, indices[name], persistent=True)
        nnz = indices["col_indices"].numel()
        self.values = nn.Parameter(torch.zeros(nnz, device=mask.device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=mask.device)) if bias else None
        # The dense-gradient sink: a leaf (out, in) tensor that forward takes as an extra input so that autograd
        # accumulates ∂L/∂W into its `.grad`. Its storage is never read; created on first use.
        self._weight_grad_sink: Tensor | None = None

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        mask: Tensor,
        dense_weight_grad: bool = False,
        pattern_from: SparseLinear | None = None,
        trust_pattern: bool = False,
    ) -> SparseLinear:
        """Return a sparse copy of `linear`: its weight at the kept coordinates of `mask`, and its bias.

        `linear` is not modified and shares no storage with the result. Values at kept coordinates are copied
        as they are, exact zeros included; pruned coordinates are dropped whatever they hold.

        Parameters
        ----------
        linear : torch.nn.Linear
            The dense layer; its dtype and device are kept.
        mask : Tensor
            `torch.bool`, shape (out_features, in_features), on `linear`'s device.
        dense_weight_grad : bool
            See the class attribute (default: False).
        pattern_from : SparseLinear or None
            See the class parameter: pass the previous round's layer when the mask may be unchanged
            (default: None).
        trust_pattern : bool
            See the class parameter (default: False).

        Returns
        -------
        SparseLinear
            With ``nnz == mask.count_nonzero()``.

        Raises
        ------
        ConfigError
            If `mask` is not a bool tensor of the weight's shape.

        Examples
        --------
        >>> linear = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = linear.weight.copy_(torch.tensor([[0.0, 2.0], [3.0, 4.0]]))
        >>> SparseLinear.from_dense(linear, torch.tensor([[True, True], [False, True]])).values
        Parameter containing:
        tensor([0., 2., 4.], requires_grad=True)
        """
        layer = cls(
            linear.in_features,
            linear.out_features,
            mask,
            linear.bias is not None,
            dense_weight_grad,
            pattern_from,
            trust_pattern,
        )
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            if layer._native_copy(linear.weight):
                native.csr_gather(layer.crow_indices, layer.col_indices, linear.weight, layer.values)
            else:
                # flat_indices walk the weight in row-major order, the order of mask.nonzero() and of the CSR.
                layer.values.copy_(torch.take(linear.weight, layer.flat_indices))
            if layer.bias is not None and linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    @property
    def nnz(self) -> int:
        """Number of stored values, the mask's kept count."""
        return self.values.numel()

    @property
    def weight_grad(self) -> Tensor | None:
        """The accumulated dense weight gradient, shape (out_features, in_features), or None.

        Written only by backward passes run with `dense_weight_grad` True; reset by `zero_grad`.
        """
        return None if self._weight_grad_sink is None else self._weight_grad_sink.grad

    def matches_mask(self, mask: Tensor) -> bool:
        """Return whether this layer's pattern is exactly `mask` (bool, (out_features, in_features)).

        Examples
        --------
        >>> layer = SparseLinear(2, 1, torch.tensor([[True, False]]))
        >>> layer.matches_mask(torch.tensor([[True, False]])), layer.matches_mask(torch.tensor([[True, True]]))
        (True, False)
        """
        if tuple(mask.shape) != (self.out_features, self.in_features) or mask.dtype != torch.bool:
            return False
        # Same count, and every stored position kept, leaves no room for another kept position.
        flat = self.flat_indices.to(mask.device)
        return int(mask.count_nonzero()) == flat.numel() and bool(mask.reshape(-1).index_select(0, flat).all())

    def recorded_weight_grad(self) -> Tensor | None:
        """Return Σ_k ∂L_k/∂W over the backward passes recorded since the last call, and forget them; None if none.

        The dense (out_features, in_features) sum, pruned coordinates included, computed as one GEMM
        ``GYᵀ X`` over the concatenated rows of every recorded step: Σ_k gy_kᵀ x_k = GYᵀ X.

        Examples
        --------
        >>> layer = SparseLinear(3, 2, torch.ones(2, 3, dtype=torch.bool))
        >>> layer.record_inputs = True
        >>> for _ in range(2):
        ...     layer(torch.ones(1, 3)).sum().backward()
        >>> layer.recorded_weight_grad()
        tensor([[2., 2., 2.],
                [2., 2., 2.]])
        """
        if not self._records:
            return None
        x = torch.cat([x for x, _ in self._records])  # (K·B, in)
        grad_y = torch.cat([g for _, g in self._records])  # (K·B, out)
        self._records.clear()
        return torch.mm(grad_y.t(), x)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of the parameters and `weight_grad`, as `nn.Module.zero_grad` does."""
        super().zero_grad(set_to_none)
        sink = self._weight_grad_sink
        if sink is not None and sink.grad is not None:
            if set_to_none:
                sink.grad = None
            else:
                sink.grad.zero_()

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x Wᵀ + b``, shape (..., out_features), for `x` of shape (..., in_features)."""
        sink = self._dense_weight_grad_sink() if self.dense_weight_grad and torch.is_grad_enabled() else None
        pattern = _Pattern(
            self.out_features,
            self.in_features,
            self.crow_indices,
            self.col_indices,
            self.flat_indices,
            self.ccol_indices,
            self.csc_row_indices,
            self.csc_permutation,
            self.native,
            self._records if self.record_inputs and torch.is_grad_enabled() else None,
        )
        x2 = x.reshape(-1, self.in_features)  # (B, in)
        y2 = _SparseLinearFunction.apply(x2, self.values, self.bias, sink, pattern)  # (B, out)
        return y2.reshape(*x.shape[:-1], self.out_features)

    def to_dense_(self, linear: nn.Linear, zero_pruned: bool = True) -> None:
        """Write this layer's weight and bias into `linear`; pruned coordinates become 0.

        Modifies `linear.weight` and `linear.bias` in place (their identity, dtype and device stay), under
        `torch.no_grad()`. Masks on `linear` are not touched.

        Parameters
        ----------
        linear : torch.nn.Linear
            A layer of the same sizes, with a bias iff this one has one.
        zero_pruned : bool
            If False, write only the kept coordinates and leave the pruned ones as they are: for a weight
            known to hold zeros there already (masks applied before the swap), it skips a pass over the whole
            weight. A non-contiguous weight is rewritten whole, pruned coordinates 0, either way (default: True).

        Raises
        ------
        ConfigError
            If the sizes or the presence of a bias differ.

        Examples
        --------
        >>> layer = SparseLinear(2, 1, torch.tensor([[False, True]]), bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.values.fill_(5.0)
        >>> dense = nn.Linear(2, 1, bias=False)
        >>> layer.to_dense_(dense)
        >>> dense.weight
        Parameter containing:
        tensor([[0., 5.]], requires_grad=True)
        """
        _check_same_shape(self, linear)
        with torch.no_grad():
            weight = linear.weight
            if self._native_copy(weight):
                native.csr_scatter(self.crow_indices, self.col_indices, self.values, weight, zero_pruned)
                if self.bias is not None and linear.bias is not None:
                    linear.bias.copy_(self.bias)
                return
            # Scatter straight into the weight's storage when it is contiguous (the usual case), else via a copy.
            flat_weight = weight.view(-1) if weight.is_contiguous() else weight.new_empty(weight.numel())
            if zero_pruned or not weight.is_contiguous():
                flat_weight.zero_()
            flat_weight.index_copy_(0, self.flat_indices, self.values.to(flat_weight.dtype))
            if not weight.is_contiguous():
                weight.copy_(flat_weight.view(weight.shape))
            if self.bias is not None and linear.bias is not None:
                linear.bias.copy_(self.bias)

    def extra_repr(self) -> str:
        """Summarise sizes, nnz and density."""
        n_total = self.in_features * self.out_features
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}, "
            f"density={self.nnz / max(n_total, 1):.4g}, bias={self.bias is not None}, "
            f"dense_weight_grad={self.dense_weight_grad}"
        )

    def _native_copy(self, weight: Tensor) -> bool:
        """Whether the native gather/scatter can move values between `weight` and this layer (one pass, threaded:
        ~0.3 ms each way for Conv-2's fc1 at density 0.1, where `torch.take` or zeroing plus `index_copy_` take
        0.6-0.8 ms)."""
        same = weight.dtype == self.values.dtype == torch.float32 and weight.device.type == "cpu"
        return self.native and same and weight.is_contiguous() and self.values.is_contiguous() and native.available()

    def _dense_weight_grad_sink(self) -> Tensor:
        sink = self._weight_grad_sink
        if sink is None or sink.dtype != self.values.dtype or sink.device != self.values.device:
            # torch.empty of this size is never written, so it costs address space, not memory.
            sink = torch.empty(
                (self.out_features, self.in_features), dtype=self.values.dtype, device=self.values.device
            ).requires_grad_()
            self._weight_grad_sink = sink
        return sink


@dataclass(frozen=True, slots=True)
class _Pattern:
    """The index tensors of one sparse weight (see `SparseLinear` for their shapes); no values."""

    out_features: int
    in_features: int
    crow_indices: Tensor
    col_indices: Tensor
    flat_indices: Tensor
    ccol_indices: Tensor
    csc_row_indices: Tensor
    csc_permutation: Tensor
    native: bool = True  # whether the native kernels may take calls (`SparseLinear.native`)
    records: list[tuple[Tensor, Tensor]] | None = None  # where backward appends (x, grad_y), if recording

    def csr(self, values: Tensor) -> Tensor:
        """Return W as a CSR tensor (out, in) over `values` (no copy)."""
        return _csr(self.crow_indices, self.col_indices, values, (self.out_features, self.in_features))

    def csr_transposed(self, values: Tensor) -> Tensor:
        """Return Wᵀ as a CSR tensor (in, out): the CSC of W, values gathered into column-major order."""
        values_by_column = values.index_select(0, self.csc_permutation)
        return _csr(self.ccol_indices, self.csc_row_indices, values_by_column, (self.in_features, self.out_features))


class _SparseLinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b with W in CSR; see the module docstring for the kernels."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, values: Tensor, bias: Tensor | None, sink: Tensor | None, pattern: _Pattern
    ) -> Tensor:
        ctx.pattern = pattern
        ctx.has_bias = bias is not None
        batch = x.shape[0]
        ctx.native = _use_native(pattern, x, values, bias)
        if ctx.native:
            # Feature-major, batch padded to 8 lanes: the layout of the C kernels; kept for the backward.
            x_t = native.pad_transpose(x, native.padded_batch(batch))  # (in, BP)
            ctx.save_for_backward(x_t, values)
            ctx.batch = batch
            y_t = native.csr_forward(pattern.crow_indices, pattern.col_indices, values, bias, x_t, pattern.out_features)
            return y_t[:, :batch].t()  # (B, out), a strided view
        ctx.save_for_backward(x, values)
        weight = pattern.csr(values)  # (out, in)
        # y = x Wᵀ + b, computed transposed so the sparse operand comes first: yᵀ = b ⊕ W xᵀ, (out, B).
        if bias is None:
            y_t = torch.mm(weight, x.t())
        else:
            y_t = torch.addmm(bias.unsqueeze(1), weight, x.t())
        return y_t.t()  # (B, out), a transposed view; downstream dense ops accept any strides

    @staticmethod
    @once_differentiable  # the backward kernels are not differentiable themselves: double backward raises
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        pattern: _Pattern = ctx.pattern
        need_x, need_values, need_bias, need_sink, _ = ctx.needs_input_grad
        grad_bias = grad_y.sum(0) if need_bias and ctx.has_bias else None
        if ctx.native:
            x_t, values = ctx.saved_tensors
            batch = ctx.batch
            grad_y_t = native.pad_transpose(grad_y, x_t.shape[1])  # (out, BP)
            # One pass over the kept weights gives both the kept-value gradient and the input gradient.
            grad_values, grad_x_t = native.csr_backward(
                pattern.crow_indices, pattern.col_indices, values, grad_y_t, x_t, pattern.in_features,
                need_values, need_x,
            )
            grad_x = None if grad_x_t is None else grad_x_t[:, :batch].t()  # (B, in), a strided view
            if pattern.records is not None:
                pattern.records.append((x_t[:, :batch].t(), grad_y))
            # Dense ∂L/∂W = gyᵀ x for importance (pruned coordinates too): one GEMM, as in the torch path.
            grad_weight = torch.mm(grad_y.t(), x_t[:, :batch].t()) if need_sink else None
            return grad_x, grad_values, grad_bias, grad_weight, None
        x, values = ctx.saved_tensors
        if pattern.records is not None:
            pattern.records.append((x, grad_y))
        grad_y_t = grad_y.t()  # (out, B)
        grad_x = grad_values = grad_weight = None
        if need_x:
            # gx = gy W  ⇔  gxᵀ = Wᵀ gyᵀ, with Wᵀ as CSR (the CSC of W): sparse operand first again.
            grad_x = torch.mm(pattern.csr_transposed(values), grad_y_t).t()  # (B, in)
        if need_sink:
            # ∂L/∂W[r, c] = Σ_b gy[b, r] x[b, c], i.e. gyᵀ x, dense: importance needs pruned coordinates too.
            grad_weight = torch.mm(grad_y_t, x)  # (out, in)
        if need_values:
            # y[b, r] = Σ_c W[r, c] x[b, c] + bias[r] and values[k] = W[row_k, col_k], so
            # ∂L/∂values[k] = ∂L/∂W[row_k, col_k] = Σ_b gy[b, row_k] x[b, col_k]: the product gyᵀ x sampled at
            # the kept pattern, batch·nnz multiply-adds instead of batch·out·in. When the dense product exists
            # anyway, gather from it.
            if grad_weight is not None:
                grad_values = grad_weight.reshape(-1).index_select(0, pattern.flat_indices)
            else:
                # sampled_addmm computes beta·input + alpha·(gyᵀ x) at input's pattern; beta = 0 still
                # multiplies input's values (0·nan = nan), so the input carries zeros, not the weights. Run in
                # place (out = input) into fresh zeros: out-of-place, it also copies the indices and values.
                grad_values = torch.zeros_like(values)
                grad_csr = pattern.csr(grad_values)
                torch.sparse.sampled_addmm(grad_csr, grad_y_t, x, beta=0.0, out=grad_csr)
        return grad_x, grad_values, grad_bias, grad_weight, None


def _use_native(pattern: _Pattern, x: Tensor, values: Tensor, bias: Tensor | None) -> bool:
    """Whether the native kernels take this call: float32 CPU tensors, a batch they hold, and a library loaded."""
    if not pattern.native or not 1 <= x.shape[0] <= native.MAX_BATCH:
        return False
    tensors = [x, values] if bias is None else [x, values, bias]
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
        return False
    if not (values.is_contiguous() and (bias is None or bias.is_contiguous())):
        return False
    return native.available()


def _csr(crow_indices: Tensor, col_indices: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        # torch warns once per process that CSR support is "in beta"; the kernels used here are tested.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        # Our indices come from a mask, so they satisfy the CSR invariants; checking costs O(nnz) per step.
        return torch.sparse_csr_tensor(crow_indices, col_indices, values, size, check_invariants=False)


def _build_indices(mask: Tensor) -> dict[str, Tensor]:
    """Build the index buffers of a bool (out, in) mask: int32 but for `flat_indices` (positions up to out·in)."""
    out_features, in_features = mask.shape
    flat = mask.reshape(-1).nonzero().squeeze(1)  # (nnz,), row-major: the order of the stored values
    rows = torch.div(flat, in_features, rounding_mode="floor")
    cols = flat - rows * in_features
    crow = torch.zeros(out_features + 1, dtype=torch.int64, device=mask.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=out_features), dim=0)
    ccol = torch.zeros(in_features + 1, dtype=torch.int64, device=mask.device)
    ccol[1:] = torch.cumsum(torch.bincount(cols, minlength=in_features), dim=0)
    cols32 = cols.to(torch.int32)
    # CSC order = stable sort of the row-major entries by column: rows stay ascending within each column.
    # Sorting int32 keys is about twice as fast as int64 ones.
    permutation = torch.sort(cols32, stable=True).indices
    return {
        "crow_indices": crow.to(torch.int32),
        "col_indices": cols32,
        "flat_indices": flat,
        "ccol_indices": ccol.to(torch.int32),
        "csc_row_indices": rows.index_select(0, permutation).to(torch.int32),
        # int32 halves the bytes this per-step gather reads (the index does not stay in cache across a step).
        "csc_permutation": permutation.to(torch.int32),
    }


def _check_mask(mask: object, shape: tuple[int, int]) -> None:
    if not isinstance(mask, Tensor):
        raise ConfigError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ConfigError(f"mask must have dtype torch.bool, got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ConfigError(f"mask must have shape (out_features, in_features) = {shape}, got {tuple(mask.shape)}")
    if mask.numel() >= 2**31:
        raise ConfigError(f"sparse layers use int32 indices; a mask of {mask.numel()} elements is too large")


def _check_same_shape(layer: SparseLinear, linear: nn.Linear) -> None:
    expected = (layer.out_features, layer.in_features, layer.bias is not None)
    found = (linear.out_features, linear.in_features, linear.bias is not None)
    if expected != found:
        raise ConfigError(
            f"to_dense_ needs an nn.Linear with (out_features, in_features, has_bias) = {expected}, got {found}"
        )
