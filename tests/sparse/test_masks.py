"""Tests for prunefl.sparse.masks: mask buffers, where masking happens, and density statistics."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from prunefl.errors import ConfigError
from prunefl.models import DigitsCNN
from prunefl.sparse import (
    apply_masks_,
    attach_masks,
    density,
    get_masks,
    kept_counts,
    layer_densities,
    mask_gradients_,
    prunable_parameters,
    set_masks_,
    total_counts,
)
from prunefl.sparse.masks import multiplier


class UserModel(nn.Module):
    """A model a user brings: no prunable_parameter_names(), so the default rule applies."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.scale = nn.Parameter(torch.ones(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))) * self.scale)


class DeclaringModel(nn.Module):
    """A model that declares its prunable weights, in an order different from named_parameters()."""

    def __init__(self, declared: tuple[str, ...] = ("second.weight", "first.weight")) -> None:
        super().__init__()
        self.first = nn.Linear(2, 3)
        self.second = nn.Linear(3, 1)
        self.declared = declared

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))

    def prunable_parameter_names(self) -> tuple[str, ...]:
        return self.declared


def tiny_linear(weight: list[list[float]], mask: list[list[bool]]) -> nn.Linear:
    """A bias-free linear layer with the given weight and attached mask (not yet applied)."""
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    attach_masks(layer, {"weight": torch.tensor(mask)})
    return layer


def random_masks(model: nn.Module, kept_fraction: float, seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(p.shape, generator=generator) < kept_fraction for name, p in prunable_parameters(model)
    }


