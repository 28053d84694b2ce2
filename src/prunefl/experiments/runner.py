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
from prunefl.fl.losses import make_loss
from prunefl.fl.server import Server, ServerSettings
from prunefl.models import build_model
from prunefl.models.init import apply_init_
from prunefl.sparse.masks import attach_masks, prunable_parameters
from prunefl.timing.clock import LinkProfile, make_devices
from prunefl.timing.model import TimeModel

__all__ = ["RunResult", "build_simulation", "run_experiment", "load_run_dataset", "build_time_model"]

logger = logging.getLogger(__name__)

EVAL_SUBSET_STREAM = 5  # spawn-key tag of the fixed evaluation subset


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
        seed=seed,
    )
    server = Server(state, {k: v.detach().clone() for k, v in masks.items()}, settings)
    eval_indices = None
    if 0 < d.eval_subset < dataset.n_test:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EVAL_SUBSET_STREAM,)))
        eval_indices = torch.from_numpy(np.sort(rng.choice(dataset.n_test, size=d.eval_subset, replace=False)))
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
    )


def run_experiment(
    config: RunConfig,
    run_dir: Path,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    dataset: ArrayDataset | None = None,
    plots: bool = True,
) -> RunResult:
    """Run ``config`` and write its results folder.

    Side effects: creates ``run_dir`` (only after data, model and time model are built, so a bad config or
    missing data leaves nothing behind), writes config.toml, metrics.jsonl row by row, summary.json,
    a safetensors checkpoint, PNG plots and report.md.
    """
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    start_wall = time.perf_counter()
    dataset = load_run_dataset(config) if dataset is None else dataset
    setup = build_simulation(config, dataset)
    logger.info(
        "run %s: method=%s dataset=%s model=%s clients=%d/%d rounds=%d K=%d B=%d lr=%g seed=%d",
        config.name, config.pruning.method, config.data.dataset, config.model.name, config.fl.clients_per_round,
        config.data.num_clients, config.fl.rounds, config.fl.local_steps, config.fl.batch_size, config.fl.lr,
        config.seed,
    )
    engine = SimulationEngine(setup)
    writer = ResultsWriter(run_dir, config)

    def record(row: dict[str, Any]) -> None:
        writer.write_row(row)
        if on_row is not None:
            on_row(row)

    try:
        engine.run(record, start_wall=start_wall)
    finally:
        writer.close()
    summary = summarize(writer.rows, config.pruning.method, config.fl.target_accuracies)
    writer.write_summary(summary)
    save_checkpoint(run_dir, setup.server.state, setup.server.masks, config, config.fl.rounds)
    if plots:
        from prunefl.report import plot_run, write_report

        plot_run(run_dir)
        write_report(run_dir)
    return RunResult(run_dir=Path(run_dir), summary=summary)
