"""Conv-4, the LEAF CelebA convolutional network that PruneFL trains on CelebA (spec §6, D9)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv4"]


class Conv4(nn.Module):
    """Four 3×3 convolution blocks with batch norm and a linear classifier for 84×84 RGB images.

    Each block is conv 3×3 (32 channels), BN(32), [ReLU], maxpool 2, with paddings 1, 1, 2, 2, so the
    spatial size goes 84 → 42 → 21 → (23) → 11 → (13) → 6; then fc 1152→`num_classes`. With 2 classes:
    31,202 parameters; the 5 weight tensors of the convolutions and fc are prunable (30,816 weights), the
    4 BN layers (256 parameters) are not (spec §6).

    The official code has no ReLU anywhere (spec §9 D9), unlike the LEAF reference CNN; `relu=True` adds one
    per block. ReLU and max-pooling commute, so its place inside the block does not matter.

    Parameters
    ----------
    num_classes : int
        Number of output logits (default: 2, CelebA "Smiling").
    relu : bool
        Add a ReLU after each block, as in the LEAF reference CNN (default: False, the official code).

    Examples
    --------
    >>> model = Conv4()
    >>> model(torch.zeros(2, 3, 84, 84)).shape
    torch.Size([2, 2])
    >>> len(model.prunable_parameter_names())
    5
    """

    INPUT_SHAPE: ClassVar[tuple[int, int, int]] = (3, 84, 84)

    def __init__(self, num_classes: int = 2, relu: bool = False) -> None:
        super().__init__()
        self.relu = relu
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        # Padding 2 in the last two blocks is the official choice; it makes 21 → 23 → 11 and 11 → 13 → 6.
        self.conv3 = nn.Conv2d(32, 32, kernel_size=3, padding=2)
        self.bn3 = nn.BatchNorm2d(32)
        self.conv4 = nn.Conv2d(32, 32, kernel_size=3, padding=2)
        self.bn4 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 6 * 6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes) for images of shape (N, 3, 84, 84)."""
        blocks = ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3), (self.conv4, self.bn4))
        for conv, bn in blocks:
            x = F.max_pool2d(bn(conv(x)), 2)  # (N, 32, 42 | 21 | 11 | 6, same)
            if self.relu:
                x = F.relu(x)
        return self.fc(torch.flatten(x, 1))  # (N, 1152) -> (N, num_classes)

    def prunable_parameter_names(self) -> tuple[str, ...]:
        """Return the names of the prunable weights: the 4 convolutions and fc, not BN (spec §6)."""
        return ("conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight", "fc.weight")

    def extra_repr(self) -> str:
        return f"relu={self.relu}"
