"""δ decay, reconfiguration rounds and the density cap anneal (spec §3.5, §3.6, §3.10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prunefl.errors import ConfigError
from prunefl.pruning import density_cap, is_reconfiguration_round, max_decrease


def test_max_decrease_halves_every_half_life() -> None:
    # Prepare: δ0 = 0.4, half-life 100 -> δ(100) = 0.2, δ(200) = 0.1, δ(50) = 0.4/√2
    # Execute
    values = [max_decrease(r, 0.4, 100.0) for r in (0, 50, 100, 200)]
    # Assert
    assert values == pytest.approx([0.4, 0.4 / math.sqrt(2), 0.2, 0.1], rel=1e-15)


def test_max_decrease_decays_with_int_half_life() -> None:
    # Prepare: the official prototype passed the int 10000 and so never decayed (spec §3.5, §10 item 10)
    # Execute
    d = max_decrease(5000, 0.3, 10000)
    # Assert: 0.3·0.5^0.5 = 0.2121 (spec §3.5 quotes 0.212)
    assert d == pytest.approx(0.3 / math.sqrt(2), rel=1e-15)
    assert isinstance(d, float)


def test_max_decrease_accepts_numpy_round() -> None:
    # Execute / Assert
    assert max_decrease(np.int64(10000)) == pytest.approx(0.15)


@pytest.mark.parametrize(
    "args, message",
    [
        ((-1,), "round"),  # negative round
        ((1.5,), "round"),  # fractional round
        ((True,), "round"),  # bool is not a round number
        ((0, 1.5), "initial"),  # δ0 above 1
        ((0, -0.1), "initial"),  # δ0 below 0
        ((0, 0.3, 0.0), "half_life_rounds"),  # zero half-life
        ((0, 0.3, math.nan), "half_life_rounds"),  # NaN half-life
    ],
)
def test_max_decrease_rejects_bad_arguments(args: tuple, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        max_decrease(*args)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_max_decrease_never_increases(r1: int, r2: int) -> None:
    # Execute
    lo, hi = sorted((r1, r2))
    # Assert
    assert 0.0 <= max_decrease(hi) <= max_decrease(lo) <= 0.3


def test_reconfiguration_rounds_default_every_50_from_50() -> None:
    # Execute
    rounds = [r for r in range(0, 251) if is_reconfiguration_round(r)]
    # Assert: spec §3.6 "reconfigurations fall at rounds 50, 100, 150, …"; round 0 never
    assert rounds == [50, 100, 150, 200, 250]


def test_reconfiguration_rounds_custom_interval_and_first() -> None:
    # Execute
    rounds = [r for r in range(0, 30) if is_reconfiguration_round(r, interval=10, first=5)]
    # Assert
    assert rounds == [5, 15, 25]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(round=-1),  # negative round
        dict(round=10, interval=0),  # zero interval would divide by zero
        dict(round=10, first=-5),  # negative first round
        dict(round=10, interval=2.5),  # fractional interval
    ],
)
def test_reconfiguration_round_rejects_bad_arguments(kwargs: dict) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError):
        is_reconfiguration_round(**kwargs)


def test_density_cap_anneals_linearly_then_holds_target() -> None:
    # Prepare: D_max = 0.8, D_tgt = 0.2, R = 100 -> D(0) = 0.8, D(25) = 0.65, D(100) = 0.2, D(150) = 0.2
    # Execute
    caps = [density_cap(r, 0.8, 0.2, 100) for r in (0, 25, 100, 150)]
    # Assert
    assert caps == pytest.approx([0.8, 0.65, 0.2, 0.2], rel=1e-12)


def test_density_cap_none_without_limits_and_constant_with_max_only() -> None:
    # Execute / Assert
    assert density_cap(7, None, None, 100) is None
    assert density_cap(7, 0.5, None, 100) == 0.5


@pytest.mark.parametrize(
    "max_d, target_d, message",
    [
        (None, 0.3, "needs max_density"),  # the official code crashed here (spec §3.10)
        (0.3, 0.5, "target_density must be <= max_density"),  # target above max
        (1.5, None, "max_density must be in"),  # above 1
        (0.0, None, "max_density must be in"),  # zero
        (0.5, 0.0, "target_density must be in"),  # zero target
    ],
)
def test_density_cap_rejects_bad_limits(max_d: float | None, target_d: float | None, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        density_cap(0, max_d, target_d, 100)
