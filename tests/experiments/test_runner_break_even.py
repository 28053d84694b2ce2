"""Where ``fl.kernels = "auto"`` takes its break-even densities from: the timing profile's table, else measured."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunefl.data.dataset import ArrayDataset
from prunefl.experiments import runner
from prunefl.experiments.config import load_config
from prunefl.timing.profile import Measurement, ProfileSettings, fit_time_model, save_profile

LAYERS = ["fc1.weight", "fc2.weight"]


def _dataset() -> ArrayDataset:
    generator = torch.Generator().manual_seed(0)
    return ArrayDataset(
        name="synthetic",
        x_train=torch.rand(40, 1, 8, 8, generator=generator),
        y_train=torch.arange(40) % 10,
        x_test=torch.rand(10, 1, 8, 8, generator=generator),
        y_test=torch.arange(10),
        num_classes=10,
    )


def _profile(path: Path, break_even: dict[str, tuple[float, float]] | None) -> Path:
    rows = [Measurement(dict.fromkeys(LAYERS, 1.0), {"fc1.weight": n, "fc2.weight": 2 * n + 1}, 1.0 + n)
            for n in (0, 1, 3)]
    return save_profile(path, fit_time_model(rows, LAYERS, 0.0), ProfileSettings("mlp"), None, break_even)


def _config(profile: Path | None, kernels: str = "auto") -> object:
    overrides = ["data.num_clients=2", "fl.clients_per_round=2", "model.name=mlp", f"fl.kernels={kernels}"]
    if profile is not None:
        overrides.append(f"timing.profile={profile}")
    return load_config(None, overrides)


def test_auto_kernels_use_the_profiles_break_even_table_without_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    table = {"fc1.weight": (0.2, 0.05), "fc2.weight": (0.0, 0.0)}
    profile = _profile(tmp_path / "auto.json", table)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured although the profile has a table")

    monkeypatch.setattr(runner, "measure_layer_break_even", never)
    # Execute
    setup = runner.build_simulation(_config(profile), _dataset())
    # Assert
    assert setup.break_even == table


def test_auto_kernels_measure_when_the_profile_has_no_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    profile = _profile(tmp_path / "masked.json", None)
    measured = {"fc1.weight": (0.1, 0.0)}
    monkeypatch.setattr(runner, "measure_layer_break_even", lambda model, batch_size: measured)
    # Execute
    setup = runner.build_simulation(_config(profile), _dataset())
    # Assert
    assert setup.break_even == measured


def test_masked_kernels_ignore_the_profiles_table(tmp_path: Path) -> None:
    # Prepare
    profile = _profile(tmp_path / "auto.json", {"fc1.weight": (0.2, 0.05), "fc2.weight": (0.0, 0.0)})
    # Execute
    setup = runner.build_simulation(_config(profile, kernels="masked"), _dataset())
    # Assert
    assert setup.break_even == {}
