"""Every integer setting of a method table has a documented upper bound (issue 10): a huge value is a ConfigError
naming the key, and `prunefl run` exits 2 before writing anything, instead of a run that loops or allocates
absurdly. The bounds do not reject the shipped presets (tests/experiments/test_config_validation.py loads them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunefl.cli import main
from prunefl.errors import ConfigError
from prunefl.experiments.config import load_config

HUGE = 10**12  # fits in 64 bits, so only the field's own bound refuses it

# (key, largest value allowed, the rule's text): one row per integer field of a method table
BOUNDS = [
    ("synflow.iterations", 10_000, "must be in [1, 10000]"),  # one forward + backward pass each
    ("online.max_upload", 10**7, "must be in [1, 10^7]"),  # samples per client and round
    ("online.start_round", 10**6, "must be in [0, 10^6]"),  # a round: fl.rounds' bound
    ("online.hold_rounds", 10**6, "must be in [0, 10^6]"),
    ("online.range_every", 10**6, "must be in [1, 10^6]"),
    ("iterative.prunes", 100_000, "must be in [1, 100000]"),  # at most one prune per round
    ("feddst.interval", 10**6, "must be in [1, 10^6]"),
    ("feddst.first_round", 10**6, "must be in [0, 10^6]"),
    ("feddst.end_round", 10**6, "must be in [0, 10^6]"),
    ("reinit.seed_offset", 2**32 - 1, "must be in [1, 2^32 - 1]"),  # a seed's bound
    ("pruning.reconfig_interval", 10**6, "must be in [1, 10^6]"),
    ("pruning.first_reconfig_round", 10**6, "must be in [0, 10^6]"),
    ("pruning.importance_window", 10**6, "must be in [0, 10^6]"),
    ("pruning.ip_batches", 1000, "must be in [1, 1000]"),  # every IP batch is prepared and held in memory
    ("pruning.ip_check_every", 10**6, "must be in [1, 10^6]"),
    ("pruning.ip_interval", 10**6, "must be in [1, 10^6]"),
    ("pruning.ip_max_rounds", 10**6, "must be in [1, 10^6]"),
    ("pruning.ip_stable_reconfigs", 10**6, "must be in [1, 10^6]"),
    ("pruning.ip_client", 99_999, "must be in [0, 100000)"),  # data.num_clients' bound
]


@pytest.mark.parametrize(("key", "largest", "rule"), BOUNDS)
def test_huge_value_is_config_error_naming_key(key: str, largest: int, rule: str) -> None:
    # Execute / Assert: "<key> <rule> [(note)], got <value>"
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"{key}={HUGE}"])
    message = str(caught.value)
    assert message.startswith(f"{key} {rule}") and message.endswith(f", got {HUGE}")


@pytest.mark.parametrize(("key", "largest", "rule"), BOUNDS)
def test_bound_is_inclusive_and_one_more_is_refused(key: str, largest: int, rule: str) -> None:
    # Prepare: pruning.ip_client must also name an existing client; give the run enough of them
    clients = ["data.num_clients=100000"] if key == "pruning.ip_client" else []

    # Execute
    section, name = key.split(".")
    config = load_config(None, [f"{key}={largest}", *clients])

    # Assert
    assert getattr(getattr(config, section), name) == largest
    with pytest.raises(ConfigError, match=key):
        load_config(None, [f"{key}={largest + 1}", *clients])


@pytest.mark.parametrize("key", ["synflow.iterations", "iterative.prunes", "online.max_upload", "pruning.ip_batches"])
def test_cli_exits_2_naming_key_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    # Prepare: run from an empty folder, so a default runs/ folder would show up here too
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "digits"\n[model]\nname = "mlp"\n')

    # Execute
    code = main(["run", "--config", str(config), "--set", f"{key}={HUGE}", "--out", str(tmp_path / "out"),
                 "--no-progress"])  # fmt: skip

    # Assert
    assert code == 2
    assert f"{key} must be in" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]
