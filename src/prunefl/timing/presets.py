"""Named sets of measured time-model constants, starting with the official Raspberry-Pi profile ``rpi_official``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prunefl.errors import ConfigError
from prunefl.timing.model import TimeModel

__all__ = ["OFFICIAL_COMM_S_PER_WEIGHT", "list_presets", "preset_time_model"]

# b, s per retained weight per round (up + down), identical for every data set in the official configs (spec §4.2).
# The config comment "1MBps = 4e-6 * 2" would give 8e-6; the origin of this value is unverified (spec §2.2).
OFFICIAL_COMM_S_PER_WEIGHT = 5.561621025626998e-06


@dataclass(frozen=True)
class _ModelConstants:
    """Per-model constants of one preset: t0 (s/iter) and a_l (s per weight per iter) in model layer order."""

    constant_s_per_step: float
    compute_s_per_weight_per_step: tuple[float, ...]
    comm_s_per_weight: float


# Official per-layer coefficients, copied digit for digit from configs/*.py at b499d3a (spec §4.2).
_CONV2_A = (0.0, 7.098850e-6, 1.927325e-7, 1.782308e-7)  # conv1, conv2, fc1, fc2
_CONV4_A = (  # conv1–conv4, fc
    3.404870760969184e-4,
    6.0777404652307096e-5,
    1.7590354819798735e-5,
    3.7744218545217262e-6,
    0.0,
)
_VGG11_A = (  # conv1–conv8, fc1–fc3
    0.0,
    8.95507e-6,
    2.495288e-6,
    2.780686e-6,
    1.024265e-6,
    1.277773e-6,
    1.843831e-6,
    8.066104e-7,
    5.145334e-7,
    2.430023e-7,
    0.0,
)
_RESNET18_A = (  # conv1; layer1.0.conv1 … layer4.1.conv2; fc (downsample convs are not prunable)
    0.0,
    2.340521716080689e-6,
    1.0023681746470196e-5,
    1.056062089141079e-5,
    4.237937059382076e-6,
    5.6712687899939165e-6,
    2.1231460738533592e-6,
    2.3287953360690104e-6,
    6.735456426708777e-7,
    6.624979740735464e-6,
    5.137498356286562e-7,
    1.9743886037025985e-7,
    3.703237561077147e-8,
    9.910993133200227e-7,
    1.4966532573161931e-6,
    7.477319510700925e-7,
    8.722523120339614e-7,
    6.128180224224039e-6,
)

# t0 (spec §4.1): FEMNIST and CIFAR-10 store it directly (SPARSE_TIME); CelebA and ImageNet-100 store the time of a
# model with one weight per layer (SPARSE1_TIME) and derive t0 = SPARSE1_TIME − Σ a_l, reproduced here in the same
# float order so c = 5·t0 matches TIME_CONSTANT bit for bit.
_PRESETS: dict[str, dict[str, _ModelConstants]] = {
    "rpi_official": {
        "conv2": _ModelConstants(1.2492789765, _CONV2_A, OFFICIAL_COMM_S_PER_WEIGHT),
        "conv4": _ModelConstants(1.598415535595268 - sum(_CONV4_A), _CONV4_A, OFFICIAL_COMM_S_PER_WEIGHT),
        "vgg11": _ModelConstants(17.36990105989628, _VGG11_A, OFFICIAL_COMM_S_PER_WEIGHT),
        "resnet18": _ModelConstants(14.560097051459854 - sum(_RESNET18_A), _RESNET18_A, OFFICIAL_COMM_S_PER_WEIGHT),
    },
}


# "uniform": any model, every layer alike. For models without measured constants (digits-cnn, mlp, your own) and for
# quick experiments: the Conv-2 Raspberry-Pi fc1 coefficient per weight, its t0, the official b.
UNIFORM_PRESET = "uniform"
_UNIFORM_A = 1.927325e-7
_UNIFORM_T0 = 1.2492789765


def list_presets() -> dict[str, tuple[str, ...]]:
    """Return every preset name with the model names it has constants for.

    Examples
    --------
    >>> list_presets()["rpi_official"]
    ('conv2', 'conv4', 'vgg11', 'resnet18')
    """
    return {**{preset: tuple(models) for preset, models in _PRESETS.items()}, UNIFORM_PRESET: ("*",)}


def preset_time_model(preset: str, model_name: str, layer_names: Sequence[str]) -> TimeModel:
    """Build the :class:`TimeModel` of a named preset for one of the paper's models (spec §4).

    The coefficients depend only on the layer position, not on its size, so Conv-2 with a 10-class ``fc2``
    (Fashion-MNIST) uses the FEMNIST constants unchanged.

    Parameters
    ----------
    preset : str
        Preset name; see :func:`list_presets` (``"rpi_official"``: official constants, spec §4.1–4.2;
        ``"uniform"``: any model, the same per-weight coefficient for every layer).
    model_name : str
        One of ``"conv2"``, ``"conv4"``, ``"vgg11"``, ``"resnet18"`` (any name for ``"uniform"``).
    layer_names : Sequence[str]
        The model's prunable parameter names in model order (``named_parameters()`` order), one per
        coefficient: 4 / 5 / 11 / 18.

    Returns
    -------
    TimeModel

    Raises
    ------
    ConfigError
        If the preset or model is unknown, or ``layer_names`` has the wrong length.

    Examples
    --------
    >>> tm = preset_time_model("rpi_official", "conv2", ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"])
    >>> round(tm.constant_round_s(local_steps=5), 4)
    6.2464
    """
    if preset == UNIFORM_PRESET:
        names = tuple(layer_names)
        return TimeModel(names, (_UNIFORM_A,) * len(names), _UNIFORM_T0, OFFICIAL_COMM_S_PER_WEIGHT)
    if preset not in _PRESETS:
        raise ConfigError(
            f"unknown time-model preset {preset!r}; expected one of {sorted([*_PRESETS, UNIFORM_PRESET])}"
        )
    models = _PRESETS[preset]
    if model_name not in models:
        raise ConfigError(
            f"preset {preset!r} has no constants for model {model_name!r}; expected one of {list(models)}"
        )
    constants = models[model_name]
    names = tuple(layer_names)
    if len(names) != len(constants.compute_s_per_weight_per_step):
        raise ConfigError(
            f"preset {preset!r} model {model_name!r} has {len(constants.compute_s_per_weight_per_step)} prunable "
            f"layers, got {len(names)} layer_names: {list(names)}"
        )
    return TimeModel(
        layer_names=names,
        compute_s_per_weight_per_step=constants.compute_s_per_weight_per_step,
        constant_s_per_step=constants.constant_s_per_step,
        comm_s_per_weight=constants.comm_s_per_weight,
    )
