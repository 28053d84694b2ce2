"""Build a model by name, validating its options and the input shape it will receive."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn

from prunefl.errors import ConfigError
from prunefl.models.conv2 import Conv2
from prunefl.models.conv4 import Conv4
from prunefl.models.resnet18 import ResNet18
from prunefl.models.small import MLP, DigitsCNN
from prunefl.models.vgg11 import VGG11

__all__ = ["MODEL_NAMES", "build_model"]

logger = logging.getLogger(__name__)

InputShape = tuple[int, int, int]  # (channels, height, width) of one example


def build_model(name: str, num_classes: int, input_shape: InputShape, **options: object) -> nn.Module:
    """Build the model called `name` for inputs of `input_shape` and `num_classes` outputs.

    Parameters
    ----------
    name : str
        One of `MODEL_NAMES`: "conv2" (spec §6, Conv-2), "conv4" (Conv-4), "vgg11", "resnet18",
        "digits-cnn" (`DigitsCNN`), "mlp" (`MLP`).
    num_classes : int
        Number of output logits, ≥ 1.
    input_shape : tuple of int
        (channels, height, width) of one example. The paper models accept one shape each: conv2 (1, 28, 28),
        conv4 (3, 84, 84), vgg11 (3, 32, 32); resnet18 needs (3, H, W) with H, W ≥ 32; digits-cnn any
        (C, H, W) with H, W ≥ 2; mlp any shape.
    **options
        Model options, each documented on its model class: conv4 takes `relu` (bool), mlp takes
        `hidden_sizes` (sequence of positive ints). The other models take none.

    Returns
    -------
    torch.nn.Module
        A fresh model on the CPU in float32, with `prunable_parameter_names()` declared.

    Raises
    ------
    ConfigError
        If `name` is unknown, an option is unknown or of the wrong type, `num_classes` < 1, or `input_shape`
        is malformed or not one the model accepts (the message gives expected and found).

    Examples
    --------
    >>> model = build_model("mlp", num_classes=3, input_shape=(1, 2, 2), hidden_sizes=[4])
    >>> model.prunable_parameter_names()
    ('fc1.weight', 'fc2.weight')
    """
    entry = _MODELS.get(name)
    if entry is None:
        raise ConfigError(f"model must be one of {', '.join(MODEL_NAMES)}; got {name!r}")
    _check_num_classes(num_classes)
    shape = _check_input_shape_format(input_shape)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        accepted = ", ".join(sorted(entry.options)) or "none"
        raise ConfigError(f"model {name!r} has no option {', '.join(unknown)}; its options: {accepted}")
    checked = {key: entry.options[key](name, key, value) for key, value in options.items()}
    entry.check_input_shape(name, shape)
    model = entry.build(num_classes, shape, **checked)
    logger.debug(
        "built model %s (num_classes=%s, input_shape=%s, options=%s): %s parameters",
        name,
        num_classes,
        shape,
        checked,
        sum(p.numel() for p in model.parameters()),
    )
    return model


@dataclass(frozen=True)
class _ModelEntry:
    """How to build one named model: the builder, the input shapes it accepts and its option converters."""

    build: Callable[..., nn.Module]  # (num_classes, input_shape, **options) -> model
    check_input_shape: Callable[[str, InputShape], None]  # raises ConfigError
    options: Mapping[str, Callable[[str, str, object], object]] = field(default_factory=dict)


def _exact_input_shape(expected: InputShape) -> Callable[[str, InputShape], None]:
    def check(name: str, shape: InputShape) -> None:
        if shape != expected:
            raise ConfigError(f"model {name!r} expects input_shape {expected}, got {shape}")

    return check


def _check_resnet_input_shape(name: str, shape: InputShape) -> None:
    channels, height, width = shape
    minimum = ResNet18.MIN_INPUT_SIZE
    if channels != 3 or height < minimum or width < minimum:
        raise ConfigError(f"model {name!r} expects input_shape (3, H, W) with H, W >= {minimum}, got {shape}")


def _check_small_cnn_input_shape(name: str, shape: InputShape) -> None:
    if shape[1] < 2 or shape[2] < 2:  # one 2x2 max-pool must leave at least one pixel
        raise ConfigError(f"model {name!r} expects input_shape (C, H, W) with H, W >= 2, got {shape}")


def _accept_any_input_shape(name: str, shape: InputShape) -> None:
    del name, shape  # an MLP flattens whatever it gets


def _check_bool(name: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"model {name!r} option {key} must be true or false, got {value!r}")
    return value


def _check_positive_ints(name: str, key: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(_is_positive_int(v) for v in value):
        raise ConfigError(f"model {name!r} option {key} must be a list of positive ints, got {value!r}")
    return tuple(value)


def _check_num_classes(num_classes: object) -> None:
    if not _is_positive_int(num_classes):
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")


def _check_input_shape_format(input_shape: object) -> InputShape:
    if (
        not isinstance(input_shape, list | tuple)
        or len(input_shape) != 3
        or not all(_is_positive_int(v) for v in input_shape)
    ):
        raise ConfigError(f"input_shape must be 3 positive ints (channels, height, width), got {input_shape!r}")
    return (input_shape[0], input_shape[1], input_shape[2])


def _is_positive_int(value: object) -> bool:
    # bool is an int subclass; `true` in a TOML file is not a class count
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_MODELS: dict[str, _ModelEntry] = {
    "conv2": _ModelEntry(
        build=lambda num_classes, shape: Conv2(num_classes),
        check_input_shape=_exact_input_shape(Conv2.INPUT_SHAPE),
    ),
    "conv4": _ModelEntry(
        build=lambda num_classes, shape, **options: Conv4(num_classes, **options),
        check_input_shape=_exact_input_shape(Conv4.INPUT_SHAPE),
        options={"relu": _check_bool},
    ),
    "vgg11": _ModelEntry(
        build=lambda num_classes, shape: VGG11(num_classes),
        check_input_shape=_exact_input_shape(VGG11.INPUT_SHAPE),
    ),
    "resnet18": _ModelEntry(
        build=lambda num_classes, shape: ResNet18(num_classes),
        check_input_shape=_check_resnet_input_shape,
    ),
    "digits-cnn": _ModelEntry(
        build=lambda num_classes, shape: DigitsCNN(num_classes, shape),
        check_input_shape=_check_small_cnn_input_shape,
    ),
    "mlp": _ModelEntry(
        build=lambda num_classes, shape, **options: MLP(num_classes, shape, **options),
        check_input_shape=_accept_any_input_shape,
        options={"hidden_sizes": _check_positive_ints},
    ),
}

MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)
"""Names `build_model` accepts, in the order of spec §6 followed by the small models."""
