"""Flower's run config mapped onto prunefl's config."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

from prunefl.engines.flower.app_config import node_partition, parse_run_config  # noqa: E402
from prunefl.errors import ConfigError  # noqa: E402


def test_free_form_overrides_win_over_the_apps_listed_defaults() -> None:
    # Prepare: Flower passes every key the app's pyproject lists, with its default
    run_config = {"fl.rounds": 150, "pruning.method": "prunefl", "prunefl.overrides": "fl.rounds=3 pruning.method=fedavg"}

    # Execute
    config, _ = parse_run_config(run_config)

    # Assert
    assert (config.fl.rounds, config.pruning.method) == (3, "fedavg")


@pytest.mark.parametrize(
    ("run_config", "match"),
    [
        ({"prunefl.rundir": "x"}, "'prunefl.rundir' is unknown"),  # misspelt deployment key
        ({"prunefl.reply-timeout-s": "10"}, "must be a number"),  # a string timeout
        ({"prunefl.reply-timeout-s": 0.0}, "must be a finite number > 0"),  # no time to reply
            ({"prunefl.setup-timeout-s": float("inf")}, "prunefl.setup-timeout-s"),  # never gives up
        ({"fl.rounds": -1}, "fl.rounds"),  # prunefl's own validation names the key
    ],
)
def test_bad_run_config_raises_config_error(run_config: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_run_config(run_config)


@pytest.mark.parametrize("node_config", [{}, {"partition-id": 2}, {"partition-id": True}])  # missing, too big, bool
def test_node_without_valid_partition_raises_config_error(node_config: dict) -> None:
    with pytest.raises(ConfigError, match="partition-id"):
        node_partition(node_config, num_clients=2)


def test_app_defaults_do_not_override_the_preset() -> None:
    # Prepare: what Flower passes on every run: every key the app's pyproject lists, with its default
    import tomllib
    from pathlib import Path

    app = tomllib.loads((Path(__file__).parents[3] / "flower-app" / "pyproject.toml").read_text())
    defaults = dict(app["tool"]["flwr"]["app"]["config"])

    # Execute
    config, _ = parse_run_config({**defaults, "prunefl.config": "digits-flower"})

    # Assert: only deployment keys are listed, and the preset's values survive them
    assert all(key.startswith("prunefl.") for key in defaults)
    assert config.data.num_clients == 2 and config.fl.rounds == 3 and config.data.dataset == "digits"
