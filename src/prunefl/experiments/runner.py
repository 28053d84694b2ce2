"""Build a run from its config and execute it: config → data/model → engine → results folder → report."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunefl import metrics as K
from prunefl import seeds
from prunefl.data import load_dataset, partition
from prunefl.data.dataset import ArrayDataset
from prunefl.engines.simulation import SimulationEngine, SimulationSetup
from prunefl.errors import ConfigError
from prunefl.experiments.config import RunConfig
from prunefl.experiments.reference import resolve_reference
from prunefl.experiments.results import ResultsWriter, summarize
from prunefl.experiments.state import RunState, check_resume_config, restore_run_state, write_run_state
from prunefl.fl.links import WireSettings
from prunefl.fl.losses import make_loss
from prunefl.fl.server import Server, ServerSettings
from prunefl.models import build_model
from prunefl.models.init import apply_init_
from prunefl.pruning.methods import Method, MethodContext, ReferenceRun, SetupView, build_method, get_spec
from prunefl.seeds import EVAL_SUBSET_STREAM
from prunefl.sparse.backend import SWITCH_MIN_SPEEDUP, measure_break_even
from prunefl.sparse.masks import attach_masks, prunable_parameters
from prunefl.timing.clock import DeviceProfile, LinkProfile, make_devices
from prunefl.timing.model import TimeModel
from prunefl.timing.presets import UNIFORM_PRESET

__all__ = [
    "RunResult",
    "build_simulation",
    "build_devices",
    "build_partitions",
    "wire_settings",
    "run_experiment",
    "load_run_dataset",
    "build_time_model",
    "build_run_method",
    "measure_layer_break_even",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Where a finished run wrote its results, and its summary."""

    run_dir: Path
    summary: dict[str, Any]


def load_run_dataset(config: RunConfig) -> ArrayDataset:
    """Load the configured data set (raises DataError when it is missing or corrupt)."""
    d = config.data
    options: dict[str, Any] = {}
    if d.dataset == "imagefolder":
        options["image_size"] = d.image_size
    return load_dataset(d.dataset, d.data_dir or None, seed=config.seed, **options)


def build_time_model(config: RunConfig, layer_names: list[str]) -> TimeModel:
    """The device time model: a measured profile file if given, else the named preset."""
    if config.timing.profile:
        from prunefl.timing.profile import load_profile

        return load_profile(config.timing.profile, layer_names)
    from prunefl.timing.presets import preset_time_model

    return preset_time_model(config.timing.preset, config.model.name, layer_names)


def build_run_method(config: RunConfig, reference: ReferenceRun | None = None) -> Method:
    """Build the configured method; ``reference`` overrides the one the config names (``[reference]``).

    Raises
    ------
    ConfigError
        Unknown method, or the method needs a reference density, mask or initial weights that is not there.
    """
    spec = get_spec(config.pruning.method)
    if reference is None and spec.needs:
        reference = resolve_reference(config)
    elif reference is not None and config.reference.density > 0:
        reference = dataclasses.replace(reference, density=config.reference.density)
    context = MethodContext(
        seed=config.seed,
        rounds=config.fl.rounds,
        local_steps=config.fl.local_steps,
        batch_size=config.fl.batch_size,
        lr=config.fl.lr,
        num_clients=config.data.num_clients,
        comm=config.timing.comm,
    )
    settings = getattr(config, spec.section) if spec.section else None
    return build_method(spec.name, settings, context, reference)


