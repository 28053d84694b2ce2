"""Run configuration: frozen dataclasses per concern, loaded from TOML with strict checking.

Every field is typed and documented here once; its default is the paper's setting unless the comment says why
not. Loading rejects unknown sections and keys, converts CLI overrides with the field's type (an int is
accepted for a float), and names the offending key and value in every error.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from prunefl.errors import ConfigError
from prunefl.errors import check_setting as _check
from prunefl.experiments.presets import resolve_config_file
from prunefl.pruning.methods.feddst import FedDSTSettings
from prunefl.pruning.methods.iterative import IterativeSettings
from prunefl.pruning.methods.online import OnlineSettings
from prunefl.pruning.methods.prunefl import PruneFLSettings
from prunefl.pruning.methods.random import RandomSettings
from prunefl.pruning.methods.registry import method_names
from prunefl.pruning.methods.reinit import ReinitSettings
from prunefl.pruning.methods.snip import SnipSettings
from prunefl.pruning.methods.synflow import SynFlowSettings

__all__ = [
    "DataConfig",
    "ModelConfig",
    "FLConfig",
    "TimingConfig",
    "PruningConfig",
    "RunConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "dump_toml",
    "ReferenceConfig",
]



@dataclass(frozen=True)
class DataConfig:
    """Which data set, where it lives, and how it is split across clients.

    Attributes
    ----------
    dataset : str
        One of ``prunefl.data.DATASET_NAMES`` (default: "fashion-mnist").
    data_dir : str
        Directory holding the data files; empty means the loader's default (for Fashion-MNIST the Debian
        package's ``/usr/share/datasets/fashion-mnist``) (default: "").
    partition : {"iid", "dirichlet", "shards", "natural"}
        How training samples are split across clients (default: "dirichlet").
    dirichlet_alpha : float
        Concentration of the per-class Dirichlet split; smaller is more skewed (default: 0.5).
    shards_per_client : int
        Label-sorted shards per client for ``shards`` (default: 2).
    num_clients : int
        Number of clients N (default: 10).
    eval_subset : int
        Evaluate on a fixed random subset of this many test samples; 0 means the whole test set. A full
        10k evaluation costs seconds on a 2-core CPU (default: 0).
    image_size : int
        Side length images are resized to by the image-folder loader (default: 64).
    """

    dataset: str = "fashion-mnist"
    data_dir: str = ""
    partition: Literal["iid", "dirichlet", "shards", "natural"] = "dirichlet"
    dirichlet_alpha: float = 0.5
    shards_per_client: int = 2
    num_clients: int = 10
    eval_subset: int = 0
    image_size: int = 64

    def __post_init__(self) -> None:
        _check(self.dirichlet_alpha > 0, "data.dirichlet_alpha", self.dirichlet_alpha, "must be > 0")
        _check(self.shards_per_client >= 1, "data.shards_per_client", self.shards_per_client, "must be >= 1")
        _check(self.num_clients >= 1, "data.num_clients", self.num_clients, "must be >= 1")
        _check(self.eval_subset >= 0, "data.eval_subset", self.eval_subset, "must be >= 0 (0 = full test set)")
        _check(self.image_size >= 8, "data.image_size", self.image_size, "must be >= 8")


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train.

    Attributes
    ----------
    name : str
        One of ``prunefl.models.MODEL_NAMES`` (default: "conv2").
    conv4_relu : bool
        Add ReLUs to Conv-4; the official code has none (spec D9) (default: False).
    init : {"official", "pytorch"}
        Weight initialisation: the official code's (spec §6), or PyTorch's layer defaults. Conv-2 with a
        10-class head and cross-entropy needs ``pytorch``: the official fan_out init diverges there
        (default: "official").
    """

    name: str = "conv2"
    conv4_relu: bool = False
    init: Literal["official", "pytorch"] = "official"


