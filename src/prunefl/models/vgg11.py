"""VGG-11 without batch norm, the CIFAR-10 network that PruneFL trains (spec §6)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VGG11"]

# (in_channels, out_channels, maxpool after) for conv1 ... conv8: VGG configuration "A".
_CONVS: tuple[tuple[int, int, bool], ...] = (
    (3, 64, True),
    (64, 128, True),
    (128, 256, False),
    (256, 256, True),
    (256, 512, False),
    (512, 512, True),
    (512, 512, False),
    (512, 512, True),
)


class VGG11(nn.Module):
    """Eight 3×3 convolutions (pad 1, ReLU, 5 max-pools) and three fully connected layers for 32×32 RGB images.

    conv1–conv8 widths 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M (M = maxpool 2), so a 32×32 image
    ends as 512×1×1; fc1 512→512 (ReLU), fc2 512→512 (ReLU), fc3 512→`num_classes`. With 10 classes:
    9,750,922 parameters; all 11 weight tensors are prunable (9,747,136 weights), spec §6. Layer names match
    the time-model coefficients of spec §4.2 (conv1–conv8, fc1–fc3).

    Parameters
    ----------
    num_classes : int
        Number of output logits (default: 10, CIFAR-10).

    Examples
    --------
    >>> model = VGG11()  # doctest: +SKIP
    >>> model(torch.zeros(2, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([2, 10])
    >>> VGG11.INPUT_SHAPE
    (3, 32, 32)
    """

    INPUT_SHAPE: ClassVar[tuple[int, int, int]] = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        for index, (in_channels, out_channels, _) in enumerate(_CONVS, start=1):
            self.add_module(f"conv{index}", nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        self.fc1 = nn.Linear(512, 512)
        self.fc2 = nn.Linear(512, 512)
        self.fc3 = nn.Linear(512, num_classes)
        # Official init (spec §6): kaiming-uniform with a = 0, 0, 1.5 for fc1-fc3. The official fc1/fc2 use
        # mode fan_in, but fan_in = fan_out = 512 there, so fan_out gives the same bound sqrt(6 / 512).
        # fc3 uses fan_out = num_classes: bound sqrt(2 / (1 + 1.5²)) · sqrt(3 / num_classes).
        # Convolutions and all biases keep PyTorch's defaults, as in the official code.
        for fc, a in ((self.fc1, 0.0), (self.fc2, 0.0), (self.fc3, 1.5)):
            nn.init.kaiming_uniform_(fc.weight, a=a, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes) for images of shape (N, 3, 32, 32)."""
        for index, (_, _, pool_after) in enumerate(_CONVS, start=1):
            x = F.relu(getattr(self, f"conv{index}")(x))
            if pool_after:
                x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)  # (N, 512): 32 / 2**5 = 1 pixel left
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)  # (N, num_classes)

    def prunable_parameter_names(self) -> tuple[str, ...]:
        """Return the names of the prunable weights: all 8 convolutions and 3 fc layers (spec §6)."""
        convs = tuple(f"conv{index}.weight" for index in range(1, len(_CONVS) + 1))
        return (*convs, "fc1.weight", "fc2.weight", "fc3.weight")
