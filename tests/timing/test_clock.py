"""Clock arithmetic: per-phase charges, slowest client, heterogeneous devices."""

from __future__ import annotations

import pytest

from prunefl.timing.clock import DeviceProfile, LinkProfile, charge_client, make_devices
from prunefl.timing.model import TimeModel

TM = TimeModel(("a.weight", "b.weight"), (1e-3, 2e-3), 0.5, 1e-4)


def test_model_clock_with_per_weight_comm_matches_hand_computation() -> None:
    # Prepare: K=5, kept 100 and 10 -> compute 5*(0.5 + 0.1 + 0.02) = 3.1; comm 1e-4*110 = 0.011
    kept = {"a.weight": 100, "b.weight": 10}
    # Execute
    c = charge_client(DeviceProfile(TM), kept, 5, bytes_down=0, bytes_up=0, measured_compute_s=99.0)
    # Assert
    assert c.compute_s == pytest.approx(3.1)
    assert c.download_s + c.upload_s == pytest.approx(0.011)
    assert c.total_s == pytest.approx(3.111)


def test_link_comm_uses_real_bytes_bandwidth_and_latency() -> None:
    # Prepare: 2 MB down at 1 MB/s + 0.1 s latency; 0.5 MB up at 0.25 MB/s + 0.1 s
    dev = DeviceProfile(TM, link=LinkProfile(uplink_bytes_per_s=250_000, downlink_bytes_per_s=1e6, latency_s=0.1))
    # Execute
    c = charge_client(dev, {"a.weight": 0, "b.weight": 0}, 1, 2_000_000, 500_000, 0.0, comm="link")
    # Assert
    assert c.download_s == pytest.approx(2.1)
    assert c.upload_s == pytest.approx(2.1)
    assert c.compute_s == pytest.approx(0.5)


def test_measured_clock_scales_measured_time() -> None:
    dev = DeviceProfile(TM, compute_scale=3.0)
    c = charge_client(dev, {"a.weight": 1, "b.weight": 1}, 5, 0, 0, measured_compute_s=0.2, clock="measured")
    assert c.compute_s == pytest.approx(0.6)


def test_make_devices_draws_reproducible_heterogeneity() -> None:
    # Execute
    a = make_devices(TM, 5, LinkProfile(), compute_scale_sigma=0.5, seed=1)
    b = make_devices(TM, 5, LinkProfile(), compute_scale_sigma=0.5, seed=1)
    c = make_devices(TM, 5, LinkProfile(), compute_scale_sigma=0.5, seed=2)
    # Assert
    assert [d.compute_scale for d in a] == [d.compute_scale for d in b]
    assert [d.compute_scale for d in a] != [d.compute_scale for d in c]
    assert len({d.compute_scale for d in a}) == 5


def test_make_devices_bandwidth_scales_apply_per_client() -> None:
    devs = make_devices(TM, 2, LinkProfile(1e6, 2e6, 0.0), bandwidth_scales=[1.0, 0.5])
    assert devs[1].link.uplink_bytes_per_s == 5e5 and devs[1].link.downlink_bytes_per_s == 1e6
