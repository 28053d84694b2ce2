"""Run configuration: frozen dataclasses per concern, loaded from TOML with strict checking.

Every field is typed and documented here once; its default is the paper's setting unless the comment says why
not. Loading rejects unknown sections and keys, converts CLI overrides with the field's type (an int is
accepted for a float), and names the offending key and value in every error.

Rules for every value, whatever its field (each field's own range is documented on it):

- numbers are finite (TOML ``nan``/``inf`` and ``--set x=inf`` are refused) and integers fit in an int64;
- strings are valid Unicode (no lone surrogates), hold no NUL or other control character except tab, and are at
  most :data:`MAX_STRING_CHARS` long;
- a config file is at most :data:`MAX_CONFIG_BYTES`, and tables, arrays and dotted keys nest at most
  :data:`MAX_TOML_NESTING` deep (checked on the raw text before the TOML parser runs: it recurses, and dotted keys
  cost it memory quadratic in their length); ``--set`` values likewise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import reprlib
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

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
    "config_from_toml",
    "config_to_dict",
    "apply_overrides",
    "dump_toml",
    "ReferenceConfig",
    "MAX_CONFIG_BYTES",
    "MAX_TOML_NESTING",
    "MAX_STRING_CHARS",
    "MAX_SEED",
    "MAX_LR",
]

MAX_CONFIG_BYTES = 1 << 20
"""Largest config file (and ``--set`` value) read, in bytes (1 MiB); the shipped presets are ~1-2 KB."""
MAX_TOML_NESTING = 32
"""Deepest nesting of TOML tables/arrays, and most parts of a dotted key; the schema itself needs 2."""
MAX_STRING_CHARS = 4096
"""Longest string setting, in characters (a path is at most 4096 bytes on Linux)."""
MAX_SEED = 2**32 - 1
"""Largest run seed: every seed fits in a uint32, as NumPy's legacy seeding and torch.manual_seed accept."""
MAX_LR = 1e3
"""Largest learning rate accepted (``fl.lr``, ``pruning.ip_lr``): far above any that trains, far below float32's
overflow once multiplied by a gradient."""
_INT64_MAX = 2**63 - 1



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
        Concentration of the per-class Dirichlet split, in (0, 1e6]; smaller is more skewed (default: 0.5).
    shards_per_client : int
        Label-sorted shards per client for ``shards``, in [1, 10000] (default: 2).
    num_clients : int
        Number of clients N, in [1, 100000] (default: 10).
    eval_subset : int
        Evaluate on a fixed random subset of this many test samples, at most 10^9; 0 means the whole test set.
        A full 10k evaluation costs seconds on a 2-core CPU (default: 0).
    image_size : int
        Side length images are resized to by the image-folder loader, in [8, 1024] (default: 64).
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
        _check(0 < self.dirichlet_alpha <= 1e6, "data.dirichlet_alpha", self.dirichlet_alpha, "must be in (0, 1e6]")
        _check(1 <= self.shards_per_client <= 10_000, "data.shards_per_client", self.shards_per_client,
               "must be in [1, 10000]")
        _check(1 <= self.num_clients <= 100_000, "data.num_clients", self.num_clients, "must be in [1, 100000]")
        _check(0 <= self.eval_subset <= 10**9, "data.eval_subset", self.eval_subset,
               "must be in [0, 10^9] (0 = full test set)")
        _check(8 <= self.image_size <= 1024, "data.image_size", self.image_size, "must be in [8, 1024]")


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
        FL rounds R, in [1, 10^6] (default: 150).
    clients_per_round : int
        Clients M trained each round; equal to ``data.num_clients`` means all clients every round,
        fewer means M of N sampled uniformly without replacement from the seed (default: 10).
    local_steps : int
        Local SGD steps K per round, in [1, 100000] (default: 5).
    batch_size : int
        Minibatch size B, in [1, 65536] (default: 20).
    lr : float
        Learning rate η, in (0, :data:`MAX_LR` = 1e3] (default: 0.25, the FEMNIST INIT_LR).
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
        Test accuracies whose first crossing is reported in the summary, at most 100, each in (0, 1]
        (default: [0.8, 0.85]).
    kernels : {"masked", "auto"}
        ``masked``: every layer trains dense with masks. ``auto``: at the start the run measures, for each
        prunable ``nn.Linear``, the density below which the CSR kernel beats masked dense on this machine
        (with and without dense weight gradients), and each round trains the layers below it sparse. Only the
        measured clock (``timing.clock = "measured"``) sees the difference (default: "masked").
    min_valid_replies : int
        Fewest valid client replies a round needs; with fewer (after faulty or hostile replies are rejected,
        :mod:`prunefl.fl.validate`, or nodes did not reply), the round is not applied and the run stops with
        ``TooFewRepliesError``, the global model untouched (default: 1).
    max_update_norm_ratio : float
        Reject a reply in which some entry moved by more than this times (its L2 norm as sent + 1) in L2
        norm: finite but absurd weights (:func:`prunefl.fl.validate.check_update_norm`); 0 disables the bound.
        Measured on honest clients: at most 1.4 on the embedded preset ``fmnist-conv2`` (round 0), but 2.2e4 in
        the first round of a run that diverges (the official initialisation at lr 0.25). So the default stops
        only absurd values; against subtler ones choose a robust ``aggregation`` (default: 1e6).
    aggregation : {"mean", "median", "trimmed-mean"}
        How kept values are aggregated: the paper's sample-weighted mean, or, for users who cannot trust their
        devices, the coordinate-wise median or trimmed mean over the clients (:func:`prunefl.fl.aggregate.
        robust_aggregate`); not with methods whose clients change their own masks (FedDST) (default: "mean").
    trim_fraction : float
        Fraction in [0, 0.5) of the clients dropped at each end of every coordinate by ``"trimmed-mean"``
        (default: 0.1).
    round_retries : int
        Times a round with fewer than ``min_valid_replies`` valid replies is tried again (instruction sent anew,
        participants train again on their next batches) before the run stops, in [0, 100]; for deployments whose
        nodes drop out now and then (default: 0: stop at once).
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
    min_valid_replies: int = 1
    max_update_norm_ratio: float = 1e6  # a diverging honest run reaches 2.2e4 (docstring)
    aggregation: Literal["mean", "median", "trimmed-mean"] = "mean"
    trim_fraction: float = 0.1
    round_retries: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.rounds <= 10**6, "fl.rounds", self.rounds, "must be in [1, 10^6]")
        _check(self.clients_per_round >= 1, "fl.clients_per_round", self.clients_per_round, "must be >= 1")
        _check(1 <= self.local_steps <= 100_000, "fl.local_steps", self.local_steps, "must be in [1, 100000]")
        _check(1 <= self.batch_size <= 65_536, "fl.batch_size", self.batch_size, "must be in [1, 65536]")
        _check(0 < self.lr <= MAX_LR, "fl.lr", self.lr, f"must be a finite number in (0, {MAX_LR:g}]")
        _check(self.lr_half_life_rounds > 0, "fl.lr_half_life_rounds", self.lr_half_life_rounds, "must be > 0")
        _check(self.lr_step_rounds >= 1, "fl.lr_step_rounds", self.lr_step_rounds, "must be >= 1")
        _check(0 < self.lr_step_gamma <= 1, "fl.lr_step_gamma", self.lr_step_gamma, "must be in (0, 1]")
        _check(0 <= self.momentum < 1, "fl.momentum", self.momentum, "must be in [0, 1)")
        _check(self.eval_every >= 1, "fl.eval_every", self.eval_every, "must be >= 1")
        _check(len(self.target_accuracies) <= 100, "fl.target_accuracies", f"{len(self.target_accuracies)} entries",
               "must hold at most 100 entries")
        _check(all(0 < t <= 1 for t in self.target_accuracies), "fl.target_accuracies", list(self.target_accuracies),
               "entries must be in (0, 1]")
        _check(self.min_valid_replies >= 1, "fl.min_valid_replies", self.min_valid_replies, "must be >= 1")
        _check(
            math.isfinite(self.max_update_norm_ratio) and self.max_update_norm_ratio >= 0,
            "fl.max_update_norm_ratio", self.max_update_norm_ratio, "must be a finite number >= 0 (0: no bound)",
        )
        _check(0 <= self.trim_fraction < 0.5, "fl.trim_fraction", self.trim_fraction, "must be in [0, 0.5)")
        _check(0 <= self.round_retries <= 100, "fl.round_retries", self.round_retries, "must be in [0, 100]")


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
        Link bandwidth for ``comm = "link"``, in [1, 1e15] (default: 1e6 each, i.e. 1 MB/s).
    latency_s : float
        One-way latency added to each transfer for ``comm = "link"``, in [0, 86400] (a day) (default: 0.0).
    compute_scales : list of float
        Per-client compute-time multipliers, each in [1e-6, 1e6] (length ``data.num_clients``) for heterogeneous
        devices; empty means all clients are alike unless ``compute_scale_sigma`` > 0 (default: []).
    compute_scale_sigma : float
        When > 0 and ``compute_scales`` is empty, draw each client's multiplier from LogNormal(0, σ) with the
        run seed; σ in [0, 10], so no multiplier overflows (default: 0.0).
    bandwidth_scales : list of float
        Per-client bandwidth multipliers for ``comm = "link"``, each in [1e-6, 1e6]; empty means alike
        (default: []).
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
        for name in ("uplink_bytes_per_s", "downlink_bytes_per_s"):
            _check(1 <= getattr(self, name) <= 1e15, f"timing.{name}", getattr(self, name), "must be in [1, 1e15]")
        _check(0 <= self.latency_s <= 86_400, "timing.latency_s", self.latency_s, "must be in [0, 86400] (a day)")
        _check(0 <= self.compute_scale_sigma <= 10, "timing.compute_scale_sigma", self.compute_scale_sigma,
               "must be in [0, 10]")
        for name in ("compute_scales", "bandwidth_scales"):
            values = getattr(self, name)
            _check(all(1e-6 <= v <= 1e6 for v in values), f"timing.{name}", list(values), "entries must be in [1e-6, 1e6]")


