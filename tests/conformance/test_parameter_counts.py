"""Spec §12 item 1: total and prunable parameter counts of the four paper models match spec §6."""

from __future__ import annotations

import pytest

from prunefl.models import build_model
from prunefl.sparse import prunable_parameters


@pytest.mark.parametrize(
    ("name", "num_classes", "input_shape", "n_total", "n_prunable"),
    [
        ("conv2", 62, (1, 28, 28), 6_603_710, 6_601_504),  # FEMNIST
        ("conv4", 2, (3, 84, 84), 31_202, 30_816),  # CelebA
        ("vgg11", 10, (3, 32, 32), 9_750_922, 9_747_136),  # CIFAR-10
        ("resnet18", 100, (3, 168, 168), 11_227_812, 11_046_080),  # ImageNet-100
    ],
)
def test_spec_12_item_1_parameter_counts_match_spec(
    name: str, num_classes: int, input_shape: tuple[int, int, int], n_total: int, n_prunable: int
) -> None:
    # Prepare
    model = build_model(name, num_classes, input_shape)

    # Execute
    found_total = sum(p.numel() for p in model.parameters())
    found_prunable = sum(p.numel() for _, p in prunable_parameters(model))

    # Assert
    assert (found_total, found_prunable) == (n_total, n_prunable)
