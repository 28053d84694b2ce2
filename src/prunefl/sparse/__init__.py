"""Sparse representations of pruned models: boolean masks as module buffers."""

from prunefl.sparse.masks import (
    MASK_SUFFIX,
    apply_masks_,
    attach_masks,
    density,
    get_masks,
    kept_counts,
    layer_densities,
    mask_gradients_,
    prunable_parameters,
    set_masks_,
    total_counts,
)

__all__ = [
    "MASK_SUFFIX",
    "apply_masks_",
    "attach_masks",
    "density",
    "get_masks",
    "kept_counts",
    "layer_densities",
    "mask_gradients_",
    "prunable_parameters",
    "set_masks_",
    "total_counts",
]

# Sparse fc kernels and the per-layer kernel choice (appended separately so other exports can be edited alongside).
from prunefl.sparse.backend import (  # noqa: E402
    BreakEven,
    Kernel,
    SparseLayers,
    choose_kernels,
    measure_break_even,
    sparsify_linear_layers_,
)
from prunefl.sparse.linear import SparseLinear  # noqa: E402

__all__ += [
    "BreakEven",
    "Kernel",
    "SparseLayers",
    "SparseLinear",
    "choose_kernels",
    "measure_break_even",
    "sparsify_linear_layers_",
]

# Wire codec for model states and train messages (spec §3.8-3.9, §10 items 1-2).
from prunefl.sparse.codec import (  # noqa: E402
    FORMAT_VERSION,
    MAGIC,
    DecodeLimits,
    decode_state,
    decode_train_ins,
    decode_train_res,
    encode_state,
    encode_train_ins,
    encode_train_res,
    information_bound_bits,
)

__all__ += [
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