@dataclass(frozen=True)
class PruningConfig(PruneFLSettings):
    """Which method trains (``method``), and PruneFL's settings, documented on :class:`PruneFLSettings`.

    Attributes
    ----------
    method : str
        A registered method name (``prunefl methods`` lists them with one line each; the registry is
        :mod:`prunefl.pruning.methods.registry`). Each method's own settings live in its own table (``[snip]``,
        ``[feddst]``, …); PruneFL's and its ablations' in this one (default: "fedavg").

    Beyond :class:`PruneFLSettings`' own checks, ``ip_lr`` is at most :data:`MAX_LR`, as ``fl.lr`` is.
    """

    method: str = "fedavg"

    def __post_init__(self) -> None:
        super().__post_init__()
        names = method_names()
        _check(self.method in names, "pruning.method", self.method, f"must be one of {', '.join(names)}")
        _check(self.ip_lr <= MAX_LR, "pruning.ip_lr", self.ip_lr, f"must be <= {MAX_LR:g} (0 = fl.lr)")


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
        Label of the run, used in folder names and plots: one file-name component, 1 to 128 bytes in UTF-8,
        not ``.`` or ``..``, without ``/`` or ``\\`` (so ``runs/<name>-<time>`` stays inside ``runs/``)
        (default: "run").
    seed : int
        Seeds model initialisation, partitioning, batch order and client selection, in [0, :data:`MAX_SEED` =
        2^32 − 1] (default: 0).
    threads : int
        ``torch.set_num_threads``, in [0, 1024]; 0 keeps PyTorch's default (default: 0).
    checkpoint_every : int
        Write the run state (``checkpoint.safetensors`` + ``checkpoint.json``, atomically) every this many FL
        rounds, so ``prunefl run --resume`` can continue a killed run; a checkpoint is also written before round
        0 and after the last round; 0 writes only those two (default: 10).
    """

    name: str = "run"
    seed: int = 0
    threads: int = 0
    checkpoint_every: int = 10
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
        for f in dataclasses.fields(self):  # the rules every value obeys (module docstring), whatever its section
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                for g in dataclasses.fields(value):
                    _check_value(f"{f.name}.{g.name}", getattr(value, g.name))
            else:
                _check_value(f.name, value)
        _check_run_name(self.name)
        _check(0 <= self.seed <= MAX_SEED, "seed", self.seed, f"must be in [0, {MAX_SEED}] (2^32 - 1)")
        _check(0 <= self.threads <= 1024, "threads", self.threads, "must be in [0, 1024] (0 = PyTorch default)")
        _check(self.checkpoint_every >= 0, "checkpoint_every", self.checkpoint_every,
               "must be >= 0 (0 = only before round 0 and after the last round)")
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
        Missing, unreadable or unparsable file (neither a file nor a preset), a file over
        :data:`MAX_CONFIG_BYTES` or nested deeper than :data:`MAX_TOML_NESTING`, unknown section or key, wrong
        type, value out of range.

    Examples
    --------
    >>> load_config(None, ["rounds=3", "data.num_clients=4", "fl.clients_per_round=4"]).fl.rounds
    3
    """
    raw: dict[str, Any] = {}
    if path is not None:
        if "\0" in str(path):
            raise ConfigError(f"--config must not contain a NUL byte, got {_show(str(path))}")
        p = resolve_config_file(path)  # an existing file, else a packaged preset name such as "fmnist-conv2"
        where = f"config file {_show(str(p))}"
        try:
            with p.open("rb") as f:
                data = f.read(MAX_CONFIG_BYTES + 1)  # never more than the cap, whatever the file claims to be
        except OSError as exc:
            raise ConfigError(f"{where} cannot be read: {exc}") from exc
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{where} is larger than {MAX_CONFIG_BYTES} bytes; a config is a few KB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where} is not valid TOML: not UTF-8 text ({exc})") from exc
        raw = _parse_toml(text, where)
    raw = apply_overrides(raw, overrides)
    return config_from_dict(raw)


