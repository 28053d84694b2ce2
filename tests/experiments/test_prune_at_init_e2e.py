"""SNIP, SynFlow and random pruning end to end on the real digits: the reference density from round 0, then fixed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunefl import metrics as K
from prunefl.experiments.config import load_config
from prunefl.experiments.runner import run_experiment

# MLP on 8×8 digits, one hidden layer of 64: |J| = 64·64 + 64·10 = 4,736 prunable weights. At d = 0.3,
# round(1,420.8) = 1,421 for SynFlow and random, and SNIP's official ⌊1,420.8⌋ + 1 = 1,421 (plus ties).
N_TOTAL = 4736
N_KEPT = 1421


@pytest.mark.slow
@pytest.mark.parametrize("method", ["snip", "synflow", "random"])
def test_prune_at_init_reaches_reference_density_at_round_zero_and_keeps_it(method: str, tmp_path: Path) -> None:
    # Prepare
    config = load_config(None, [
        "data.dataset=digits", "data.partition=iid", "data.num_clients=3", "clients_per_round=3", "model.name=mlp",
        "timing.preset=uniform", "rounds=6", "eval_every=3", "lr=0.25", "threads=1", f"method={method}",
        "reference.density=0.3",
    ])
    # Execute
    result = run_experiment(config, tmp_path / method, plots=False)
    # Assert
    rows = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert [r[K.K_ROUND] for r in rows] == list(range(6)) and all(r[K.K_STAGE] == K.STAGE_FL for r in rows)
    n_kept = result.summary[K.K_N_KEPT]
    if method == "snip":
        assert n_kept >= N_KEPT  # ⌊d·|J|⌋ + 1, plus any ties at the threshold
        assert rows[0][K.K_RECONFIG] is not None and all(r[K.K_RECONFIG] is None for r in rows[1:])
    else:
        assert n_kept == N_KEPT
    # the mask in force after round 0 has the target density, and no later round changes it
    assert [r[K.K_DENSITY] for r in rows] == pytest.approx([n_kept / N_TOTAL] * 6)
    assert result.summary[K.K_TARGET_DENSITY] == 0.3 and result.summary[K.K_REFERENCE_SOURCE] == "config"
    assert result.summary[K.K_N_TOTAL] == N_TOTAL
    assert rows[-1][K.K_TEST_ACCURACY] > 0.3  # 10 classes (chance 0.1): the pruned model learns (random ~0.5, seed 0)
