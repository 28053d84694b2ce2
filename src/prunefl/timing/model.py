"""Analytic round-time model of one device: seconds per FL round, linear in the retained weights per layer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from prunefl.errors import ConfigError

__all__ = ["TimeModel"]


@dataclass(frozen=True)
class TimeModel:
    """Round time of one device as a function of the mask (spec §2.2).

    ``T(m) = c + Σ_l t_l·|m_l|`` with ``t_l = K·a_l + b`` and ``c = K·t0``, where K is the number of local
    SGD steps per round and ``|m_l|`` the retained weights of prunable layer l. Only prunable weights are
    charged; biases, BatchNorm and non-prunable layers are free (spec §2.2).

    Parameters
    ----------
    layer_names : tuple of str
        Prunable parameter names in model order, e.g. ``("conv1.weight", "fc1.weight")``. The order is the
        layer index used to break ties in reconfiguration (spec §3.4).
    compute_s_per_weight_per_step : tuple of float
        ``a_l``: marginal sparse compute time per retained weight per local iteration, in s, ≥ 0, one per layer.
    constant_s_per_step : float
        ``t0``: compute time per local iteration of a model with (almost) no weights, in s, ≥ 0.
    comm_s_per_weight : float
        ``b``: communication time per retained weight per round (upload + download), in s, ≥ 0
        (official value 5.561621025626998e-6, spec §4.2).

    Raises
    ------
    ConfigError
        If the lengths differ, a name repeats, or a value is negative or not finite.

    Examples
    --------
    >>> tm = TimeModel(("fc.weight",), (1.0,), 2.0, 0.5)
    >>> tm.round_time_s({"fc.weight": 3}, local_steps=5)  # 5·2 + (5·1 + 0.5)·3
    26.5
    """

    layer_names: tuple[str, ...]
    compute_s_per_weight_per_step: tuple[float, ...]
    constant_s_per_step: float
    comm_s_per_weight: float

    def __post_init__(self) -> None:
        # Normalise sequences to tuples so the instance is hashable and immutable whatever the caller passed.
        object.__setattr__(self, "layer_names", tuple(self.layer_names))
        object.__setattr__(
            self, "compute_s_per_weight_per_step", tuple(float(a) for a in self.compute_s_per_weight_per_step)
        )
        object.__setattr__(self, "constant_s_per_step", float(self.constant_s_per_step))
        object.__setattr__(self, "comm_s_per_weight", float(self.comm_s_per_weight))
        _check_time_model(self)

    def per_weight_round_s(self, local_steps: int) -> np.ndarray:
        """Return ``t_l = K·a_l + b``, seconds per retained weight of each layer per round (spec §2.2).

        Parameters
        ----------
        local_steps : int
            K, local SGD steps per round, ≥ 1.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_layers,)``, float64, in the order of ``layer_names``.

        Examples
        --------
        >>> TimeModel(("a", "b"), (1.0, 0.0), 0.0, 0.25).per_weight_round_s(4).tolist()
        [4.25, 0.25]
        """
        _check_local_steps(local_steps)
        a = np.asarray(self.compute_s_per_weight_per_step, dtype=np.float64)
        return local_steps * a + self.comm_s_per_weight

    def constant_round_s(self, local_steps: int) -> float:
        """Return ``c = K·t0``, the part of a round that does not depend on the mask, in s (spec §2.2).

        Examples
        --------
        >>> TimeModel(("a",), (0.0,), 1.5, 0.0).constant_round_s(4)
        6.0
        """
        _check_local_steps(local_steps)
        return local_steps * self.constant_s_per_step

    def round_time_s(self, kept: Mapping[str, int], local_steps: int) -> float:
        """Return ``T(m) = c + Σ_l t_l·|m_l|``, the simulated duration of one FL round in s (spec §2.2).

        Parameters
        ----------
        kept : Mapping[str, int]
            ``|m_l|``, retained weights per layer; keys must be exactly ``layer_names``.
        local_steps : int
            K, local SGD steps per round, ≥ 1.

        Raises
        ------
        ConfigError
            If ``kept`` misses or adds a layer, or a count is negative.

        Examples
        --------
        >>> tm = TimeModel(("a", "b"), (1.0, 2.0), 1.0, 0.5)
        >>> tm.round_time_s({"a": 1, "b": 2}, local_steps=1)  # 1 + 1.5·1 + 2.5·2
        7.5
        """
        counts = self._counts(kept)
        t = self.per_weight_round_s(local_steps)
        return self.constant_round_s(local_steps) + float(np.dot(t, counts))

    def compute_time_s(self, kept: Mapping[str, int], local_steps: int) -> float:
        """Return ``K·(t0 + Σ_l a_l·|m_l|)``, the local-training part of a round without communication, in s.

        Parameters are those of :meth:`round_time_s`.

        Examples
        --------
        >>> TimeModel(("a",), (1.0,), 1.0, 0.5).compute_time_s({"a": 2}, local_steps=3)
        9.0
        """
        counts = self._counts(kept)
        _check_local_steps(local_steps)
        a = np.asarray(self.compute_s_per_weight_per_step, dtype=np.float64)
        return local_steps * (self.constant_s_per_step + float(np.dot(a, counts)))

    def scaled(self, compute_factor: float) -> TimeModel:
        """Return the model of a device whose computation is ``compute_factor`` times slower.

        ``t0`` and every ``a_l`` are multiplied by ``compute_factor``; communication (``b``) is unchanged, so a
        heterogeneous population shares one network (spec §10 item 9).

        Parameters
        ----------
        compute_factor : float
            Multiplier of compute time, > 0 (2.0 = half as fast, 0.5 = twice as fast).

        Raises
        ------
        ConfigError
            If ``compute_factor`` is not a finite number > 0.

        Examples
        --------
        >>> TimeModel(("a",), (1.0,), 2.0, 0.5).scaled(2.0).round_time_s({"a": 1}, local_steps=1)
        6.5
        """
        if not (isinstance(compute_factor, int | float) and math.isfinite(compute_factor) and compute_factor > 0):
            raise ConfigError(f"compute_factor must be a finite number > 0, got {compute_factor!r}")
        return TimeModel(
            layer_names=self.layer_names,
            compute_s_per_weight_per_step=tuple(a * compute_factor for a in self.compute_s_per_weight_per_step),
            constant_s_per_step=self.constant_s_per_step * compute_factor,
            comm_s_per_weight=self.comm_s_per_weight,
        )

    def _counts(self, kept: Mapping[str, int]) -> np.ndarray:
        """Return ``kept`` as a float64 vector in ``layer_names`` order, after checking its keys and values."""
        missing = [n for n in self.layer_names if n not in kept]
        extra = [n for n in kept if n not in self.layer_names]
        if missing or extra:
            raise ConfigError(
                f"kept must have exactly the time model's layers; missing {missing}, unknown {extra}"
            )
        counts = np.asarray([kept[n] for n in self.layer_names], dtype=np.float64)
        if (counts < 0).any():
            bad = {n: kept[n] for n in self.layer_names if kept[n] < 0}
            raise ConfigError(f"kept counts must be >= 0, got {bad}")
        return counts


def _check_time_model(tm: TimeModel) -> None:
    """Raise ConfigError unless names are unique and every coefficient is a finite number >= 0."""
    names, coeffs = tm.layer_names, tm.compute_s_per_weight_per_step
    if len(names) != len(coeffs):
        raise ConfigError(
            f"TimeModel needs one compute coefficient per layer: {len(names)} layer_names, {len(coeffs)} coefficients"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"TimeModel layer_names must be unique, repeated: {duplicates}")
    bad = {n: a for n, a in zip(names, coeffs, strict=True) if not (math.isfinite(a) and a >= 0)}
    if bad:
        raise ConfigError(f"compute_s_per_weight_per_step must be finite and >= 0, got {bad}")
    for field_name in ("constant_s_per_step", "comm_s_per_weight"):
        value = getattr(tm, field_name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{field_name} must be finite and >= 0, got {value!r}")


def _check_local_steps(local_steps: int) -> None:
    """Raise ConfigError unless ``local_steps`` is an int >= 1 (a bool is rejected)."""
    if isinstance(local_steps, bool) or not isinstance(local_steps, int | np.integer) or local_steps < 1:
        raise ConfigError(f"local_steps must be an int >= 1, got {local_steps!r}")
