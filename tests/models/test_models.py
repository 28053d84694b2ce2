"""Tests for prunefl.models: layer shapes, prunable declarations, initialisation and the registry."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from prunefl.errors import ConfigError
from prunefl.models import MLP, MODEL_NAMES, Conv4, DigitsCNN, ResNet18, build_model
from prunefl.sparse import prunable_parameters

# name -> (num_classes, input_shape) of the paper setting (spec §6)
PAPER_SETTINGS = {
    "conv2": (62, (1, 28, 28)),
    "conv4": (2, (3, 84, 84)),
    "vgg11": (10, (3, 32, 32)),
    "resnet18": (100, (3, 32, 32)),
}


@pytest.fixture(scope="module")
def paper_models() -> dict[str, nn.Module]:
    """Build each paper model once per module (about 0.15 s in all); tests must not change their weights."""
    torch.manual_seed(0)
    return {name: build_model(name, n, shape) for name, (n, shape) in PAPER_SETTINGS.items()}


@pytest.mark.parametrize(
    ("name", "per_layer_weights"),
    [
        ("conv2", [800, 51_200, 6_422_528, 126_976]),
        ("conv4", [864, 9_216, 9_216, 9_216, 2_304]),
        (
            "vgg11",
            [1_728, 73_728, 294_912, 589_824, 1_179_648, 2_359_296, 2_359_296, 2_359_296, 262_144, 262_144, 5_120],
        ),
        (
            "resnet18",
            [9_408, *[36_864] * 4, 73_728, *[147_456] * 3, 294_912, *[589_824] * 3, 1_179_648, *[2_359_296] * 3]
            + [51_200],
        ),
    ],
)
def test_paper_model_prunable_layers_match_spec_tables(
    paper_models: dict[str, nn.Module], name: str, per_layer_weights: list[int]
) -> None:
    # Prepare
    model = paper_models[name]

    # Execute
    found = [p.numel() for _, p in prunable_parameters(model)]

    # Assert
    assert found == per_layer_weights


def test_resnet18_keeps_downsample_and_batch_norm_dense(paper_models: dict[str, nn.Module]) -> None:
    # Prepare
    model = paper_models["resnet18"]
    prunable = {name for name, _ in prunable_parameters(model)}

    # Execute
    dense_convs = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and f"{name}.weight" not in prunable
    ]

    # Assert: the 3 downsample 1x1 convs (64·128 + 128·256 + 256·512 = 172,032 weights) stay dense
    assert dense_convs == ["layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    assert sum(model.get_submodule(name).weight.numel() for name in dense_convs) == 172_032
    assert not any("bn" in name or "bias" in name for name in prunable)


@pytest.mark.parametrize("name", list(PAPER_SETTINGS))
def test_paper_model_forward_gives_one_logit_per_class(paper_models: dict[str, nn.Module], name: str) -> None:
    # Prepare
    num_classes, input_shape = PAPER_SETTINGS[name]
    model = paper_models[name].eval()  # eval: BN of a batch of 2 at 1x1 resolution (ResNet layer4) is fine

    # Execute
    with torch.no_grad():
        logits = model(torch.rand(2, *input_shape))

    # Assert
    assert logits.shape == (2, num_classes)


@pytest.mark.parametrize("input_shape", [(3, 32, 32), (3, 40, 57), (3, 168, 168)])
def test_resnet18_accepts_any_input_size_from_32(
    paper_models: dict[str, nn.Module], input_shape: tuple[int, int, int]
) -> None:
    # Prepare
    model = paper_models["resnet18"].eval()

    # Execute
    with torch.no_grad():
        logits = model(torch.rand(1, *input_shape))

    # Assert
    assert logits.shape == (1, 100)


def test_conv4_relu_switch_changes_output_but_not_initial_weights() -> None:
    # Prepare
    torch.manual_seed(1)
    official = Conv4(relu=False)
    torch.manual_seed(1)
    with_relu = Conv4(relu=True)
    x = torch.randn(2, 3, 84, 84)

    # Execute
    out_official, out_relu = official(x), with_relu(x)

    # Assert
    for (name, p), (_, q) in zip(official.named_parameters(), with_relu.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.allclose(out_official, out_relu)


def test_conv4_relu_switch_changes_nothing_when_activations_are_positive() -> None:
    # Prepare: with all-positive inputs and weights every pre-pool map is positive, so ReLU changes nothing
    torch.manual_seed(2)
    official, with_relu = Conv4(relu=False), Conv4(relu=True)
    with_relu.load_state_dict(official.state_dict())
    with torch.no_grad():
        for model in (official, with_relu):
            for name, p in model.named_parameters():
                if name.startswith("conv") or name.startswith("fc"):
                    p.abs_()
    official.eval()
    with_relu.eval()
    x = torch.rand(1, 3, 84, 84)

    # Execute
    with torch.no_grad():
        out_official, out_relu = official(x), with_relu(x)

    # Assert: BN starts as identity (running mean 0, var 1, weight 1, bias 0) in eval mode; tolerance is
    # exact because both models run the same float operations on the same positive values
    assert torch.equal(out_official, out_relu)


def test_conv2_fc_init_is_kaiming_uniform_over_fan_out(paper_models: dict[str, nn.Module]) -> None:
    # Prepare: gain sqrt(2) (a = 0), bound = sqrt(2) · sqrt(3 / fan_out) = sqrt(6 / fan_out)
    fc1 = paper_models["conv2"].get_submodule("fc1")
    bound = math.sqrt(6 / 2048)  # fan_out of fc1 = 2048 -> 0.0541

    # Execute
    largest = fc1.weight.abs().max().item()

    # Assert: 6.4 M uniform draws reach within 0.1 % of the bound
    assert 0.999 * bound < largest <= bound


def test_vgg11_last_fc_init_uses_a_1_5_over_fan_out(paper_models: dict[str, nn.Module]) -> None:
    # Prepare: gain sqrt(2 / (1 + 1.5²)), bound = gain · sqrt(3 / 10) = sqrt(6 / 32.5) = 0.4297
    fc3 = paper_models["vgg11"].get_submodule("fc3")
    bound = math.sqrt(6 / 32.5)

    # Execute
    largest = fc3.weight.abs().max().item()

    # Assert: 5,120 uniform draws; the largest |w| exceeds 0.99 · bound with probability 1 - 0.99**5120
    assert 0.99 * bound < largest <= bound


def test_resnet18_conv_init_is_kaiming_normal_over_fan_out(paper_models: dict[str, nn.Module]) -> None:
    # Prepare: std = sqrt(2 / fan_out), fan_out of conv1 = 64 · 7 · 7 = 3,136 -> 0.02525
    weight = paper_models["resnet18"].get_submodule("conv1").weight
    expected_std = math.sqrt(2 / 3136)

    # Execute
    found_std = weight.std().item()

    # Assert: 9,408 draws give a relative standard error of about 1 / sqrt(2 · 9408) = 0.7 %; allow 5 %
    assert found_std == pytest.approx(expected_std, rel=0.05)


def test_digits_cnn_has_hand_counted_parameters() -> None:
    # Prepare: conv1 1·16·9 + 16 = 160, conv2 16·32·9 + 32 = 4,640, fc 32·4·4·10 + 10 = 5,130
    model = DigitsCNN(num_classes=10, input_shape=(1, 8, 8))

    # Execute
    n_total = sum(p.numel() for p in model.parameters())
    n_prunable = sum(p.numel() for _, p in prunable_parameters(model))

    # Assert
    assert (n_total, n_prunable) == (9_930, 144 + 4_608 + 5_120)


def test_digits_cnn_adapts_its_classifier_to_the_input_shape() -> None:
    # Prepare: 3 channels, 6x10 image -> after one pool 32·3·5 = 480 features
    model = DigitsCNN(num_classes=4, input_shape=(3, 6, 10))

    # Execute
    logits = model(torch.zeros(5, 3, 6, 10))

    # Assert
    assert model.fc.in_features == 480
    assert logits.shape == (5, 4)


def test_mlp_hidden_sizes_set_layer_widths() -> None:
    # Prepare
    model = MLP(num_classes=3, input_shape=(2, 2, 2), hidden_sizes=(5, 4))

    # Execute
    shapes = [tuple(p.shape) for _, p in prunable_parameters(model)]

    # Assert: 8 inputs -> 5 -> 4 -> 3
    assert shapes == [(5, 8), (4, 5), (3, 4)]
    assert model(torch.zeros(6, 2, 2, 2)).shape == (6, 3)


def test_mlp_without_hidden_layers_is_one_linear_layer() -> None:
    # Prepare
    model = MLP(num_classes=2, input_shape=(1, 1, 3), hidden_sizes=())
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.0]]))
        model.fc1.bias.zero_()

    # Execute
    logits = model(torch.tensor([[[[1.0, 1.0, 1.0]]]]))

    # Assert: [1 + 2 + 3, -1], no ReLU on the logits
    assert torch.equal(logits, torch.tensor([[6.0, -1.0]]))


def test_model_names_list_every_registered_model() -> None:
    # Assert
    assert set(MODEL_NAMES) == {"conv2", "conv4", "vgg11", "resnet18", "digits-cnn", "mlp"}


def test_build_model_passes_options_and_class_count() -> None:
    # Execute
    conv4 = build_model("conv4", 5, (3, 84, 84), relu=True)
    mlp = build_model("mlp", 3, [1, 8, 8], hidden_sizes=[7, 6])  # lists, as TOML gives them

    # Assert
    assert isinstance(conv4, Conv4) and conv4.relu and conv4.fc.out_features == 5
    assert isinstance(mlp, MLP) and mlp.hidden_sizes == (7, 6)


def test_build_model_conv2_uses_requested_class_count() -> None:
    # Execute
    model = build_model("conv2", 10, (1, 28, 28))

    # Assert
    assert model.get_submodule("fc2").out_features == 10


def test_build_model_resnet18_returns_hand_written_resnet(paper_models: dict[str, nn.Module]) -> None:
    # Assert
    assert isinstance(paper_models["resnet18"], ResNet18)


@pytest.mark.parametrize(
    ("name", "num_classes", "input_shape", "options", "expected_in_message"),
    [
        # unknown model name
        ("lenet", 10, (1, 28, 28), {}, "'lenet'"),
        # option that conv2 does not have
        ("conv2", 62, (1, 28, 28), {"relu": True}, "relu"),
        # misspelt option
        ("conv4", 2, (3, 84, 84), {"reLU": True}, "reLU"),
        # relu given as an int, not a bool
        ("conv4", 2, (3, 84, 84), {"relu": 1}, "relu"),
        # hidden sizes with a zero width
        ("mlp", 10, (1, 8, 8), {"hidden_sizes": [64, 0]}, "hidden_sizes"),
        # hidden sizes as a bare int
        ("mlp", 10, (1, 8, 8), {"hidden_sizes": 64}, "hidden_sizes"),
        # no classes
        ("conv2", 0, (1, 28, 28), {}, "num_classes"),
        # class count as a bool
        ("conv2", True, (1, 28, 28), {}, "num_classes"),
        # input shape with two entries
        ("mlp", 10, (8, 8), {}, "input_shape"),
        # input shape with a zero
        ("mlp", 10, (1, 0, 8), {}, "input_shape"),
        # Conv-2 on RGB: expected vs got
        ("conv2", 62, (3, 28, 28), {}, "expects input_shape (1, 28, 28), got (3, 28, 28)"),
        # VGG-11 on 64x64: its classifier takes exactly 512 features
        ("vgg11", 10, (3, 64, 64), {}, "expects input_shape (3, 32, 32), got (3, 64, 64)"),
        # Conv-4 on 64x64 CelebA crops
        ("conv4", 2, (3, 64, 64), {}, "expects input_shape (3, 84, 84)"),
        # ResNet-18 below the 32-pixel minimum
        ("resnet18", 100, (3, 16, 16), {}, "got (3, 16, 16)"),
        # ResNet-18 on greyscale
        ("resnet18", 100, (1, 64, 64), {}, "(3, H, W)"),
        # small CNN on a 1-pixel-high image: the max-pool would leave nothing
        ("digits-cnn", 10, (1, 1, 8), {}, "H, W >= 2"),
    ],
)
def test_build_model_bad_request_raises_config_error_naming_it(
    name: str,
    num_classes: int,
    input_shape: tuple[int, ...],
    options: dict[str, object],
    expected_in_message: str,
) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=re.escape(expected_in_message)):
        build_model(name, num_classes, input_shape, **options)  # type: ignore[arg-type]
