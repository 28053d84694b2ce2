"""The engine trains layers below their break-even density with the CSR kernel, and the run still learns."""

from __future__ import annotations

import pytest

from prunefl.engines.simulation import SimulationEngine
from prunefl.experiments.config import load_config
from prunefl.experiments.runner import build_simulation, load_run_dataset, measure_layer_break_even


_OVERRIDES = [
    "data.dataset=digits", "data.partition=iid", "data.num_clients=3", "clients_per_round=3",
    "model.name=mlp", "timing.preset=uniform", "rounds=6", "eval_every=3", "lr=0.1", "threads=1",
    "method=prunefl-no-ip", "reconfig_interval=2", "first_reconfig_round=2", "max_decrease=0.9",
]


@pytest.mark.slow
def test_layers_below_break_even_switch_to_sparse_after_pruning() -> None:
    # Prepare: pretend the CSR kernel wins below density 0.95 for fc1 (no dense grads) / never with dense grads
    config = load_config(None, [*_OVERRIDES, "importance_window=1"])
    setup = build_simulation(config, load_run_dataset(config))
    setup.break_even = {"fc1.weight": (0.95, 0.0)}
    engine = SimulationEngine(setup)
    rows = []
    # Execute
    engine.run(rows.append)
    # Assert: dense until the first reconfiguration (round 2); afterwards sparse outside importance rounds
    assert rows[0]["sparse-layers"] == [] and rows[1]["sparse-layers"] == []  # density 1 > 0.95
    assert rows[2]["reconfig"] is not None and rows[2]["density"] < 0.95
    assert rows[3]["sparse-layers"] == ["fc1.weight"]  # no importance this round (window 1): kernel wins
    assert rows[4]["sparse-layers"] == []  # importance round needs dense weight grads: break-even 0
    assert rows[-1]["test-accuracy"] > 0.3  # 10 classes: clearly learning


def test_measured_break_even_covers_only_linear_layers() -> None:
    from prunefl.models import build_model
    from prunefl.sparse.masks import attach_masks

    model = build_model("digits-cnn", 10, (1, 8, 8))
    attach_masks(model)
    be = measure_layer_break_even(model, batch_size=4, repeats=1)
    linear = {n for n, _ in model.named_parameters() if n.startswith("fc") and n.endswith("weight")}
    assert set(be) == linear
    assert all(0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 for a, b in be.values())