@dataclass(frozen=True)
class FLConfig:
    """Federated training: rounds, local SGD, learning rate, evaluation (spec §5).

    Attributes
    ----------
    rounds : int
        FL rounds R (default: 150).
    clients_per_round : int
        Clients M trained each round; equal to ``data.num_clients`` means all clients every round,
        fewer means M of N sampled uniformly without replacement from the seed (default: 10).
    local_steps : int
        Local SGD steps K per round (default: 5).
    batch_size : int
        Minibatch size B (default: 20).
    lr : float
        Learning rate η (default: 0.25, the FEMNIST INIT_LR).
    lr_schedule : {"constant", "half_life", "step"}
        ``half_life``: η·0.5^(r/lr_half_life_rounds) (CIFAR-10); ``step``: η·lr_step_gamma^⌊r/lr_step_rounds⌋
        (ImageNet-100) (default: "constant").
    lr_half_life_rounds : float
        Half-life of the ``half_life`` schedule, in rounds (default: 10000.0).
    lr_step_rounds : int
        Period of the ``step`` schedule (default: 1000).
    lr_step_gamma : float
        Factor of the ``step`` schedule (default: 0.933033, i.e. 0.5^0.1).
    momentum : float
        SGD momentum μ in [0, 1) of the clients' local steps; the paper uses plain SGD. Each client keeps its own
        buffers from round to round, restarts them when the server's mask changed since its last round, and holds
        none at pruned coordinates. With μ > 0 every layer trains masked dense: ``kernels = "auto"`` swaps no
        layer to the CSR kernel (:func:`prunefl.fl.client.client_step`) (default: 0.0).
    loss : {"cross_entropy", "bce_onehot"}
        ``bce_onehot`` is BCE-with-logits on one-hot targets, as the official code uses for FEMNIST and
        CIFAR-10 (spec D10) (default: "cross_entropy").
    eval_every : int
        Evaluate the global model every this many rounds, and after the last round (default: 10).
    regrow_init : {"stale", "zero"}
        Value a regrown weight restarts from: the stale server value (official) or 0 (spec D5)
        (default: "stale").
    target_accuracies : list of float
        Test accuracies whose first crossing is reported in the summary (default: [0.8, 0.85]).
    kernels : {"masked", "auto"}
        ``masked``: every layer trains dense with masks. ``auto``: at the start the run measures, for each
        prunable ``nn.Linear``, the density below which the CSR kernel beats masked dense on this machine
        (with and without dense weight gradients), and each round trains the layers below it sparse. Only the
        measured clock (``timing.clock = "measured"``) sees the difference (default: "masked").
    """

    rounds: int = 150
    clients_per_round: int = 10
    local_steps: int = 5
    batch_size: int = 20
    lr: float = 0.25
    lr_schedule: Literal["constant", "half_life", "step"] = "constant"
    lr_half_life_rounds: float = 10000.0
    lr_step_rounds: int = 1000
    lr_step_gamma: float = 0.933033  # 0.5 ** 0.1, the ImageNet-100 StepLR gamma (spec §5)
    momentum: float = 0.0
    loss: Literal["cross_entropy", "bce_onehot"] = "cross_entropy"
    eval_every: int = 10
    regrow_init: Literal["stale", "zero"] = "stale"
    target_accuracies: tuple[float, ...] = (0.8, 0.85)
    kernels: Literal["masked", "auto"] = "masked"

    def __post_init__(self) -> None:
        _check(self.rounds >= 1, "fl.rounds", self.rounds, "must be >= 1")
        _check(self.clients_per_round >= 1, "fl.clients_per_round", self.clients_per_round, "must be >= 1")
        _check(self.local_steps >= 1, "fl.local_steps", self.local_steps, "must be >= 1")
        _check(self.batch_size >= 1, "fl.batch_size", self.batch_size, "must be >= 1")
        _check(self.lr > 0 and math.isfinite(self.lr), "fl.lr", self.lr, "must be a finite number > 0")
        _check(self.lr_half_life_rounds > 0, "fl.lr_half_life_rounds", self.lr_half_life_rounds, "must be > 0")
        _check(self.lr_step_rounds >= 1, "fl.lr_step_rounds", self.lr_step_rounds, "must be >= 1")
        _check(0 < self.lr_step_gamma <= 1, "fl.lr_step_gamma", self.lr_step_gamma, "must be in (0, 1]")
        _check(0 <= self.momentum < 1, "fl.momentum", self.momentum, "must be in [0, 1)")
        _check(self.eval_every >= 1, "fl.eval_every", self.eval_every, "must be >= 1")
        for t in self.target_accuracies:
            _check(0 < t <= 1, "fl.target_accuracies", list(self.target_accuracies), "entries must be in (0, 1]")


