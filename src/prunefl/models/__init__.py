"""The paper's models and small test models, each declaring its prunable weights (spec §6)."""

from prunefl.models.conv2 import Conv2
from prunefl.models.conv4 import Conv4
from prunefl.models.registry import MODEL_NAMES, build_model
from prunefl.models.resnet18 import ResNet18
from prunefl.models.small import MLP, DigitsCNN
from prunefl.models.vgg11 import VGG11

__all__ = [
    "MODEL_NAMES",
    "MLP",
    "Conv2",
    "Conv4",
    "DigitsCNN",
    "ResNet18",
    "VGG11",
    "build_model",
]
