"""Simulated time of one round: per client download + compute + upload; the slowest client sets the round.

The compute part comes from a device time model (spec §2.2) or from the measured wall time of the local steps;
the transfer part from the official per-weight constant b or from the bytes actually sent over a link profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from prunefl.seeds import DEVICE_STREAM
from prunefl.timing.model import TimeModel

__all__ = ["LinkProfile", "DeviceProfile", "ClientCharge", "charge_client", "make_devices"]


@dataclass(frozen=True)
class LinkProfile:
    """A client's network link.

    Parameters
    ----------
    uplink_bytes_per_s, downlink_bytes_per_s : float
        Bandwidth in each direction, bytes per second.
    latency_s : float
        One-way latency added to every transfer, seconds.
    """

    uplink_bytes_per_s: float = 1e6
    downlink_bytes_per_s: float = 1e6
    latency_s: float = 0.0

    def upload_s(self, n_bytes: int) -> float:
        return self.latency_s + n_bytes / self.uplink_bytes_per_s

    def download_s(self, n_bytes: int) -> float:
        return self.latency_s + n_bytes / self.downlink_bytes_per_s


@dataclass(frozen=True)
class DeviceProfile:
    """One client's device: its time model, a compute-speed multiplier and its link."""

    time_model: TimeModel
    compute_scale: float = 1.0
    link: LinkProfile = LinkProfile()


@dataclass(frozen=True)
class ClientCharge:
    """Simulated seconds one client spends in a round, by phase."""

    download_s: float
    compute_s: float
    upload_s: float

    @property
    def total_s(self) -> float:
        return self.download_s + self.compute_s + self.upload_s


def charge_client(
    device: DeviceProfile,
    kept: Mapping[str, int],
    local_steps: int,
    bytes_down: int,
    bytes_up: int,
    measured_compute_s: float,
    clock: Literal["model", "measured"] = "model",
    comm: Literal["per_weight", "link"] = "per_weight",
) -> ClientCharge:
    """Charge one client's round.

    ``clock="model"`` charges K·(t0 + Σ_l a_l·|m_l|)·scale; ``"measured"`` charges the measured local-step
    wall time times the scale. ``comm="per_weight"`` charges the official b·Σ_l |m_l| (up + down, split
    evenly); ``"link"`` charges the real message sizes over the link.

    >>> tm = TimeModel(("w",), (1e-3,), 0.5, 1e-3)
    >>> c = charge_client(DeviceProfile(tm), {"w": 100}, 2, 0, 0, 9.9)
    >>> round(c.compute_s, 6), round(c.download_s + c.upload_s, 6)
    (1.2, 0.1)
    """
    if clock == "model":
        compute_s = device.time_model.compute_time_s(kept, local_steps) * device.compute_scale
    else:
        compute_s = measured_compute_s * device.compute_scale
    if comm == "per_weight":
        half = 0.5 * device.time_model.comm_s_per_weight * sum(kept.values())
        return ClientCharge(download_s=half, compute_s=compute_s, upload_s=half)
    return ClientCharge(
        download_s=device.link.download_s(bytes_down), compute_s=compute_s, upload_s=device.link.upload_s(bytes_up)
    )


def make_devices(
    time_model: TimeModel,
    num_clients: int,
    link: LinkProfile,
    compute_scales: Sequence[float] = (),
    bandwidth_scales: Sequence[float] = (),
    compute_scale_sigma: float = 0.0,
    seed: int = 0,
) -> list[DeviceProfile]:
    """Build one device profile per client, heterogeneous when scales are given or drawn.

    Multipliers drawn with ``compute_scale_sigma`` > 0 are LogNormal(0, σ) from a generator keyed by the seed,
    so a run is reproducible.

    >>> tm = TimeModel(("w",), (1e-3,), 0.5, 1e-3)
    >>> [d.compute_scale for d in make_devices(tm, 2, LinkProfile(), compute_scales=[1.0, 2.0])]
    [1.0, 2.0]
    """
    if compute_scales:
        scales = np.asarray(compute_scales, dtype=np.float64)
    elif compute_scale_sigma > 0:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(DEVICE_STREAM,)))
        scales = rng.lognormal(0.0, compute_scale_sigma, size=num_clients)
    else:
        scales = np.ones(num_clients)
    bw = np.asarray(bandwidth_scales, dtype=np.float64) if bandwidth_scales else np.ones(num_clients)
    return [
        DeviceProfile(
            time_model=time_model,
            compute_scale=float(scales[i]),
            link=LinkProfile(link.uplink_bytes_per_s * bw[i], link.downlink_bytes_per_s * bw[i], link.latency_s),
        )
        for i in range(num_clients)
    ]


