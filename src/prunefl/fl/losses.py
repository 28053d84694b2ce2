"""Training losses of the paper's experiments (spec §5, D10)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["LossName", "make_loss"]

LossName = Literal["cross_entropy", "bce_onehot"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(name: LossName, num_classes: int) -> LossFn:
    """Return ``loss(logits, labels) -> scalar`` (mean over the batch).

    ``bce_onehot`` is BCE-with-logits on one-hot targets, averaged over N×C, as the official code does for
    FEMNIST and CIFAR-10.

    >>> loss = make_loss("cross_entropy", 3)
    >>> round(float(loss(torch.zeros(2, 3), torch.tensor([0, 1]))), 4)
    1.0986
    """
    if name == "cross_entropy":
        return F.cross_entropy
    if name == "bce_onehot":

        def bce_onehot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            target = F.one_hot(labels, num_classes).to(logits.dtype)
            return F.binary_cross_entropy_with_logits(logits, target)

        return bce_onehot
    raise ValueError(f"unknown loss {name!r}; expected 'cross_entropy' or 'bce_onehot'")
