"""Test-set evaluation of a model, batched and without gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from prunefl.data.dataset import ArrayDataset

__all__ = ["evaluate"]


def evaluate(
    model: nn.Module,
    dataset: ArrayDataset,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    indices: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> tuple[float, float]:
    """Return ``(accuracy, mean loss)`` of ``model`` on the test set (or the test samples ``indices``)."""
    x_all = dataset.x_test if indices is None else dataset.x_test[indices]
    y_all = dataset.y_test if indices is None else dataset.y_test[indices]
    n = int(y_all.shape[0])
    correct = 0
    loss_sum = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):  # batches, not samples
            x = dataset.prepare(x_all[start : start + batch_size])
            y = y_all[start : start + batch_size]
            logits = model(x)
            loss_sum += float(loss_fn(logits, y)) * int(y.shape[0])
            correct += int((logits.argmax(dim=1) == y).sum())
    model.train()
    return correct / n, loss_sum / n
