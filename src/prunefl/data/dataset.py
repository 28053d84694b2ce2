"""In-memory data set container shared by every loader, partitioner and engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

__all__ = ["ArrayDataset", "Augment"]

Augment = Literal["none", "crop_flip"]


@dataclass(frozen=True)
class ArrayDataset:
    """A labelled image data set held as tensors, with the per-batch transform it needs.

    Images are kept as stored (usually ``uint8``) to save memory and converted per batch by
    :meth:`prepare`, so a 60k-image set costs 47 MB, not 188 MB.

    Parameters
    ----------
    name : str
        Data set name, e.g. ``"fashion-mnist"``.
    x_train, x_test : torch.Tensor
        Images, shape ``(n, channels, height, width)``, ``uint8`` in [0, 255] or ``float32`` in [0, 1].
    y_train, y_test : torch.Tensor
        Labels, shape ``(n,)``, ``int64`` in ``[0, num_classes)``.
    num_classes : int
        Number of classes.
    train_groups : numpy.ndarray or None
        Writer/user id of each training sample, shape ``(n_train,)``, for the ``natural`` partition.
    mean, std : tuple of float
        Per-channel normalisation applied after scaling to [0, 1] (default: none).
    invert : bool
        Use ``1 - x`` (LEAF FEMNIST convention, spec §6) (default: False).
    augment : {"none", "crop_flip"}
        Training-time augmentation: random crop (pad 4) and horizontal flip, as for CIFAR-10 (default: none).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    train_groups: np.ndarray | None = None
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    invert: bool = False
    augment: Augment = "none"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])

    def prepare(
        self, x: torch.Tensor, *, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Turn a stored batch into model input: float32, scaled, inverted/normalised, augmented if ``train``.

        Vectorised over the batch; augmentation draws from ``generator`` so a seed fixes it.

        >>> import torch
        >>> ds = ArrayDataset("t", torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(2, dtype=torch.long),
        ...                   torch.zeros((1, 1, 2, 2), dtype=torch.uint8), torch.zeros(1, dtype=torch.long), 2)
        >>> ds.prepare(ds.x_train[:1]).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
        """
        out = x.float()
        if x.dtype == torch.uint8:
            out = out / 255.0
        if self.invert:
            out = 1.0 - out
        if train and self.augment == "crop_flip":
            out = _crop_flip(out, generator)
        if self.mean:
            mean = torch.tensor(self.mean, dtype=out.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=out.dtype).view(1, -1, 1, 1)
            out = (out - mean) / std
        return out


def _crop_flip(x: torch.Tensor, generator: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, one draw per image."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)  # (n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)  # (n, 1, 1, w)
    batch = torch.arange(n).view(n, 1, 1, 1)
    chan = torch.arange(x.shape[1]).view(1, -1, 1, 1)
    out = padded[batch, chan, rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out