@dataclass(frozen=True)
class TimingConfig:
    """How the simulated clock charges each client's round (spec §2.2, §4; issue "simulated clock").

    A client's round lasts download + compute + upload; the round lasts as long as its slowest selected
    client.

    Attributes
    ----------
    preset : str
        Device time-model preset for the compute part (per-layer seconds per kept weight per local step,
        plus a constant); ``rpi_official`` is the official Raspberry-Pi constants (default: "rpi_official").
    profile : str
        Path to a profile written by ``prunefl profile``; when set it replaces ``preset`` (default: "").
    clock : {"model", "measured"}
        Charge compute from the time model, or from the measured wall time of the local steps on this
        machine (default: "model").
    comm : {"per_weight", "link"}
        ``per_weight``: the official b seconds per kept weight per round (up + down), which ignores index bytes
        and non-prunable parameters (spec D7); ``link``: bytes actually sent divided by the link bandwidth
        plus latency, both directions (default: "per_weight").
    uplink_bytes_per_s, downlink_bytes_per_s : float
        Link bandwidth for ``comm = "link"`` (default: 1e6 each, i.e. 1 MB/s).
    latency_s : float
        One-way latency added to each transfer for ``comm = "link"`` (default: 0.0).
    compute_scales : list of float
        Per-client compute-time multipliers (length ``data.num_clients``) for heterogeneous devices; empty means
        all clients are alike unless ``compute_scale_sigma`` > 0 (default: []).
    compute_scale_sigma : float
        When > 0 and ``compute_scales`` is empty, draw each client's multiplier from LogNormal(0, σ) with the
        run seed (default: 0.0).
    bandwidth_scales : list of float
        Per-client bandwidth multipliers for ``comm = "link"``; empty means alike (default: []).
    wire_level : int
        zstd level of the wire codec's sections, 0 for none. Compression saves ~15 % of the bytes of float
        values and costs ~50 ms per 26 MB message on a 2-core CPU (default: 0).
    wire_values_dtype : {"float32", "float16"}
        Wire type of kept weight values (default: "float32").
    wire_importance_dtype : {"float32", "float16"}
        Wire type of the importance upload of reconfiguration rounds, the largest message: dense squared
        gradients of every parameter (default: "float32").
    wire_importance_top_fraction : float
        Fraction in (0, 1] of each layer's importance values a client uploads: only the largest, with their
        positions, the rest reaching the server as 0; at 0.1 the upload is ~12 % of the dense one
        (default: 1.0: all, dense).
    """

    preset: str = "rpi_official"
    profile: str = ""
    clock: Literal["model", "measured"] = "model"
    comm: Literal["per_weight", "link"] = "per_weight"
    uplink_bytes_per_s: float = 1e6
    downlink_bytes_per_s: float = 1e6
    latency_s: float = 0.0
    compute_scales: tuple[float, ...] = ()
    compute_scale_sigma: float = 0.0
    bandwidth_scales: tuple[float, ...] = ()
    wire_level: int = 0
    wire_values_dtype: Literal["float32", "float16"] = "float32"
    wire_importance_dtype: Literal["float32", "float16"] = "float32"
    wire_importance_top_fraction: float = 1.0

    def __post_init__(self) -> None:
        _check(0 <= self.wire_level <= 22, "timing.wire_level", self.wire_level, "must be in [0, 22] (0 = no compression)")
        _check(0 < self.wire_importance_top_fraction <= 1, "timing.wire_importance_top_fraction",
               self.wire_importance_top_fraction, "must be in (0, 1]")
        _check(self.uplink_bytes_per_s > 0, "timing.uplink_bytes_per_s", self.uplink_bytes_per_s, "must be > 0")
        _check(self.downlink_bytes_per_s > 0, "timing.downlink_bytes_per_s", self.downlink_bytes_per_s, "must be > 0")
        _check(self.latency_s >= 0, "timing.latency_s", self.latency_s, "must be >= 0")
        _check(self.compute_scale_sigma >= 0, "timing.compute_scale_sigma", self.compute_scale_sigma, "must be >= 0")
        for name in ("compute_scales", "bandwidth_scales"):
            values = getattr(self, name)
            _check(all(v > 0 for v in values), f"timing.{name}", list(values), "entries must be > 0")


