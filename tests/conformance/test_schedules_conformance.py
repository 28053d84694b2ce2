"""Spec §12 item 3: the δ schedule (spec §3.5)."""

from __future__ import annotations

import math

import pytest

from prunefl.pruning import max_decrease


@pytest.mark.parametrize(
    "fl_round, expected",
    # spec §12 item 3 (5 digits), plus the spec §3.5 table values 0.280 and 0.212 (3 digits)
    [(50, 0.29896), (10000, 0.15), (20000, 0.075), (1000, 0.280), (5000, 0.212)],
)
def test_spec12_item3_fl_delta_schedule(fl_round: int, expected: float) -> None:
    # Execute: official FL defaults δ0 = 0.3, half-life 10000 rounds, int arguments (they must still decay)
    delta = max_decrease(fl_round, 0.3, 10000)
    # Assert: to the number of digits the spec prints
    digits = len(str(expected).split(".")[1])
    assert delta == pytest.approx(expected, abs=0.5 * 10**-digits)


@pytest.mark.parametrize("ip_round", [0, 50, 1000])
def test_spec12_item3_ip_delta_stays_at_initial_value(ip_round: int) -> None:
    # Execute: IP uses a constant δ (spec §3.7); an infinite half-life expresses that
    delta = max_decrease(ip_round, 0.3, math.inf)
    # Assert
    assert delta == 0.3