def build_model_state(
    config: RunConfig, dataset: ArrayDataset, seed: int, model_fn: Callable[[], torch.nn.Module] | None = None
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A freshly initialised model (masks attached, all ones) from ``seed``, and its state without mask buffers.

    ``model_fn`` builds the model instead of ``config.model.name`` (seeded the same way); ``config.model.init``
    still applies, and its default ``official`` keeps the model as built (default: None).
    """
    torch.manual_seed(seed)
    if model_fn is not None:
        model = model_fn()
    else:
        model_options: dict[str, Any] = {"relu": config.model.conv4_relu} if config.model.name == "conv4" else {}
        model = build_model(config.model.name, dataset.num_classes, dataset.input_shape, **model_options)
    apply_init_(model, config.model.init)
    masks = attach_masks(model)
    mask_keys = {f"{n}_mask" for n in masks}
    return model, {k: v.detach().clone() for k, v in model.state_dict().items() if k not in mask_keys}


def build_devices(config: RunConfig, prunable: list[str]) -> list[DeviceProfile]:
    """Every client's device profile (time model, compute and link speeds), drawn from the run seed."""
    t = config.timing
    return make_devices(
        build_time_model(config, prunable),
        config.data.num_clients,
        LinkProfile(t.uplink_bytes_per_s, t.downlink_bytes_per_s, t.latency_s),
        t.compute_scales,
        t.bandwidth_scales,
        t.compute_scale_sigma,
        config.seed,
    )


def build_simulation(
    config: RunConfig,
    dataset: ArrayDataset,
    method: Method | None = None,
    model_fn: Callable[[], torch.nn.Module] | None = None,
    break_even: dict[str, tuple[float, float]] | None = None,
) -> SimulationSetup:
    """Assemble data partitions, model, server, devices and clock for the simulation engine.

    ``model_fn`` replaces ``config.model.name`` (see :func:`run_experiment`). ``break_even`` is the kernel
    break-even table to use with ``fl.kernels = "auto"`` instead of measuring one (a resumed run's) (default: None).

    Raises
    ------
    ConfigError
        ``model_fn`` is given with a time-model preset other than ``uniform`` and no profile: the presets' measured
        constants belong to the paper's models.
    """
    if model_fn is not None and not config.timing.profile and config.timing.preset != UNIFORM_PRESET:
        raise ConfigError(
            f"timing.preset {config.timing.preset!r} holds measured constants for the paper's models only, not for a "
            f"model from model_fn; set timing.preset = {UNIFORM_PRESET!r} or a measured timing.profile"
        )
    seed = config.seed
    method = method if method is not None else build_run_method(config)
    d, f, t = config.data, config.fl, config.timing
    parts = build_partitions(config, dataset)
    model, state = build_model_state(config, dataset, seed, model_fn)
    masks = {n: model.get_buffer(f"{n}_mask") for n, _ in prunable_parameters(model)}
    devices = build_devices(config, [n for n, _ in prunable_parameters(model)])
    settings = ServerSettings(
        num_clients=d.num_clients,
        clients_per_round=f.clients_per_round,
        local_steps=f.local_steps,
        batch_size=f.batch_size,
        lr=f.lr,
        lr_schedule=f.lr_schedule,
        lr_half_life_rounds=f.lr_half_life_rounds,
        lr_step_rounds=f.lr_step_rounds,
        lr_step_gamma=f.lr_step_gamma,
        regrow_init=f.regrow_init,
        importance_mode=method.importance_mode,  # in force only in rounds where the method tracks importance
        seed=seed,
        aggregation=f.aggregation,
        trim_fraction=f.trim_fraction,
        round_retries=f.round_retries,
        min_valid_replies=f.min_valid_replies,
        max_update_norm_ratio=f.max_update_norm_ratio,
    )
    if method.clients_change_masks and f.aggregation != "mean":  # checked again by the round protocol
        raise ConfigError(
            f"fl.aggregation {f.aggregation!r} is not supported by method {config.pruning.method!r}, whose clients "
            "change their own masks; use fl.aggregation = \"mean\""
        )
    server = Server(state, {k: v.detach().clone() for k, v in masks.items()}, settings)
    eval_indices = None
    if 0 < d.eval_subset < dataset.n_test:
        rng = seeds.rng(seed, EVAL_SUBSET_STREAM)
        eval_indices = torch.from_numpy(np.sort(rng.choice(dataset.n_test, size=d.eval_subset, replace=False)))
    if f.kernels != "auto":
        break_even = {}
    elif break_even is None:
        break_even = _break_even_table(config, model)
    return SimulationSetup(
        dataset=dataset,
        partitions=parts,
        model=model,
        server=server,
        devices=devices,
        loss_fn=make_loss(f.loss, dataset.num_classes),
        rounds=f.rounds,
        eval_every=f.eval_every,
        eval_indices=eval_indices,
        clock=t.clock,
        comm=t.comm,
        seed=seed,
        wire=wire_settings(config),
        break_even=break_even,
        method=method,
        momentum=f.momentum,
    )


def build_partitions(config: RunConfig, dataset: ArrayDataset) -> list[np.ndarray]:
    """Every client's training-sample indices, drawn from the run seed (the same on every engine and node)."""
    d = config.data
    params: dict[str, Any] = {}
    if d.partition == "dirichlet":
        params["alpha"] = d.dirichlet_alpha
    elif d.partition == "shards":
        params["shards_per_client"] = d.shards_per_client
    return partition(d.partition, dataset, d.num_clients, config.seed, **params)


def wire_settings(config: RunConfig) -> WireSettings:
    """How the run's messages are encoded (``timing.wire_*``); server and clients must use the same."""
    t = config.timing
    return WireSettings(
        t.wire_level or None, t.wire_values_dtype, t.wire_importance_dtype, t.wire_importance_top_fraction
    )


BREAK_EVEN_DENSITIES = (0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01)


def _break_even_table(config: RunConfig, model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    """Break-even densities for ``fl.kernels = "auto"``: the timing profile's table if it has one, else measured now."""
    if config.timing.profile:
        from prunefl.timing.profile import load_profile_break_even

        table = load_profile_break_even(config.timing.profile, config.fl.batch_size)
        if table is not None:
            logger.info("break-even densities from profile %s: %s", config.timing.profile, table)
            return table
        logger.info("profile %s has no break-even table (masked kernels); measuring at start", config.timing.profile)
    else:
        logger.info("no timing profile; measuring break-even densities at start")
    return measure_layer_break_even(model, config.fl.batch_size)


def measure_layer_break_even(model: torch.nn.Module, batch_size: int, repeats: int = 5) -> dict[str, tuple[float, float]]:
    """Measure on this machine, per prunable ``nn.Linear`` weight, the density below which the CSR kernel wins.

    Returns ``{name: (without dense weight gradient, with it)}``; 0.0 means the sparse kernel never won.
    """
    out = {}
    for name, _ in prunable_parameters(model):
        owner = model.get_submodule(name.rpartition(".")[0])
        if not isinstance(owner, torch.nn.Linear):
            continue  # convolutions stay masked dense: a sparse im2col path was measured slower
        pair = tuple(
            measure_break_even(owner.in_features, owner.out_features, batch_size, BREAK_EVEN_DENSITIES, repeats,
                               dense_weight_grad=dw, min_speedup=SWITCH_MIN_SPEEDUP).break_even_density
            for dw in (False, True)
        )
        out[name] = (pair[0], pair[1])
        logger.info("break-even density of %s: %.2f (no dense weight gradient), %.2f (with)", name, *pair)
    return out


def run_experiment(
    config: RunConfig,
    run_dir: Path,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    dataset: ArrayDataset | None = None,
    plots: bool = True,
    reference: ReferenceRun | None = None,
    model_fn: Callable[[], torch.nn.Module] | None = None,
    engine_factory: Callable[[SimulationSetup], SimulationEngine] | None = None,
    resume: RunState | None = None,
) -> RunResult:
    """Run ``config`` and write its results folder, or continue a killed run from its checkpoint (``resume``).

    Side effects: creates ``run_dir`` (only after data, model, method and time model are built, so a bad config,
    missing data or a missing reference leaves nothing behind), writes config.toml, metrics.jsonl row by row
    (rows the method writes before FL first, e.g. initial pruning's with stage "ip"), a checkpoint before round 0,
    every ``config.checkpoint_every`` rounds and after the last round (the run state of
    :mod:`prunefl.experiments.state`: final state and masks, the initial weights under ``extra/init/`` for
    lottery-ticket baselines, and everything a resume needs; atomic), summary.json, PNG plots and report.md.

    ``reference`` is the reference run for methods that need one (``prunefl compare`` passes PruneFL's run of
    the same seed); without it the config's ``[reference]`` table is used.

    ``model_fn`` builds your own model instead of ``config.model.name``: called with no arguments after seeding
    torch from the run seed, once for the run and again wherever a method needs fresh initial weights. The model
    names its prunable weights with a ``prunable_parameter_names()`` method (else every conv/linear weight is
    prunable, :func:`prunefl.sparse.masks.prunable_parameters`); pair it with ``timing.preset = "uniform"`` or a
    measured ``timing.profile``. docs/USER_GUIDE.md, "Python API", has a worked example.

    ``engine_factory`` builds the engine that moves the round's messages from the assembled setup (default:
    None: :class:`SimulationEngine`, in-process); the Flower ServerApp passes one that sends them to its nodes.

    ``resume`` is the run state of ``run_dir``'s checkpoint (:func:`prunefl.experiments.state.load_run_state`):
    the run is rebuilt from ``config`` (which must not differ from the checkpoint's in what shapes the run),
    the state loaded into it, the metrics rows written after the checkpoint dropped, and the remaining rounds
    run; rows and final weights are those of a run that was never stopped (same machine and threads). The
    method's ``before_fl`` does not run again (default: None: a new run).

    Raises
    ------
    ConfigError
        A bad config, or (``resume``) a config that changes what shapes the run, naming the keys.
    CheckpointError
        ``resume`` does not fit the run built from ``config``, or metrics.jsonl changed since the checkpoint.
    ResultsWriteError
        The results folder cannot be written (not a folder, disk full); names the path. The previous checkpoint
        and the rows up to it stay intact.
    """
    if resume is not None:
        check_resume_config(resume.config, config, resume.round)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    start_wall = time.perf_counter()
    dataset = load_run_dataset(config) if dataset is None else dataset
    method = build_run_method(config, reference)
    break_even = None if resume is None else resume.break_even  # a resumed run keeps its kernel choices
    setup = build_simulation(config, dataset, method, model_fn, break_even=break_even)
    initial_state = {k: v.clone() for k, v in setup.server.state.items()}
    logger.info(
        "run %s: method=%s dataset=%s model=%s clients=%d/%d rounds=%d K=%d B=%d lr=%g seed=%d%s",
        config.name, config.pruning.method, config.data.dataset, config.model.name, config.fl.clients_per_round,
        config.data.num_clients, config.fl.rounds, config.fl.local_steps, config.fl.batch_size, config.fl.lr,
        config.seed, "" if resume is None else f", resumed after round {resume.round}",
    )
    extra: dict[str, Any] = {}
    # built before the folder is written: an engine that cannot start (Flower nodes missing) leaves nothing behind
    engine = SimulationEngine(setup) if engine_factory is None else engine_factory(setup)
    if resume is None:
        writer = ResultsWriter(run_dir, config)
    else:
        # load everything first: a checkpoint that does not fit leaves metrics.jsonl as it is
        restore_run_state(engine, resume)
        initial_state = resume.initial_state
        extra.update(resume.before_fl_summary)
        writer = ResultsWriter(run_dir, config, resume=resume.metrics)
        start_wall -= resume.wall_s  # wall times continue from the checkpoint's

    def record(row: dict[str, Any]) -> None:
        writer.write_row(row)
        if on_row is not None:
            on_row(row)

    checkpoints = 0
    before_summary = dict(extra)

    def checkpoint(done: int) -> None:
        nonlocal checkpoints
        checkpoints += 1
        write_run_state(run_dir, engine, config, done, initial_state, before_summary, writer.position(),
                        time.perf_counter() - start_wall, number=checkpoints)

    try:
        if resume is None:
            before = engine.prepare(SetupView(  # runs the method's before_fl (on a node, for Flower) and installs it
                state=setup.server.state,
                masks=setup.server.masks,
                model=setup.model,
                dataset=dataset,
                partitions=setup.partitions,
                devices=setup.devices,
                loss_fn=setup.loss_fn,
                record=record,
                fresh_state=lambda s: build_model_state(config, dataset, s, model_fn)[1],
                start_wall=start_wall,
            ))
            if before.initial_state is not None:  # the run starts from another initialisation (reinit)
                initial_state = before.initial_state
            extra.update(before.summary)
            before_summary.update(before.summary)
            checkpoint(0)  # a run killed from here on resumes without redoing before_fl (initial pruning)
        engine.run(record, start_wall=start_wall, start_round=0 if resume is None else resume.round,
                   checkpoint_every=config.checkpoint_every, on_checkpoint=checkpoint)
        if setup.eval_indices is not None:
            # the per-round subset keeps runs fast; the final number a paper reports uses every test sample
            acc, loss = engine.evaluate_global(full_test_set=True)
            extra[K.K_FINAL_ACCURACY_FULL] = acc
            extra[K.K_FINAL_LOSS_FULL] = loss
    finally:
        writer.close()
    extra.update(method.summary())
    if setup.break_even:
        extra["break-even-density"] = {k: {"no-dense-grad": a, "dense-grad": b} for k, (a, b) in setup.break_even.items()}
    summary = summarize(writer.rows, config.pruning.method, config.fl.target_accuracies, extra)
    writer.write_summary(summary)
    if plots:
        from prunefl.report import plot_run, write_report

        plot_run(run_dir)
        write_report(run_dir)
    return RunResult(run_dir=Path(run_dir), summary=summary)