@dataclass(frozen=True)
class PruningConfig(PruneFLSettings):
    """Which method trains (``method``), and PruneFL's settings, documented on :class:`PruneFLSettings`.

    Attributes
    ----------
    method : str
        A registered method name (``prunefl methods`` lists them with one line each; the registry is
        :mod:`prunefl.pruning.methods.registry`). Each method's own settings live in its own table (``[snip]``,
        ``[feddst]``, …); PruneFL's and its ablations' in this one (default: "fedavg").
    """

    method: str = "fedavg"

    def __post_init__(self) -> None:
        super().__post_init__()
        names = method_names()
        _check(self.method in names, "pruning.method", self.method, f"must be one of {', '.join(names)}")


@dataclass(frozen=True)
class ReferenceConfig:
    """Where methods that need a reference run (SNIP, iterative, random, SynFlow, FedDST, reinit) take it from.

    In ``prunefl compare`` the PruneFL run of the same comparison and seed is the reference unless these are set.

    Attributes
    ----------
    run_dir : str
        A finished PruneFL run folder: its final density and mask, and its initial weights (default: "").
    density : float
        A target density in (0, 1] that overrides the reference run's; 0 means take it from the run (default: 0.0).
    """

    run_dir: str = ""
    density: float = 0.0

    def __post_init__(self) -> None:
        _check(0 <= self.density <= 1, "reference.density", self.density, "must be in (0, 1], or 0 to take the run's")