def config_from_toml(text: str, where: str = "config text") -> RunConfig:
    """Build a validated :class:`RunConfig` from TOML text that came from anywhere (a run folder, a message).

    The text gets a config file's checks: at most :data:`MAX_CONFIG_BYTES`, nested at most
    :data:`MAX_TOML_NESTING` deep (before the parser runs), then every value's.

    Raises
    ------
    ConfigError
        Anything wrong with the text; the message names ``where``, or the key and value.

    Examples
    --------
    >>> config_from_toml("seed = 3").seed
    3
    """
    return config_from_dict(_parse_toml(text, where))


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``key=value`` strings applied.

    ``key`` is ``section.field`` or a bare field name that exists in exactly one section (``rounds``). Values
    are parsed as TOML literals where possible (``3``, ``0.5``, ``true``, ``[0.8, 0.9]``), else kept as strings;
    type checking happens afterwards, with the field's type. A value is bounded like a config file: at most
    :data:`MAX_CONFIG_BYTES`, nested at most :data:`MAX_TOML_NESTING` deep.

    >>> apply_overrides({}, ["fl.lr=0.1", "seed=3"])
    {'fl': {'lr': 0.1}, 'seed': 3}
    """
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {_show(item)} must look like key=value (e.g. fl.rounds=20)")
        key, _, text = item.partition("=")
        key = key.strip()
        section, name = _resolve_key(key)
        value = _parse_literal(key, text.strip())
        if section is None:
            out[name] = value
        else:
            sub = out.setdefault(section, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"[{section}] must be a table, got {_show(sub)}")
            sub[name] = value
    return out


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from nested plain values (as parsed from TOML)."""
    top_fields = {f.name: f for f in dataclasses.fields(RunConfig) if f.name not in _SECTIONS}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{key}] must be a table of settings, got {_show(value)}")
            kwargs[key] = _build_section(key, _SECTIONS[key], value)
        elif key in top_fields:
            kwargs[key] = _coerce(key, top_fields[key].type, value, RunConfig)
        else:
            valid = sorted([*top_fields, *(f"[{s}]" for s in _SECTIONS)])
            raise ConfigError(f"unknown config key {_show(key)}; valid top-level keys and sections: {', '.join(valid)}")
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
            raise ConfigError(
                f"unknown config section {_show(section)} in override {_show(key)}; valid: {', '.join(_SECTIONS)}"
            )
        names = {f.name for f in dataclasses.fields(_SECTIONS[section])}
        if name not in names:
            raise ConfigError(f"unknown config key {_show(key)}; [{section}] has: {', '.join(sorted(names))}")
        return section, name
    if key in top:
        return None, key
    owners = [s for s, cls in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        raise ConfigError(f"config key {key!r} is ambiguous; write one of: {', '.join(f'{s}.{key}' for s in owners)}")
    raise ConfigError(
        f"unknown config key {_show(key)} (use section.key, e.g. fl.rounds; sections: {', '.join(_SECTIONS)})"
    )


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    """``tomllib.loads(text)`` after the size and nesting checks; every failure a ConfigError naming ``where``."""
    _check_toml_text(text, where)
    try:
        return tomllib.loads(text)
    # Beyond TOMLDecodeError: an integer of > 4300 digits is a ValueError, and a RecursionError is the backstop
    # should the nesting check ever miss a form of nesting.
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from exc


def _parse_literal(key: str, text: str) -> Any:
    """The TOML value ``text`` spells, or ``text`` itself when it spells none (or more than one value)."""
    _check_toml_text(text, f"--set {key}")
    try:
        doc = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):  # ValueError: an integer of > 4300 digits
        return text
    return doc["v"] if doc.keys() == {"v"} else text  # "1\nw = 2" is not one value: the field's type decides


