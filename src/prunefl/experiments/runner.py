"""Build a run from its config and execute it: config → data/model → engine → results folder → report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunefl.data import load_dataset, partition
from prunefl.data.dataset import ArrayDataset
from prunefl.engines.simulation import SimulationEngine, SimulationSetup
from prunefl.experiments.config import RunConfig
from prunefl.experiments.results import ResultsWriter, save_checkpoint, summarize
from prunefl.fl import messages as K
from prunefl.fl.client import load_model_state_
from prunefl.fl.losses import make_loss
from prunefl.fl.server import Server, ServerSettings
from prunefl.fl.transport import Transport, WireSettings
from prunefl.models import build_model
from prunefl.models.init import apply_init_
from prunefl.pruning.adaptive import AdaptivePruning, AdaptiveSettings
from prunefl.pruning.initial import InitialPruningSettings, IPRound, initial_pruning
from prunefl.sparse.backend import SWITCH_MIN_SPEEDUP, measure_break_even
from prunefl.sparse.masks import attach_masks, density, prunable_parameters
from prunefl.timing.clock import LinkProfile, make_devices
from prunefl.timing.model import TimeModel

__all__ = [
    "RunResult",
    "build_simulation",
    "run_experiment",
    "load_run_dataset",
    "build_time_model",
    "ip_batches",
    "measure_layer_break_even",
]

logger = logging.getLogger(__name__)

EVAL_SUBSET_STREAM = 5  # spawn-key tags of seeded streams the runner owns
IP_STREAM = 6


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


def build_simulation(config: RunConfig, dataset: ArrayDataset) -> SimulationSetup:
    """Assemble data partitions, model, server, devices and clock for the simulation engine."""
    seed = config.seed
    torch.manual_seed(seed)
    d, f, t = config.data, config.fl, config.timing
    params: dict[str, Any] = {}
    if d.partition == "dirichlet":
        params["alpha"] = d.dirichlet_alpha
    elif d.partition == "shards":
        params["shards_per_client"] = d.shards_per_client
    parts = partition(d.partition, dataset, d.num_clients, seed, **params)
    model_options: dict[str, Any] = {"relu": config.model.conv4_relu} if config.model.name == "conv4" else {}
    model = build_model(config.model.name, dataset.num_classes, dataset.input_shape, **model_options)
    apply_init_(model, config.model.init)
    masks = attach_masks(model)
    prunable = [n for n, _ in prunable_parameters(model)]
    time_model = build_time_model(config, prunable)
    devices = make_devices(
        time_model,
        d.num_clients,
        LinkProfile(t.uplink_bytes_per_s, t.downlink_bytes_per_s, t.latency_s),
        t.compute_scales,
        t.bandwidth_scales,
        t.compute_scale_sigma,
        seed,
    )
    mask_keys = {f"{n}_mask" for n in masks}
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in mask_keys}
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
        importance_mode=config.pruning.importance if config.pruning.adapts_during_fl else "off",
        seed=seed,
    )
    server = Server(state, {k: v.detach().clone() for k, v in masks.items()}, settings)
    eval_indices = None
    if 0 < d.eval_subset < dataset.n_test:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EVAL_SUBSET_STREAM,)))
        eval_indices = torch.from_numpy(np.sort(rng.choice(dataset.n_test, size=d.eval_subset, replace=False)))
    break_even = _break_even_table(config, model) if f.kernels == "auto" else {}
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
        transport=Transport(WireSettings(t.wire_level or None, t.wire_values_dtype, t.wire_importance_dtype,
                                         t.wire_importance_top_fraction)),
        break_even=break_even,
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
) -> RunResult:
    """Run ``config`` and write its results folder.

    Side effects: creates ``run_dir`` (only after data, model and time model are built, so a bad config or
    missing data leaves nothing behind), writes config.toml, metrics.jsonl row by row (initial-pruning rows
    first, stage "ip"), summary.json, a safetensors checkpoint (final state and masks, plus the initial weights
    under ``extra/init/`` for lottery-ticket baselines), PNG plots and report.md.
    """
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    start_wall = time.perf_counter()
    dataset = load_run_dataset(config) if dataset is None else dataset
    setup = build_simulation(config, dataset)
    initial_state = {k: v.clone() for k, v in setup.server.state.items()}
    logger.info(
        "run %s: method=%s dataset=%s model=%s clients=%d/%d rounds=%d K=%d B=%d lr=%g seed=%d",
        config.name, config.pruning.method, config.data.dataset, config.model.name, config.fl.clients_per_round,
        config.data.num_clients, config.fl.rounds, config.fl.local_steps, config.fl.batch_size, config.fl.lr,
        config.seed,
    )
    writer = ResultsWriter(run_dir, config)

    def record(row: dict[str, Any]) -> None:
        writer.write_row(row)
        if on_row is not None:
            on_row(row)

    extra: dict[str, Any] = {}
    try:
        if config.pruning.uses_initial_pruning:
            extra[K.K_IP] = _run_initial_pruning(config, setup, record, start_wall)
        if config.pruning.adapts_during_fl:
            setup.policy = AdaptivePruning(_adaptive_settings(config), setup.devices)
        engine = SimulationEngine(setup)
        engine.run(record, start_wall=start_wall)
        if setup.eval_indices is not None:
            # the per-round subset keeps runs fast; the final number a paper reports uses every test sample
            acc, loss = engine.evaluate_global(full_test_set=True)
            extra[K.K_FINAL_ACCURACY_FULL] = acc
            extra[K.K_FINAL_LOSS_FULL] = loss
    finally:
        writer.close()
    if isinstance(setup.policy, AdaptivePruning):
        extra["reconfigurations"] = len(setup.policy.history)
    if setup.break_even:
        extra["break-even-density"] = {k: {"no-dense-grad": a, "dense-grad": b} for k, (a, b) in setup.break_even.items()}
    summary = summarize(writer.rows, config.pruning.method, config.fl.target_accuracies, extra)
    writer.write_summary(summary)
    save_checkpoint(
        run_dir, setup.server.state, setup.server.masks, config, config.fl.rounds,
        extra_tensors={f"init/{k}": v for k, v in initial_state.items()},
    )
    if plots:
        from prunefl.report import plot_run, write_report

        plot_run(run_dir)
        write_report(run_dir)
    return RunResult(run_dir=Path(run_dir), summary=summary)


def _adaptive_settings(config: RunConfig) -> AdaptiveSettings:
    p = config.pruning
    return AdaptiveSettings(
        total_rounds=config.fl.rounds,
        local_steps=config.fl.local_steps,
        reconfig_interval=p.reconfig_interval,
        reconfig_start=p.reconfig_start,
        first_reconfig_round=p.first_reconfig_round,
        reconfig_start_accuracy=p.reconfig_start_accuracy,
        max_decrease=p.max_decrease,
        max_decrease_half_life=p.max_decrease_half_life,
        max_density=p.max_density,
        target_density=p.target_density,
        legacy_cap_off_by_one=p.legacy_cap_off_by_one,
        comm=config.timing.comm,
        importance_window=p.importance_window,
    )


def ip_batches(config: RunConfig, setup: SimulationSetup) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The selected client's fixed IP minibatches: drawn once from a seeded shuffle of its own data (spec §3.7)."""
    p, b = config.pruning, config.fl.batch_size
    own = setup.partitions[p.ip_client]
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(IP_STREAM,)))
    order = rng.permutation(own)
    need = p.ip_batches * b
    order = np.resize(order, need)  # cycles a partition smaller than the IP data set
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    ds = setup.dataset
    out = []
    for i in range(p.ip_batches):  # a handful of batches, prepared once
        idx = torch.from_numpy(order[i * b : (i + 1) * b])
        out.append((ds.prepare(ds.x_train[idx], train=True, generator=gen), ds.y_train[idx]))
    return out


