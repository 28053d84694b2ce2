"""Learning rate per FL round (spec §5: constant, half-life decay, step decay)."""

from __future__ import annotations

from typing import Literal

__all__ = ["learning_rate"]


def learning_rate(
    round: int,
    base_lr: float,
    schedule: Literal["constant", "half_life", "step"] = "constant",
    half_life_rounds: float = 10000.0,
    step_rounds: int = 1000,
    step_gamma: float = 0.5**0.1,
) -> float:
    """Learning rate used in ``round`` (0-based).

    The official clients step their scheduler once per round, so round r uses the value after r steps.

    >>> learning_rate(10000, 0.1, "half_life")
    0.05
    >>> learning_rate(999, 1.0, "step", step_rounds=1000, step_gamma=0.5)
    1.0
    >>> learning_rate(1000, 1.0, "step", step_rounds=1000, step_gamma=0.5)
    0.5
    """
    if schedule == "constant":
        return base_lr
    if schedule == "half_life":
        return base_lr * 0.5 ** (round / half_life_rounds)
    if schedule == "step":
        return base_lr * step_gamma ** (round // step_rounds)
    raise ValueError(f"unknown lr schedule {schedule!r}; expected constant, half_life or step")