@dataclass(frozen=True)
class RunConfig:
    """A whole run: one section per concern plus the run-wide seed.

    Attributes
    ----------
    name : str
        Label of the run, used in folder names and plots (default: "run").
    seed : int
        Seeds model initialisation, partitioning, batch order and client selection (default: 0).
    threads : int
        ``torch.set_num_threads``; 0 keeps PyTorch's default (default: 0).
    """

    name: str = "run"
    seed: int = 0
    threads: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    fl: FLConfig = field(default_factory=FLConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    snip: SnipSettings = field(default_factory=SnipSettings)
    synflow: SynFlowSettings = field(default_factory=SynFlowSettings)
    iterative: IterativeSettings = field(default_factory=IterativeSettings)
    online: OnlineSettings = field(default_factory=OnlineSettings)
    random: RandomSettings = field(default_factory=RandomSettings)
    feddst: FedDSTSettings = field(default_factory=FedDSTSettings)
    reinit: ReinitSettings = field(default_factory=ReinitSettings)

    def __post_init__(self) -> None:
        _check(self.threads >= 0, "threads", self.threads, "must be >= 0 (0 = PyTorch default)")
        _check(
            self.fl.clients_per_round <= self.data.num_clients,
            "fl.clients_per_round",
            self.fl.clients_per_round,
            f"must be <= data.num_clients ({self.data.num_clients})",
        )
        _check(
            self.pruning.ip_client < self.data.num_clients,
            "pruning.ip_client",
            self.pruning.ip_client,
            f"must be < data.num_clients ({self.data.num_clients})",
        )
        for name in ("compute_scales", "bandwidth_scales"):
            values = getattr(self.timing, name)
            _check(
                len(values) in (0, self.data.num_clients),
                f"timing.{name}",
                list(values),
                f"must be empty or have data.num_clients = {self.data.num_clients} entries",
            )


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "fl": FLConfig,
    "timing": TimingConfig,
    "pruning": PruningConfig,
    "reference": ReferenceConfig,
    "snip": SnipSettings,
    "synflow": SynFlowSettings,
    "iterative": IterativeSettings,
    "online": OnlineSettings,
    "random": RandomSettings,
    "feddst": FedDSTSettings,
    "reinit": ReinitSettings,
}


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a TOML file (or start from defaults when ``path`` is None) and apply ``key=value`` overrides.

    ``path`` is a file, or the name of a preset shipped with the package (``"fmnist-conv2"``; ``prunefl presets``
    lists them); an existing file wins over a preset of the same name.

    Raises
    ------
    ConfigError
        Missing or unparsable file (neither a file nor a preset), unknown section or key, wrong type, value out of
        range.

    Examples
    --------
    >>> load_config(None, ["rounds=3", "data.num_clients=4", "fl.clients_per_round=4"]).fl.rounds
    3
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = resolve_config_file(path)  # an existing file, else a packaged preset name such as "fmnist-conv2"
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from exc
    raw = apply_overrides(raw, overrides)
    return config_from_dict(raw)


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key=value`` strings applied.

    ``key`` is ``section.field`` or a bare field name that exists in exactly one section (``rounds``). Values
    are parsed as TOML literals where possible (``3``, ``0.5``, ``true``, ``[0.8, 0.9]``), else kept as strings;
    type checking happens afterwards, with the field's type.

    >>> apply_overrides({}, ["fl.lr=0.1", "seed=3"])
    {'fl': {'lr': 0.1}, 'seed': 3}
    """
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. fl.rounds=20)")
        key, _, text = item.partition("=")
        key = key.strip()
        section, name = _resolve_key(key)
        value = _parse_literal(text.strip())
        if section is None:
            out[name] = value
        else:
            sub = out.setdefault(section, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"[{section}] must be a table, got {sub!r}")
            sub[name] = value
    return out


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from nested plain values (as parsed from TOML)."""
    top_fields = {f.name: f for f in dataclasses.fields(RunConfig) if f.name not in _SECTIONS}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{key}] must be a table of settings, got {value!r}")
            kwargs[key] = _build_section(key, _SECTIONS[key], value)
        elif key in top_fields:
            kwargs[key] = _coerce(key, top_fields[key].type, value, RunConfig)
        else:
            valid = sorted([*top_fields, *(f"[{s}]" for s in _SECTIONS)])
            raise ConfigError(f"unknown config key {key!r}; valid top-level keys and sections: {', '.join(valid)}")
    try:
        return RunConfig(**kwargs)
    except ConfigError:
        raise


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Nested plain dict of ``config`` (tuples as lists), the inverse of :func:`config_from_dict`.

    >>> config_to_dict(RunConfig())["fl"]["rounds"]
    150
    """

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = {g.name: plain(getattr(value, g.name)) for g in dataclasses.fields(value)}
        else:
            out[f.name] = plain(value)
    return out


def dump_toml(config: RunConfig) -> str:
    """Serialise ``config`` as TOML that :func:`load_config` reads back to an equal config.

    >>> cfg = RunConfig(seed=7)
    >>> config_from_dict(tomllib.loads(dump_toml(cfg))) == cfg
    True
    """
    data = config_to_dict(config)
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines.append("")
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- helpers


def _resolve_key(key: str) -> tuple[str | None, str]:
    top = {f.name for f in dataclasses.fields(RunConfig) if f.name not in _SECTIONS}
    if "." in key:
        section, _, name = key.partition(".")
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in override {key!r}; valid: {', '.join(_SECTIONS)}")
        names = {f.name for f in dataclasses.fields(_SECTIONS[section])}
        if name not in names:
            raise ConfigError(f"unknown config key {key!r}; [{section}] has: {', '.join(sorted(names))}")
        return section, name
    if key in top:
        return None, key
    owners = [s for s, cls in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous; write one of: {', '.join(f'{s}.{key}' for s in owners)}")
    raise ConfigError(f"unknown config key {key!r} (use section.key, e.g. fl.rounds; sections: {', '.join(_SECTIONS)})")


def _parse_literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _build_section(section: str, cls: type, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key '{section}.{key}'; [{section}] has: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(f"{section}.{key}", fields[key].type, value, cls)
    return cls(**kwargs)


def _coerce(key: str, annotation: Any, value: Any, owner: type) -> Any:
    """Convert ``value`` to the field's type, or raise ConfigError naming ``key`` and ``value``."""
    hint = typing.get_type_hints(owner)[key.rpartition(".")[2]] if isinstance(annotation, str) else annotation
    return _coerce_to(key, hint, value)


def _coerce_to(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce_to(key, item, v) for v in value)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce_to(key, args[0], value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint!r} for {key}")  # our own bug, not user input


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")