def masked_sgd_steps(model: nn.Module, optimizer: torch.optim.Optimizer, n_steps: int, seed: int) -> None:
    """The training step of spec §3: apply -> forward -> backward -> mask gradients -> step -> apply."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        x = torch.randn(8, 1, 8, 8, generator=generator)
        y = torch.randint(0, 10, (8,), generator=generator)
        apply_masks_(model)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        mask_gradients_(model)
        optimizer.step()
        apply_masks_(model)


# --- prunable_parameters ---------------------------------------------------------------------------------


def test_prunable_parameters_default_rule_picks_conv_and_linear_weights() -> None:
    # Prepare
    model = UserModel()

    # Execute
    pairs = prunable_parameters(model)

    # Assert: no bias, BN or free parameter; the parameters themselves
    assert [name for name, _ in pairs] == ["conv.weight", "head.1.weight"]
    assert pairs[0][1] is model.conv.weight


def test_prunable_parameters_uses_declared_names_in_declared_order() -> None:
    # Prepare
    model = DeclaringModel()

    # Execute
    names = [name for name, _ in prunable_parameters(model)]

    # Assert
    assert names == ["second.weight", "first.weight"]


@pytest.mark.parametrize(
    ("declared", "expected_in_message"),
    [
        # a typo in a declared name
        (("first.weight", "secnd.weight"), "secnd.weight"),
        # a layer that does not exist at all
        (("third.weight",), "third.weight"),
        # the same weight declared twice
        (("first.weight", "first.weight"), "repeats"),
    ],
)
def test_prunable_parameters_bad_declaration_raises_naming_it(
    declared: tuple[str, ...], expected_in_message: str
) -> None:
    # Prepare
    model = DeclaringModel(declared)

    # Execute / Assert
    with pytest.raises(ConfigError, match=expected_in_message):
        prunable_parameters(model)


# --- attach_masks / get_masks / set_masks_ ---------------------------------------------------------------


def test_attach_masks_without_masks_registers_all_ones_buffers() -> None:
    # Prepare
    model = UserModel()

    # Execute
    masks = attach_masks(model)

    # Assert
    assert set(masks) == {"conv.weight", "head.1.weight"}
    assert model.conv.weight_mask.dtype == torch.bool and bool(model.conv.weight_mask.all())
    assert {"conv.weight_mask", "head.1.weight_mask"} <= set(model.state_dict())
    assert not any(name.endswith("_mask") for name, _ in model.named_parameters())


def test_attach_masks_keeps_parameter_identity_and_weights() -> None:
    # Prepare
    model = UserModel()
    ids_before = {name: id(p) for name, p in model.named_parameters()}
    values_before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    # Execute
    attach_masks(model, {name: torch.zeros_like(p, dtype=torch.bool) for name, p in prunable_parameters(model)})

    # Assert: same objects (the optimiser still holds them) and values unchanged until apply_masks_
    assert {name: id(p) for name, p in model.named_parameters()} == ids_before
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == list(ids_before.values())
    for name, p in model.named_parameters():
        assert torch.equal(p, values_before[name]), name


def test_attach_masks_twice_keeps_existing_masks_and_buffers() -> None:
    # Prepare
    layer = tiny_linear([[1.0, 2.0]], [[True, False]])
    buffer_before = layer.weight_mask

    # Execute
    again = attach_masks(layer)

    # Assert
    assert again["weight"] is buffer_before
    assert torch.equal(layer.weight_mask, torch.tensor([[True, False]]))
    assert list(layer.state_dict()) == ["weight", "weight_mask"]


def test_attach_masks_with_masks_on_masked_model_copies_into_existing_buffers() -> None:
    # Prepare
    layer = tiny_linear([[1.0, 2.0]], [[True, False]])
    buffer_before = layer.weight_mask

    # Execute
    attach_masks(layer, {"weight": torch.tensor([[False, True]])})

    # Assert
    assert layer.weight_mask is buffer_before
    assert torch.equal(layer.weight_mask, torch.tensor([[False, True]]))


def test_attach_masks_copies_given_masks_instead_of_aliasing_them() -> None:
    # Prepare
    given_mask = torch.tensor([[True, True]])
    layer = nn.Linear(2, 1, bias=False)

    # Execute
    attach_masks(layer, {"weight": given_mask})
    given_mask[0, 0] = False

    # Assert
    assert layer.weight_mask is not given_mask
    assert torch.equal(layer.weight_mask, torch.tensor([[True, True]]))


@pytest.mark.parametrize(
    ("masks", "expected_in_message"),
    [
        # float 0/1 mask instead of bool
        ({"conv.weight": torch.ones(2, 1, 3, 3), "head.1.weight": torch.ones(3, 32, dtype=torch.bool)}, "float32"),
        # transposed linear mask
        (
            {"conv.weight": torch.ones(2, 1, 3, 3, dtype=torch.bool), "head.1.weight": torch.ones(32, 3, dtype=torch.bool)},
            r"'head.1.weight' must have shape \(3, 32\), got \(32, 3\)",
        ),
        # a prunable weight left out
        ({"conv.weight": torch.ones(2, 1, 3, 3, dtype=torch.bool)}, r"missing \['head.1.weight'\]"),
        # a mask for a bias, which is not prunable
        (
            {
                "conv.weight": torch.ones(2, 1, 3, 3, dtype=torch.bool),
                "head.1.weight": torch.ones(3, 32, dtype=torch.bool),
                "conv.bias": torch.ones(2, dtype=torch.bool),
            },
            r"unknown \['conv.bias'\]",
        ),
        # a nested list instead of a tensor
        ({"conv.weight": [[True]], "head.1.weight": torch.ones(3, 32, dtype=torch.bool)}, "torch.Tensor"),
    ],
)
def test_attach_masks_bad_masks_raise_naming_the_weight_and_change_nothing(
    masks: dict[str, Tensor], expected_in_message: str
) -> None:
    # Prepare
    model = UserModel()

    # Execute
    with pytest.raises(ConfigError, match=expected_in_message):
        attach_masks(model, masks)

    # Assert: nothing was registered
    assert not any(name.endswith("_mask") for name in model.state_dict())


def test_attach_masks_conflicting_attribute_raises() -> None:
    # Prepare: a float 0/1 buffer of the same name, as torch.nn.utils.prune would leave
    layer = nn.Linear(2, 2)
    layer.register_buffer("weight_mask", torch.ones(2, 2))

    # Execute / Assert
    with pytest.raises(ConfigError, match="must have dtype torch.bool, got torch.float32"):
        attach_masks(layer)


def test_get_masks_returns_the_buffers_themselves() -> None:
    # Prepare
    layer = tiny_linear([[1.0, 2.0]], [[True, True]])

    # Execute
    masks = get_masks(layer)
    masks["weight"][0, 1] = False

    # Assert
    assert masks["weight"] is layer.weight_mask
    assert torch.equal(layer.weight_mask, torch.tensor([[True, False]]))


def test_get_masks_without_attach_raises() -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match="call attach_masks first"):
        get_masks(UserModel())


def test_set_masks_validates_every_mask_before_copying_any() -> None:
    # Prepare
    model = DeclaringModel()
    attach_masks(model)
    new = {"second.weight": torch.zeros(1, 3, dtype=torch.bool), "first.weight": torch.zeros(3, 3, dtype=torch.bool)}

    # Execute: second.weight comes first and is fine, first.weight has the wrong shape
    with pytest.raises(ConfigError, match="'first.weight' must have shape"):
        set_masks_(model, new)

    # Assert
    assert bool(model.second.weight_mask.all())


def test_set_masks_copies_values_into_the_same_buffers() -> None:
    # Prepare
    model = DeclaringModel()
    buffers = attach_masks(model)
    new = {name: torch.zeros_like(mask) for name, mask in buffers.items()}

    # Execute
    set_masks_(model, new)

    # Assert
    after = get_masks(model)
    assert all(after[name] is buffers[name] for name in buffers)
    assert not any(bool(mask.any()) for mask in after.values())


# --- apply_masks_ / mask_gradients_ ----------------------------------------------------------------------


def test_apply_masks_zeroes_exactly_the_pruned_coordinates() -> None:
    # Prepare
    layer = tiny_linear([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], [[True, False, True], [False, True, False]])

    # Execute
    apply_masks_(layer)

    # Assert
    assert torch.equal(layer.weight, torch.tensor([[1.0, 0.0, 3.0], [0.0, 5.0, 0.0]]))
    assert layer.weight.requires_grad


def test_gradient_at_pruned_coordinate_is_computed_until_mask_gradients() -> None:
    # Prepare: w = [1, 2] with the second weight pruned, so the applied weight is [1, 0]
    layer = tiny_linear([[1.0, 2.0]], [[True, False]])
    apply_masks_(layer)
    x = torch.tensor([[3.0, 4.0]])

    # Execute: loss = w · x, so d loss / d w = x = [3, 4] at every coordinate, pruned or not
    layer(x).sum().backward()
    raw = layer.weight.grad.clone()
    mask_gradients_(layer)

    # Assert
    assert torch.equal(raw, torch.tensor([[3.0, 4.0]]))
    assert torch.equal(layer.weight.grad, torch.tensor([[3.0, 0.0]]))


def test_mask_gradients_skips_weights_without_gradient() -> None:
    # Prepare
    layer = tiny_linear([[1.0, 2.0]], [[True, False]])

    # Execute
    mask_gradients_(layer)

    # Assert
    assert layer.weight.grad is None


def test_pruned_weights_stay_zero_through_sgd_with_momentum_and_weight_decay() -> None:
    # Prepare
    torch.manual_seed(0)
    model = DigitsCNN()
    masks = random_masks(model, kept_fraction=0.3, seed=1)
    attach_masks(model, masks)
    before = {name: p.detach().clone() for name, p in prunable_parameters(model)}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)

    # Execute
    masked_sgd_steps(model, optimizer, n_steps=5, seed=2)

    # Assert: exactly zero where pruned, and training moved the kept weights
    for name, p in prunable_parameters(model):
        assert bool((p[~masks[name]] == 0).all()), name
        assert not torch.equal(p[masks[name]], before[name][masks[name]]), name


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kept_fraction=st.floats(0.0, 1.0))
def test_property_pruned_weights_stay_zero_after_a_mask_change_mid_training(seed: int, kept_fraction: float) -> None:
    # Prepare: dense training builds momentum everywhere, then the mask changes
    torch.manual_seed(seed)
    model = DigitsCNN()
    attach_masks(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    masked_sgd_steps(model, optimizer, n_steps=2, seed=seed)
    masks = random_masks(model, kept_fraction, seed=seed + 1)

    # Execute
    set_masks_(model, masks)
    masked_sgd_steps(model, optimizer, n_steps=2, seed=seed + 2)

    # Assert
    for name, p in prunable_parameters(model):
        assert bool((p[~masks[name]] == 0).all()), name


# --- persistence and devices ------------------------------------------------------------------------------


def test_masks_survive_state_dict_round_trip_into_fresh_model() -> None:
    # Prepare
    torch.manual_seed(0)
    model = DigitsCNN()
    masks = random_masks(model, kept_fraction=0.5, seed=3)
    attach_masks(model, masks)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = DigitsCNN()
    attach_masks(fresh)

    # Execute
    fresh.load_state_dict(torch.load(buffer, weights_only=True))

    # Assert
    loaded = get_masks(fresh)
    assert set(loaded) == set(masks)
    for name, mask in masks.items():
        assert loaded[name].dtype == torch.bool and torch.equal(loaded[name], mask), name


def test_masks_stay_bool_under_dtype_cast_and_move_with_device() -> None:
    # Prepare
    layer = tiny_linear([[1.0, 2.0]], [[True, False]])

    # Execute
    layer.to(torch.float64)
    on_meta = copy.deepcopy(layer).to("meta")

    # Assert
    assert layer.weight.dtype == torch.float64 and layer.weight_mask.dtype == torch.bool
    assert on_meta.weight_mask.device.type == "meta" and on_meta.weight_mask.dtype == torch.bool


def test_deepcopy_copies_masks_independently() -> None:
    # Prepare
    layer = tiny_linear([[1.0, 2.0]], [[True, False]])

    # Execute
    clone = copy.deepcopy(layer)
    clone.weight_mask.fill_(True)

    # Assert
    assert torch.equal(layer.weight_mask, torch.tensor([[True, False]]))


# --- statistics -------------------------------------------------------------------------------------------


def test_density_statistics_on_hand_counted_masks() -> None:
    # Prepare: a keeps 1 of 2, b keeps 3 of 4, c keeps 0 of 3
    masks = {
        "a": torch.tensor([True, False]),
        "b": torch.tensor([[True, True], [True, False]]),
        "c": torch.zeros(3, dtype=torch.bool),
    }

    # Execute / Assert
    assert kept_counts(masks) == {"a": 1, "b": 3, "c": 0}
    assert total_counts(masks) == {"a": 2, "b": 4, "c": 3}
    assert layer_densities(masks) == {"a": 0.5, "b": 0.75, "c": 0.0}
    assert density(masks) == 4 / 9
    assert all(type(n) is int for n in kept_counts(masks).values())


def test_density_of_no_mask_elements_raises() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="at least one mask element"):
        density({})


def test_layer_density_of_empty_mask_raises_naming_it() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="'empty'"):
        layer_densities({"empty": torch.zeros(0, 3, dtype=torch.bool)})


def test_only_restricts_masking_to_named_layers() -> None:
    # Prepare: two layers, both with a pruned coordinate
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.Linear(1, 1, bias=False))
    attach_masks(model, {"0.weight": torch.tensor([[True, False]]), "1.weight": torch.tensor([[False]])})
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].weight.fill_(5.0)
    # Execute
    apply_masks_(model, only={"0.weight"})
    # Assert: only the named layer was masked
    assert model[0].weight.tolist() == [[3.0, 0.0]]
    assert model[1].weight.tolist() == [[5.0]]


def test_multiplier_is_converted_once_and_follows_in_place_mask_changes() -> None:
    # Prepare
    model = nn.Linear(3, 2, bias=False)
    attach_masks(model, {"weight": torch.tensor([[True, False, True], [False, True, True]])})
    mask = model.weight_mask

    # Execute
    first = multiplier(mask, torch.float32)
    again = multiplier(mask, torch.float32)
    as_double = multiplier(mask, torch.float64)
    set_masks_(model, {"weight": torch.ones(2, 3, dtype=torch.bool)})  # in place: the version counter moves
    after = multiplier(mask, torch.float32)

    # Assert
    assert again is first and first.dtype == torch.float32
    torch.testing.assert_close(first, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
    assert as_double.dtype == torch.float64
    torch.testing.assert_close(after, torch.ones(2, 3))


def test_apply_masks_after_set_masks_uses_the_new_mask() -> None:
    # Prepare: a cached multiplier exists for the old mask
    model = nn.Linear(2, 1, bias=False)
    attach_masks(model, {"weight": torch.tensor([[True, False]])})
    with torch.no_grad():
        model.weight.fill_(3.0)
    apply_masks_(model)

    # Execute
    set_masks_(model, {"weight": torch.tensor([[False, True]])})
    with torch.no_grad():
        model.weight.fill_(5.0)
    apply_masks_(model)

    # Assert
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[0.0, 5.0]]))
