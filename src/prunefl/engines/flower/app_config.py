"""Flower's run config (``[tool.flwr.app.config]``, ``flwr run --run-config``) mapped onto prunefl's config.

Keys in the ``prunefl.`` namespace steer the deployment (:class:`FlowerSettings`); every other key is a prunefl
config key (``fl.rounds``, ``pruning.method``, ``data.num_clients``) applied as a ``key=value`` override, after
the TOML file or preset that ``prunefl.config`` names; the free-form ``prunefl.overrides`` are applied last, since
Flower passes every key the app's pyproject lists, with its default, on every run. Server and
nodes read the same run config, so they resolve the same :class:`prunefl.experiments.config.RunConfig`.
"""

from __future__ import annotations

import hashlib
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prunefl.errors import ConfigError, check_setting
from prunefl.experiments.config import RunConfig, dump_toml, load_config

__all__ = ["FlowerSettings", "parse_run_config", "node_partition", "config_digest"]

NAMESPACE = "prunefl."
PARTITION_KEY = "partition-id"  # the node config key naming a SuperNode's data partition


@dataclass(frozen=True)
class FlowerSettings:
    """How the ServerApp drives its nodes (run config keys ``prunefl.<field, with dashes>``).

    Parameters
    ----------
    config : str
        A prunefl TOML file (on the SuperLink's machine) or a packaged preset name; empty: the defaults
        (default: "").
    overrides : str
        Extra ``key=value`` overrides, separated by spaces, shell-quoted (default: "").
    run_dir : str
        The results folder; empty: ``prunefl-results/flower-run-<run id>`` under the ServerApp's working directory
        (default: "").
    reply_timeout_s : float
        Seconds the server waits for a round's replies (and for the partition query); a participant that has
        not replied by then has dropped out of that round (the round goes on while at least
        ``fl.min_valid_replies`` valid replies came), > 0 (default: 600.0).
    connect_timeout_s : float
        Seconds the server waits at start for a node per partition to connect, > 0 (default: 120.0).
    setup_timeout_s : float
        Seconds the server waits for the selected node's ``before_fl`` (PruneFL's initial pruning, which can
        take minutes on a small device) before the run stops, > 0 (default: 3600.0).
    resume : str
        A results folder on the SuperLink host whose checkpoint the run continues from (as ``prunefl run
        --resume``); the results go on in that folder. Empty: a new run (default: "").
    """

    config: str = ""
    overrides: str = ""
    run_dir: str = ""
    reply_timeout_s: float = 600.0
    connect_timeout_s: float = 120.0
    setup_timeout_s: float = 3600.0
    resume: str = ""

    def __post_init__(self) -> None:
        for key, value in (("reply-timeout-s", self.reply_timeout_s), ("connect-timeout-s", self.connect_timeout_s),
                           ("setup-timeout-s", self.setup_timeout_s)):
            check_setting(math.isfinite(value) and value > 0, f"prunefl.{key}", value, "must be a finite number > 0")

    def results_dir(self, run_id: int) -> Path:
        """Where this run's results folder goes."""
        return Path(self.run_dir) if self.run_dir else Path("prunefl-results") / f"flower-run-{run_id}"


def parse_run_config(run_config: Mapping[str, object]) -> tuple[RunConfig, FlowerSettings]:
    """Resolve Flower's run config into prunefl's config and the deployment settings.

    Raises
    ------
    ConfigError
        An unknown ``prunefl.`` key, a value of the wrong type, or an invalid prunefl config (unknown key,
        out-of-range value), named with its key.

    Examples
    --------
    >>> config, settings = parse_run_config({"fl.rounds": 3, "prunefl.overrides": "seed=7", "prunefl.run-dir": "out"})
    >>> config.fl.rounds, config.seed, settings.run_dir
    (3, 7, 'out')
    """
    fields = {f"{NAMESPACE}{name.replace('_', '-')}": name for name in FlowerSettings.__dataclass_fields__}
    own: dict[str, object] = {}
    overrides: list[str] = []
    for key, value in run_config.items():
        if key.startswith(NAMESPACE):
            if key not in fields:
                raise ConfigError(f"run config key {key!r} is unknown; known: {sorted(fields)}")
            own[fields[key]] = value
        else:
            overrides.append(f"{key}={_literal(value)}")
    for name in ("config", "overrides", "run_dir", "resume"):
        check_setting(isinstance(own.get(name, ""), str), f"{NAMESPACE}{name.replace('_', '-')}", own.get(name),
                      "must be a string")
    for name in ("reply_timeout_s", "connect_timeout_s", "setup_timeout_s"):
        value = own.get(name, 1.0)
        check_setting(isinstance(value, int | float) and not isinstance(value, bool),
                      f"{NAMESPACE}{name.replace('_', '-')}", value, "must be a number")
    settings = FlowerSettings(**own)  # type: ignore[arg-type]  # types checked just above
    extra = shlex.split(settings.overrides)
    # the free-form overrides come last: the app's pyproject gives every listed key a default, which must not win
    config = load_config(settings.config or None, [*overrides, *extra])
    return config, settings


def node_partition(node_config: Mapping[str, object], num_clients: int) -> int:
    """The data partition a SuperNode holds, from its ``--node-config "partition-id=<i>"``.

    Raises
    ------
    ConfigError
        The key is missing, or not an int in [0, num_clients).

    Examples
    --------
    >>> node_partition({"partition-id": 1}, num_clients=2)
    1
    """
    value = node_config.get(PARTITION_KEY)
    check_setting(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value < num_clients,
        f"node config {PARTITION_KEY}", value, f"must be an int in [0, {num_clients}) (data.num_clients)",
    )
    assert isinstance(value, int)  # narrowed for mypy; checked above
    return value


def config_digest(config: RunConfig) -> str:
    """SHA-256 (hex) of the resolved config: the server refuses a node that resolved another run.

    Examples
    --------
    >>> len(config_digest(parse_run_config({})[0]))
    64
    """
    return hashlib.sha256(dump_toml(config).encode("utf-8")).hexdigest()


def _literal(value: object) -> str:
    """A run-config value as the TOML literal ``apply_overrides`` parses back (strings stay bare)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
