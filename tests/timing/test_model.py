"""TimeModel arithmetic and validation, and the preset lookup (spec §2.2, §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prunefl.errors import ConfigError
from prunefl.timing import OFFICIAL_COMM_S_PER_WEIGHT, TimeModel, list_presets, preset_time_model

# t0 = 2 s/step, a = (1, 0.5) s/weight/step, b = 0.25 s/weight/round.
TM = TimeModel(("conv.weight", "fc.weight"), (1.0, 0.5), 2.0, 0.25)


def test_per_weight_round_s_is_k_times_a_plus_b() -> None:
    # Prepare: K = 4 -> t = (4·1 + 0.25, 4·0.5 + 0.25) = (4.25, 2.25)
    # Execute
    t = TM.per_weight_round_s(4)
    # Assert
    assert t.dtype == np.float64
    assert t.tolist() == [4.25, 2.25]


def test_round_time_is_constant_plus_per_weight_times_kept() -> None:
    # Prepare: K = 4 -> c = 8; kept (3, 10) -> 8 + 4.25·3 + 2.25·10 = 8 + 12.75 + 22.5 = 43.25
    kept = {"conv.weight": 3, "fc.weight": 10}
    # Execute
    total = TM.round_time_s(kept, 4)
    # Assert
    assert TM.constant_round_s(4) == 8.0
    assert total == 43.25


def test_compute_time_excludes_communication() -> None:
    # Prepare: K·(t0 + Σ a·kept) = 4·(2 + 3 + 5) = 40; the comm part b·13 = 3.25 is left out
    kept = {"conv.weight": 3, "fc.weight": 10}
    # Execute
    compute = TM.compute_time_s(kept, 4)
    # Assert
    assert compute == 40.0
    assert TM.round_time_s(kept, 4) - compute == pytest.approx(0.25 * 13)


def test_scaled_multiplies_compute_and_keeps_communication() -> None:
    # Prepare: a slower device (factor 3): compute 3·40 = 120, comm still 3.25
    kept = {"conv.weight": 3, "fc.weight": 10}
    # Execute
    slow = TM.scaled(3.0)
    # Assert
    assert slow.compute_time_s(kept, 4) == 120.0
    assert slow.round_time_s(kept, 4) == pytest.approx(123.25)
    assert slow.comm_s_per_weight == TM.comm_s_per_weight
    assert slow.layer_names == TM.layer_names


def test_time_model_accepts_lists_and_stays_hashable() -> None:
    # Prepare / Execute
    tm = TimeModel(["a"], [1], 0, 0)  # type: ignore[arg-type]
    # Assert: sequences become tuples and ints floats, so the frozen instance hashes and compares by value
    assert tm == TimeModel(("a",), (1.0,), 0.0, 0.0)
    assert hash(tm) == hash(TimeModel(("a",), (1.0,), 0.0, 0.0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        # one coefficient for two layers
        (dict(layer_names=("a", "b"), compute_s_per_weight_per_step=(1.0,)), "one compute coefficient per layer"),
        # duplicate layer name
        (dict(layer_names=("a", "a"), compute_s_per_weight_per_step=(1.0, 1.0)), "unique"),
        # negative per-weight compute time
        (dict(compute_s_per_weight_per_step=(-1e-6,)), "finite and >= 0"),
        # NaN per-weight compute time
        (dict(compute_s_per_weight_per_step=(math.nan,)), "finite and >= 0"),
        # negative constant
        (dict(constant_s_per_step=-1.0), "constant_s_per_step"),
        # infinite communication time
        (dict(comm_s_per_weight=math.inf), "comm_s_per_weight"),
    ],
)
def test_time_model_rejects_bad_fields(kwargs: dict, message: str) -> None:
    # Prepare
    fields = dict(layer_names=("a",), compute_s_per_weight_per_step=(1.0,), constant_s_per_step=1.0,
                  comm_s_per_weight=1.0)
    fields.update(kwargs)
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        TimeModel(**fields)


@pytest.mark.parametrize(
    "kept, message",
    [
        ({"conv.weight": 1}, "missing \\['fc.weight'\\]"),  # a layer left out
        ({"conv.weight": 1, "fc.weight": 1, "bias": 1}, "unknown \\['bias'\\]"),  # a non-prunable name
        ({"conv.weight": -1, "fc.weight": 1}, ">= 0"),  # negative count
    ],
)
def test_round_time_rejects_bad_kept(kept: dict, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        TM.round_time_s(kept, 1)


@pytest.mark.parametrize("local_steps", [0, -1, 2.0, True])  # zero, negative, float, bool
def test_local_steps_must_be_positive_int(local_steps: object) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match="local_steps"):
        TM.per_weight_round_s(local_steps)  # type: ignore[arg-type]


@pytest.mark.parametrize("factor", [0.0, -1.0, math.nan, math.inf])  # zero, negative, NaN, infinite
def test_scaled_rejects_nonpositive_or_nonfinite_factor(factor: float) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match="compute_factor"):
        TM.scaled(factor)


def test_list_presets_names_the_four_paper_models() -> None:
    # Execute
    presets = list_presets()
    # Assert
    assert presets == {"rpi_official": ("conv2", "conv4", "vgg11", "resnet18"), "uniform": ("*",)}


def test_preset_uses_caller_layer_names_and_official_comm() -> None:
    # Prepare
    names = ["c1.weight", "c2.weight", "f1.weight", "f2.weight"]
    # Execute
    tm = preset_time_model("rpi_official", "conv2", names)
    # Assert
    assert tm.layer_names == tuple(names)
    assert tm.comm_s_per_weight == OFFICIAL_COMM_S_PER_WEIGHT == 5.561621025626998e-6
    assert tm.compute_s_per_weight_per_step == (0.0, 7.098850e-6, 1.927325e-7, 1.782308e-7)


@pytest.mark.parametrize(
    "preset, model, n_layers, message",
    [
        ("rpi", "conv2", 4, "unknown time-model preset"),  # misspelt preset
        ("rpi_official", "resnet50", 4, "no constants for model"),  # model without constants
        ("rpi_official", "vgg11", 10, "has 11 prunable layers, got 10"),  # one layer name short
    ],
)
def test_preset_time_model_rejects_bad_requests(preset: str, model: str, n_layers: int, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        preset_time_model(preset, model, [f"l{i}.weight" for i in range(n_layers)])


def test_uniform_preset_serves_any_model_with_equal_layers() -> None:
    from prunefl.timing.presets import preset_time_model

    tm = preset_time_model("uniform", "my-model", ["a.weight", "b.weight"])
    assert tm.layer_names == ("a.weight", "b.weight")
    assert tm.compute_s_per_weight_per_step[0] == tm.compute_s_per_weight_per_step[1] > 0