def _run_initial_pruning(
    config: RunConfig, setup: SimulationSetup, record: Callable[[dict[str, Any]], None], start_wall: float
) -> dict[str, Any]:
    """Run IP at the selected client, install its weights and masks on the server; return the IP summary."""
    p = config.pruning
    device = setup.devices[p.ip_client]
    load_model_state_(
        setup.model,
        {k: v.numpy() for k, v in setup.server.state.items()},
        {k: v.numpy() for k, v in setup.server.masks.items()},
    )
    settings = InitialPruningSettings(
        lr=p.ip_lr or config.fl.lr,
        start_accuracy=p.ip_start_factor / setup.dataset.num_classes,
        local_steps=config.fl.local_steps,
        check_every=p.ip_check_every,
        interval=p.ip_interval,
        max_rounds=p.ip_max_rounds,
        density_tolerance=p.ip_density_tolerance,
        stable_reconfigs=p.ip_stable_reconfigs,
        max_decrease=p.ip_max_decrease,
        compute_scale=device.compute_scale,
    )
    clock = [0.0]

    def on_ip_round(ip: IPRound) -> None:
        charged = ip.compute_s if p.charge_ip_time else 0.0
        clock[0] += charged
        record({
            K.K_ROUND: ip.round,
            K.K_STAGE: K.STAGE_IP,
            K.K_ROUND_SIM_S: charged,
            K.K_SIM_CLOCK_S: clock[0],
            K.K_WALL_S: time.perf_counter() - start_wall,
            K.K_TRAIN_LOSS: ip.train_loss,
            K.K_TRAIN_ACCURACY: ip.train_accuracy,
            K.K_TEST_ACCURACY: None,
            K.K_TEST_LOSS: None,
            K.K_DENSITY: ip.density,
            K.K_LAYER_DENSITY: ip.layer_density,
            K.K_BYTES_UP: 0,
            K.K_BYTES_DOWN: 0,
            K.K_LR: settings.lr,
            K.K_CLIENTS: [p.ip_client],
            K.K_RECONFIG: ip.reconfig,
        })

    result = initial_pruning(
        setup.model, ip_batches(config, setup), setup.loss_fn, device.time_model, settings, on_ip_round
    )
    setup.server.state = result.state
    setup.server.masks = result.masks  # state first: the masks setter zeroes pruned coordinates if regrow is "zero"
    setup.start_sim_clock_s = clock[0]
    return {
        K.K_ROUNDS: result.rounds,
        K.K_IP_STARTED_AT: result.started_at,
        K.K_IP_STOP_REASON: result.stop_reason,
        "reconfigurations": len(result.reconfigurations),
        K.K_FINAL_DENSITY: density(result.masks),
        K.K_SIM_CLOCK_S: clock[0],  # what the clock was charged
        K.K_IP_COMPUTE_S: result.sim_compute_s,  # what IP cost the selected client, charged or not
        K.K_IP_CHARGED: p.charge_ip_time,
    }
