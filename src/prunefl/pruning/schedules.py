"""When PruneFL reconfigures and how much it may change: δ decay, reconfiguration rounds and the density cap."""

from __future__ import annotations

import math
from numbers import Integral

from prunefl.errors import ConfigError

__all__ = ["density_cap", "is_reconfiguration_round", "max_decrease"]


def max_decrease(round: int, initial: float = 0.3, half_life_rounds: float = 10000.0) -> float:
    """Return δ(r) = δ0·0.5^(r / half_life), the max fraction of a layer's in-use weights removable now.

    Always decays, whatever the argument types: the official prototype decayed only when both arguments were
    floats and its half-life was the int 10000, so δ stayed 0.3 (spec §3.5, §9 D8, §10 item 10). For IP use a
    constant δ = ``initial`` instead (spec §3.7).

    Parameters
    ----------
    round : int
        FL round r, ≥ 0.
    initial : float
        δ0 = δ(0), in [0, 1] (default: 0.3, MAX_DEC_DIFF).
    half_life_rounds : float
        Rounds after which δ halves, > 0; an int is accepted, ``math.inf`` keeps δ constant as during IP
        (default: 10000.0, ADJ_HALF_LIFE).

    Returns
    -------
    float
        δ(r) in [0, initial].

    Raises
    ------
    ConfigError
        If ``round`` < 0, ``initial`` is outside [0, 1] or ``half_life_rounds`` ≤ 0.

    Examples
    --------
    >>> round(max_decrease(10000), 12), round(max_decrease(20000, 0.3, 10000), 12)
    (0.15, 0.075)
    """
    _check_int("round", round, 0)
    if not (math.isfinite(initial) and 0.0 <= initial <= 1.0):
        raise ConfigError(f"max-decrease initial must be in [0, 1], got {initial!r}")
    if not half_life_rounds > 0:  # also rejects NaN
        raise ConfigError(f"half_life_rounds must be > 0, got {half_life_rounds!r}")
    # float() on both operands: the exponent must never be an integer division (the prototype defect).
    return float(initial) * 0.5 ** (float(round) / float(half_life_rounds))


def is_reconfiguration_round(round: int, interval: int = 50, first: int = 50) -> bool:
    """Return whether FL round ``round`` ends with a reconfiguration: rounds first, first + interval, …

    With the defaults, reconfigurations fall at rounds 50, 100, 150, …, with or without IP (spec §3.6, §12 item 9).

    Parameters
    ----------
    round : int
        FL round r, ≥ 0.
    interval : int
        ΔR, rounds between reconfigurations, ≥ 1 (default: 50, ADJ_INTERVAL).
    first : int
        First reconfiguration round, ≥ 0 (default: 50).

    Raises
    ------
    ConfigError
        If an argument is not an int or out of range.

    Examples
    --------
    >>> [r for r in range(160) if is_reconfiguration_round(r)]
    [50, 100, 150]
    """
    _check_int("round", round, 0)
    _check_int("interval", interval, 1)
    _check_int("first", first, 0)
    return round >= first and (round - first) % interval == 0


def density_cap(
    round: int, max_density: float | None, target_density: float | None, total_rounds: int
) -> float | None:
    """Return the density cap D(r) = D_max + (D_tgt − D_max)·r/R, or None when no cap is configured.

    Linear anneal from ``max_density`` at round 0 to ``target_density`` at round ``total_rounds`` (spec §3.10).
    Only additions in FL reconfigurations are capped; removal stays bounded by δ, so the density may exceed D(r)
    for a while. Unlike the official code, ``target_density`` without ``max_density`` is an error, not a crash;
    ``max_density`` alone gives a constant cap.

    Parameters
    ----------
    round : int
        FL round r, ≥ 0; rounds past ``total_rounds`` keep ``target_density``.
    max_density : float or None
        D_max, in (0, 1]; None = no cap.
    target_density : float or None
        D_tgt, in (0, D_max]; None = constant cap D_max.
    total_rounds : int
        R (MAX_ROUND), ≥ 1.

    Returns
    -------
    float or None
        D(r) in (0, 1], or None.

    Raises
    ------
    ConfigError
        If a density is outside (0, 1], D_tgt > D_max, D_tgt is given without D_max, or a round count is invalid.

    Examples
    --------
    >>> density_cap(50, 0.5, 0.1, 100), density_cap(50, None, None, 100)
    (0.3, None)
    """
    _check_int("round", round, 0)
    _check_int("total_rounds", total_rounds, 1)
    if max_density is None:
        if target_density is not None:
            raise ConfigError(f"target_density={target_density!r} needs max_density, got None")
        return None
    for name, value in (("max_density", max_density), ("target_density", target_density)):
        if value is not None and not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
    if target_density is None:
        return float(max_density)
    if target_density > max_density:
        raise ConfigError(
            f"target_density must be <= max_density, got target_density={target_density!r} > "
            f"max_density={max_density!r}"
        )
    progress = min(round, total_rounds) / total_rounds
    return float(max_density + (target_density - max_density) * progress)


def _check_int(name: str, value: object, low: int) -> None:
    """Raise ConfigError unless ``value`` is an integer (not a bool) >= ``low``; numpy integers are accepted."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
