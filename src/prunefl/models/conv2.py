"""Conv-2, the LEAF FEMNIST convolutional network that PruneFL trains on FEMNIST (spec §6)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2"]


class Conv2(nn.Module):
    """Two 5×5 convolutions and two fully connected layers for 28×28 greyscale images.

    conv1 5×5 1→32 (pad 2), ReLU, maxpool 2; conv2 5×5 32→64 (pad 2), ReLU, maxpool 2; fc1 3136→2048, ReLU;
    fc2 2048→`num_classes`. With 62 classes: 6,603,710 parameters, all 4 weight tensors prunable
    (6,601,504 weights), spec §6. Input pre-processing (1 − x, BCE-with-logits loss) belongs to the data and
    training code, not to the model.

    Parameters
    ----------
    num_classes : int
        Number of output logits (default: 62, the FEMNIST classes).

    Examples
    --------
    >>> model = Conv2(num_classes=10)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> model.prunable_parameter_names()
    ('conv1.weight', 'conv2.weight', 'fc1.weight', 'fc2.weight')
    """

    INPUT_SHAPE: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def __init__(self, num_classes: int = 62) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 2048)
        self.fc2 = nn.Linear(2048, num_classes)
        # The official DenseLinear(mode="fan_out") draws fc weights from kaiming-uniform over fan_out with a = 0
        # (bound sqrt(6 / fan_out)); biases and convolutions keep PyTorch's defaults, as there.
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(fc.weight, a=0.0, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes) for images of shape (N, 1, 28, 28)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 64, 7, 7)
        x = F.relu(self.fc1(torch.flatten(x, 1)))  # (N, 2048)
        return self.fc2(x)  # (N, num_classes)

    def prunable_parameter_names(self) -> tuple[str, ...]:
        """Return the names of the prunable weights: every weight tensor (spec §2.1, §6)."""
        return ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight")
