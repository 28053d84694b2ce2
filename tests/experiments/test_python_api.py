"""The Python API: your own model (``model_fn``) and arrays; docs/USER_GUIDE.md's "Python API" blocks run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from prunefl.errors import ConfigError
from prunefl.experiments.config import load_config
from prunefl.experiments.runner import build_model_state, build_simulation
from prunefl.sparse.masks import prunable_parameters

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "USER_GUIDE.md"


class _TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 8)
        self.fc2 = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    def prunable_parameter_names(self) -> list[str]:
        return ["fc2.weight"]


def _python_blocks(text: str) -> list[str]:
    """The ```python blocks of the guide's "## Python API" section, in order."""
    start = text.index("\n## Python API")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)


def test_model_fn_replaces_the_configured_model_and_is_seeded() -> None:
    # Prepare
    from prunefl.data import load_dataset

    config = load_config(None, ["timing.preset=uniform"])
    dataset = load_dataset("digits", None, seed=0)

    # Execute
    model, state = build_model_state(config, dataset, 7, _TwoLayer)
    _, again = build_model_state(config, dataset, 7, _TwoLayer)

    # Assert: the factory's model, masks only on the declared layer, the same weights from the same seed
    assert isinstance(model, _TwoLayer)
    assert [name for name, _ in prunable_parameters(model)] == ["fc2.weight"]
    assert set(state) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}  # no mask buffers
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_model_fn_builds_the_simulation_with_the_uniform_time_model() -> None:
    # Prepare
    from prunefl.data import load_dataset

    config = load_config(None, ["timing.preset=uniform", "data.num_clients=2", "clients_per_round=2"])

    # Execute
    setup = build_simulation(config, load_dataset("digits", None, seed=0), model_fn=_TwoLayer)

    # Assert
    assert isinstance(setup.model, _TwoLayer)
    assert list(setup.server.masks) == ["fc2.weight"]
    assert setup.devices[0].time_model.layer_names == ("fc2.weight",)


def test_model_fn_with_a_paper_model_preset_is_a_config_error() -> None:
    # Prepare: rpi_official's constants belong to conv2/conv4/vgg11/resnet18, not to this model
    from prunefl.data import load_dataset

    config = load_config(None, ["data.num_clients=2", "clients_per_round=2"])

    # Execute / Assert
    with pytest.raises(ConfigError, match="timing.preset 'rpi_official'"):
        build_simulation(config, load_dataset("digits", None, seed=0), model_fn=_TwoLayer)


def test_guide_has_the_worked_example_blocks() -> None:
    # Execute
    blocks = _python_blocks(GUIDE.read_text(encoding="utf-8"))

    # Assert: one run, then a comparison
    assert len(blocks) == 2
    assert "run_experiment(" in blocks[0] and "model_fn=" in blocks[0] and "ArrayDataset(" in blocks[0]
    assert "prunable_parameter_names" in blocks[0]


@pytest.mark.slow
def test_guide_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare: the guide writes runs/ relative to the working directory
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "user_guide"}

    # Execute: every block in order, in one namespace, as a reader would paste them
    for i, block in enumerate(_python_blocks(GUIDE.read_text(encoding="utf-8"))):
        exec(compile(block, f"{GUIDE}:python-block-{i}", "exec"), namespace)

    # Assert: the single run pruned the declared layer only and learned; the comparison ran every method
    summary = namespace["result"].summary
    assert 0 < summary["final-density"] < 1
    assert summary["final-accuracy"] > 0.6  # two balanced classes: chance is 0.5
    assert (tmp_path / "runs" / "tiny" / "summary.json").is_file()
    runs = namespace["runs"]
    assert list(runs) == ["prunefl", "fedavg", "prunefl-no-ip"]
    assert runs["fedavg"].summary["final-density"] == 1.0
    assert all((tmp_path / "runs" / "compare" / m / "summary.json").is_file() for m in runs)
    printed = capsys.readouterr().out
    assert all(m in printed for m in runs)