def _build_section(section: str, cls: type, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {_show(f'{section}.{key}')}; [{section}] has: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(f"{section}.{key}", fields[key].type, value, cls)
    return cls(**kwargs)


def _coerce(key: str, annotation: Any, value: Any, owner: type) -> Any:
    """Convert ``value`` to the field's type, or raise ConfigError naming ``key`` and ``value``."""
    hint = _type_hints(owner)[key.rpartition(".")[2]] if isinstance(annotation, str) else annotation
    return _coerce_to(key, hint, value)


@functools.cache
def _type_hints(owner: type) -> dict[str, Any]:
    """``typing.get_type_hints(owner)``, evaluated once per class (it costs ~0.1 ms a call)."""
    return typing.get_type_hints(owner)


def _coerce_to(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, choices))}, got {_show(value)}")
        return value
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {_show(value)}")
        return tuple(_coerce_to(key, item, v) for v in value)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce_to(key, args[0], value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {_show(value)}")
        _check_value(key, value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {_show(value)}")
        if isinstance(value, int) and abs(value) > _INT64_MAX:  # float(10**400) would raise OverflowError
            raise ConfigError(f"{key} must be a finite number of at most 64-bit size, got {_show(value)}")
        _check_value(key, float(value))
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {_show(value)}")
        _check_value(key, value)
        return value
    raise TypeError(f"unsupported config field type {hint!r} for {key}")  # our own bug, not user input


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + _CONTROL_CHARS.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


# TOML's strings and comments, lexed as tomllib lexes them (escapes in basic strings; a closing """ or ''' may
# take up to two more quotes), so that what is left after taking them out holds every bracket and dotted key that
# nests. The alternatives are tried left to right at each position: a '#' inside a string is not a comment. An
# unclosed string runs to the end of its line (or of the text), where tomllib stops with an error anyway; each
# alternative ends at its first chance, so the scan is linear in the text, whatever the text. Loops are unrolled
# (a run of plain characters, then one escape or lone quote at a time) and possessive (*+): the regex engine would
# otherwise keep a backtracking entry per iteration, ~100 bytes per character of a long string of escapes.
_TOML_STRINGS_AND_COMMENTS = re.compile(
    r'"""[^"\\]*+(?:(?:\\[\s\S]?|"(?!""))[^"\\]*+)*+(?:"""(?:"{1,2})?|\Z)'
    r"|'''[\s\S]*?(?:'''(?:'{1,2})?|\Z)"
    r'|"[^"\\\n]*+(?:\\[^\n]?[^"\\\n]*+)*+(?:"|(?=\n)|\Z)'
    r"|'[^'\n]*(?:'|(?=\n)|\Z)"
    r"|#[^\n]*"
)
_KEY_RUN = re.compile(r"[\w\- \t.]+")  # a dotted key's parts and dots (strings already replaced by "s")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every C0 control but tab, and DEL
_NAME_SEPARATORS = re.compile(r"[/\\]")
_SHORT = reprlib.Repr()  # error messages quote at most this much of a value
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong, _SHORT.maxlevel = 80, 80, 40, 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 8


def _check_toml_text(text: str, where: str) -> None:
    """Refuse TOML text over :data:`MAX_CONFIG_BYTES` or nested deeper than :data:`MAX_TOML_NESTING`.

    Runs before the parser: tomllib recurses once per nested array or inline table (so 1000 ``[`` exhaust the
    stack) and keeps every prefix of a dotted key (so a key of n parts costs O(n²) memory).
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_CONFIG_BYTES} bytes; a config is a few KB")
    code = _TOML_STRINGS_AND_COMMENTS.sub("s", text)
    step = _BRACKET_STEP[np.frombuffer(code.encode("utf-8", "surrogatepass"), dtype=np.uint8)]  # (n_bytes,)
    step = step[step != 0]  # (n_brackets,) +1 for [ {, -1 for ] }
    depth = np.cumsum(step, dtype=np.int32)  # nesting after each bracket
    if depth.size:  # a surplus closer (a parse error) cannot lower the nesting counted after it
        floor = np.minimum.accumulate(depth)
        np.subtract(depth, np.minimum(floor, 0, out=floor), out=depth)
    parts = max((run.group().count(".") + 1 for run in _KEY_RUN.finditer(code)), default=0)
    deepest = max(int(depth.max(initial=0)), parts)
    if deepest > MAX_TOML_NESTING:
        raise ConfigError(
            f"{where} nests {deepest} levels deep (tables, arrays or dotted-key parts); at most "
            f"{MAX_TOML_NESTING} are allowed, and a config needs 2"
        )


_BRACKET_STEP = np.zeros(256, dtype=np.int8)  # byte -> its change of nesting
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def _check_value(key: str, value: Any) -> None:
    """The rules every config value obeys, whatever its field (module docstring); ConfigError naming ``key``."""
    if isinstance(value, tuple):
        for item in value:
            _check_value(key, item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool) and not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ConfigError(f"{key} must fit in a 64-bit integer, got {_show(value)}")
    elif isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise ConfigError(f"{key} must be at most {MAX_STRING_CHARS} characters, got {len(value)}: {_show(value)}")
        bad = _CONTROL_CHARS.search(value)
        if bad is not None:
            raise ConfigError(f"{key} must not contain control characters (NUL, newline, ...), found "
                              f"{bad.group()!r} in {_show(value)}")  # fmt: skip
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{key} must be valid Unicode text, got a lone surrogate in {_show(value)}") from None


def _check_run_name(name: str) -> None:
    """A run name is one file-name component: it cannot lead ``runs/<name>-<time>`` out of ``runs/``."""
    if name in ("", ".", "..") or _NAME_SEPARATORS.search(name) or len(name.encode("utf-8")) > 128:
        raise ConfigError(f"name must be one file-name component of 1 to 128 bytes (no '/', '\\', not '.' or "
                          f"'..'), got {_show(name)}")  # fmt: skip


def _show(value: Any) -> str:
    """A repr short enough for an error message, whatever ``value`` holds (a 1 MB string, a huge int, nesting)."""
    if isinstance(value, int) and value.bit_length() > 4000:  # repr() refuses > 4300 digits
        return f"<an integer of {value.bit_length()} bits>"
    return _SHORT.repr(value)
