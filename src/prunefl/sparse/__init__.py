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
