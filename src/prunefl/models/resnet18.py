"""ResNet-18 in torchvision's layout, the ImageNet-100 network that PruneFL trains (spec §6)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet18"]


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and a residual connection (torchvision's `BasicBlock`).

    When the block changes width or stride, a 1×1 convolution + BN (`downsample`) projects the shortcut.

    Parameters
    ----------
    in_channels : int
        Channels of the block input.
    out_channels : int
        Channels of the block output.
    stride : int
        Stride of the first convolution and of the shortcut projection (default: 1).

    Examples
    --------
    >>> block = BasicBlock(8, 16, stride=2)
    >>> block(torch.zeros(1, 8, 6, 6)).shape
    torch.Size([1, 16, 3, 3])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + shortcut)


class ResNet18(nn.Module):
    """ResNet-18: 7×7 stride-2 stem, max-pool, 4 stages × 2 `BasicBlock` (64/128/256/512), average pool, fc.

    Written out by hand in torchvision's layout and parameter names (no torchvision dependency). With 100
    classes: 11,227,812 parameters. Prunable (spec §2.1, §6): 18 tensors, 11,046,080 weights, namely conv1,
    the two convolutions of every block and fc. Not prunable: the downsample 1×1 convolutions (172,032
    weights), all BN and the fc bias. Adaptive average pooling makes any input of at least 32×32 work; the
    paper uses 168×168.

    Parameters
    ----------
    num_classes : int
        Number of output logits (default: 100, ImageNet-100).

    Examples
    --------
    >>> model = ResNet18()  # doctest: +SKIP
    >>> model(torch.zeros(1, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([1, 100])
    >>> ResNet18.MIN_INPUT_SIZE
    32
    """

    MIN_INPUT_SIZE: ClassVar[int] = 32  # smaller inputs reach layer3/layer4 as 1×1 maps; the network degenerates

    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, stride=2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, stride=2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, stride=2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        # torchvision/official init: every convolution (downsample included) kaiming-normal over fan_out for
        # ReLU, BN weight 1 and bias 0 (already PyTorch's default); fc keeps nn.Linear's default.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (N, num_classes) for images of shape (N, 3, H, W), H, W ≥ 32."""
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 512)
        return self.fc(x)  # (N, num_classes)

    def prunable_parameter_names(self) -> tuple[str, ...]:
        """Return conv1, every block convolution and fc; downsample convolutions stay dense (spec §2.1)."""
        blocks = tuple(
            f"{stage}.{index}.{conv}.weight"
            for stage in ("layer1", "layer2", "layer3", "layer4")
            for index in (0, 1)
            for conv in ("conv1", "conv2")
        )
        return ("conv1.weight", *blocks, "fc.weight")
