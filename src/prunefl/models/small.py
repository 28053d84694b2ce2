"""Small models (a CNN and an MLP) for quick CPU runs and tests, such as the 8×8 scikit-learn digits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DigitsCNN", "MLP"]


class DigitsCNN(nn.Module):
    """Two 3×3 convolutions, one max-pool and a linear classifier for small images.

    conv1 3×3 C→16 (pad 1), ReLU; conv2 3×3 16→32 (pad 1), ReLU; maxpool 2; fc 32·⌊H/2⌋·⌊W/2⌋→`num_classes`.
    For the 8×8 digits with 10 classes: 160 + 4,640 + 5,130 = 9,930 parameters, of which the 3 weight tensors
    (144 + 4,608 + 5,120 = 9,872) are prunable. Not part of the paper.

    Parameters
    ----------
    num_classes : int
        Number of output logits (default: 10).
    input_shape : tuple of int
        (channels, height, width) of one image, height and width ≥ 2 (default: (1, 8, 8), scikit-learn digits).

    Examples
    --------
    >>> model = DigitsCNN()
    >>> model(torch.zeros(4, 1, 8, 8)).shape
    torch.Size([4, 10])
    >>> sum(p.numel() for p in model.parameters())
    9930
    """

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 8, 8)) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.input_shape = (channels, height, width)
        self.conv1 = nn.Conv2d(channels, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc = nn.Linear(32 * (height // 2) * (width // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes) for images of shape (N, C, H, W)."""
        x = F.relu(self.conv1(x))  # (N, 16, H, W)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 32, H/2, W/2)
        return self.fc(torch.flatten(x, 1))  # (N, num_classes)

    def prunable_parameter_names(self) -> tuple[str, ...]:
        """Return the names of the prunable weights: both convolutions and fc."""
        return ("conv1.weight", "conv2.weight", "fc.weight")


class MLP(nn.Module):
    """A fully connected ReLU network over flattened inputs.

    Layers are named fc1 … fc{k+1} for k hidden layers; with no hidden layer it is multinomial logistic
    regression. All weight tensors are prunable, biases are not. Not part of the paper.

    Parameters
    ----------
    num_classes : int
        Number of output logits (default: 10).
    input_shape : tuple of int
        (channels, height, width) of one input; the model flattens it (default: (1, 8, 8), scikit-learn digits).
    hidden_sizes : sequence of int
        Width of each hidden layer, each ≥ 1 (default: (64,)).

    Examples
    --------
    >>> model = MLP(num_classes=3, input_shape=(1, 2, 2), hidden_sizes=(5,))
    >>> model(torch.zeros(7, 1, 2, 2)).shape
    torch.Size([7, 3])
    >>> model.prunable_parameter_names()
    ('fc1.weight', 'fc2.weight')
    """

    def __init__(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 8, 8),
        hidden_sizes: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.input_shape = (channels, height, width)
        self.hidden_sizes = tuple(hidden_sizes)
        widths = (channels * height * width, *self.hidden_sizes, num_classes)
        self.n_layers = len(widths) - 1
        for index in range(self.n_layers):
            self.add_module(f"fc{index + 1}", nn.Linear(widths[index], widths[index + 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes) for inputs of shape (N, *input_shape)."""
        x = torch.flatten(x, 1)  # (N, C·H·W)
        for index in range(1, self.n_layers + 1):
            x = getattr(self, f"fc{index}")(x)
            if index < self.n_layers:  # no ReLU on the logits
                x = F.relu(x)
        return x

    def prunable_parameter_names(self) -> tuple[str, ...]:
        """Return the weight of every layer."""
        return tuple(f"fc{index}.weight" for index in range(1, self.n_layers + 1))
