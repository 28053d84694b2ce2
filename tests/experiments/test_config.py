"""Config loading: strict keys, typed overrides, range checks, TOML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunefl.errors import ConfigError
from prunefl.experiments.config import RunConfig, config_from_dict, dump_toml, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load_and_round_trip(path: Path) -> None:
    # Execute
    cfg = load_config(path)
    # Assert
    import tomllib

    assert config_from_dict(tomllib.loads(dump_toml(cfg))) == cfg


def test_embedded_default_has_paper_local_training() -> None:
    cfg = load_config(Path(__file__).parents[2] / "configs" / "fmnist-conv2.toml")
    assert (cfg.fl.local_steps, cfg.fl.batch_size, cfg.data.num_clients, cfg.fl.clients_per_round) == (5, 20, 10, 10)
    assert cfg.data.dataset == "fashion-mnist" and cfg.model.name == "conv2"


def test_override_bare_and_dotted_keys_convert_types() -> None:
    # Execute
    cfg = load_config(None, ["rounds=7", "fl.lr=1", "data.dirichlet_alpha=0.1", "target_accuracies=[0.5]"])
    # Assert: an int is accepted for a float field and becomes a float
    assert cfg.fl.rounds == 7
    assert cfg.fl.lr == 1.0 and isinstance(cfg.fl.lr, float)
    assert cfg.data.dirichlet_alpha == 0.1
    assert cfg.fl.target_accuracies == (0.5,)
    assert load_config(None, ["timing.wire_importance_top_fraction=0.1"]).timing.wire_importance_top_fraction == 0.1


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("rounds=abc", "fl.rounds must be an integer, got 'abc'"),  # wrong type
        ("rounds=0", "fl.rounds must be in [1, 10^6], got 0"),  # out of range
        ("fl.roundz=3", "unknown config key 'fl.roundz'"),  # typo in a key
        ("nosuch=3", "unknown config key 'nosuch'"),  # unknown bare key
        ("lr=true", "fl.lr must be a number, got True"),  # bool is not a number
        ("loss=mse", "fl.loss must be one of"),  # not a choice
        ("clients_per_round=11", "fl.clients_per_round must be <= data.num_clients (10), got 11"),  # cross-field
        ("rounds", "must look like key=value"),  # malformed override
        ("compute_scales=[1.0, 2.0]", "timing.compute_scales must be empty or have"),  # wrong length
        ("wire_importance_top_fraction=0", "timing.wire_importance_top_fraction must be in (0, 1], got 0.0"),  # none
        ("wire_importance_top_fraction=1.5", "must be in (0, 1], got 1.5"),  # above all of it
    ],
)
def test_bad_values_name_key_and_value(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert fragment in str(info.value)


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "c.toml"
    path.write_text("[fl]\nrounds = 3\nlearning_rate = 0.1\n")
    # Execute / Assert
    with pytest.raises(ConfigError, match="unknown config key 'fl.learning_rate'"):
        load_config(path)


def test_missing_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[fl\nrounds=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_defaults_are_the_papers_settings() -> None:
    cfg = RunConfig()
    assert (cfg.fl.local_steps, cfg.fl.batch_size, cfg.fl.clients_per_round) == (5, 20, 10)
    assert cfg.fl.regrow_init == "stale"
