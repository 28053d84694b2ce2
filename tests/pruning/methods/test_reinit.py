"""Lottery-ticket baselines: the reference's final mask on its own initialisation (reinit) or a fresh one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matplotlib.colors import to_hex
from torch import nn

from prunefl import metrics as K
from prunefl.data.dataset import ArrayDataset
from prunefl.errors import ConfigError
from prunefl.experiments.config import load_config
from prunefl.experiments.reference import load_reference_run
from prunefl.experiments.results import load_checkpoint
from prunefl.experiments.runner import build_model_state, run_experiment
from prunefl.pruning.methods import (
    AggregateView,
    BeforeFL,
    MethodContext,
    ReferenceRun,
    SetupView,
    all_specs,
    build_method,
    get_spec,
)
from prunefl.pruning.methods.reinit import Reinit, ReinitSettings
from prunefl.pruning.select import top_k_per_layer
from prunefl.sparse.masks import layer_densities

# The digits MLP (8×8 inputs, 64 hidden, 10 classes) built by the runner's own initialisation, on a stand-in data
# set of the digits' shape: fc1.weight (64, 64), fc1.bias (64,), fc2.weight (10, 64), fc2.bias (10,).
CONFIG = load_config(None, ["data.dataset=digits", "model.name=mlp", "threads=1"])
X, Y = torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])
DATASET = ArrayDataset("digits-shaped", X, Y, X, Y, num_classes=10)
PRUNABLE = ("fc1.weight", "fc2.weight")


def _state(seed: int) -> dict[str, torch.Tensor]:
    return build_model_state(CONFIG, DATASET, seed)[1]


def _reference_masks() -> dict[str, torch.Tensor]:
    """A final mask of uneven layer densities: fc1 keeps 1000 of 4096, fc2 keeps 100 of 640 (by a fixed score)."""
    gen = torch.Generator().manual_seed(7)
    scores = {"fc1.weight": torch.rand(64, 64, generator=gen), "fc2.weight": torch.rand(10, 64, generator=gen)}
    return top_k_per_layer(scores, {"fc1.weight": 1000, "fc2.weight": 100})


def _view(run_seed: int = 5) -> SetupView:
    """The server before round 0 of a run of seed ``run_seed``: its own fresh state and all-ones masks."""
    state = _state(run_seed)
    masks = {n: torch.ones_like(state[n], dtype=torch.bool) for n in PRUNABLE}
    return SetupView(state=state, masks=masks, model=nn.Identity(), dataset=DATASET, partitions=[], devices=[],
                     loss_fn=nn.functional.cross_entropy, record=lambda row: None, fresh_state=_state)


def _before_fl(name: str, reference: ReferenceRun, seed: int = 0, settings: ReinitSettings | None = None) -> BeforeFL:
    ctx = MethodContext(seed=seed, rounds=10, local_steps=5, batch_size=20, lr=0.1, num_clients=2)
    return build_method(name, settings or ReinitSettings(), ctx, reference).before_fl(_view())


def _reference(init: bool = True) -> ReferenceRun:
    return ReferenceRun("runs/prunefl", density=0.17, masks=_reference_masks(), init_state=_state(0) if init else None)


def test_reinit_starts_from_the_reference_init_under_the_reference_mask() -> None:
    # Prepare
    reference = _reference()
    assert reference.init_state is not None and reference.masks is not None
    # Execute
    before = _before_fl("reinit", reference)
    # Assert: kept coordinates and unpruned tensors bit for bit, pruned coordinates 0 (official weight.mul_(mask))
    assert before.state is not None and before.masks is not None
    assert set(before.state) == set(reference.init_state)
    for key, init in reference.init_state.items():
        if key in reference.masks:
            mask = reference.masks[key]
            assert torch.equal(before.state[key][mask], init[mask])
            assert torch.equal(before.state[key][~mask], torch.zeros(int((~mask).sum())))
        else:
            assert torch.equal(before.state[key], init)
    assert {n: m.tolist() for n, m in before.masks.items()} == {n: m.tolist() for n, m in reference.masks.items()}


def test_reinit_does_not_alias_the_reference_tensors() -> None:
    # Prepare
    reference = _reference()
    assert reference.init_state is not None and reference.masks is not None
    # Execute
    before = _before_fl("reinit", reference)
    assert before.state is not None and before.masks is not None
    before.state["fc1.bias"].add_(1.0)
    before.masks["fc2.weight"].fill_(False)
    # Assert: the reference stays as loaded (a comparison reuses it for every baseline)
    assert torch.equal(reference.init_state["fc1.bias"], _state(0)["fc1.bias"])
    assert bool(reference.masks["fc2.weight"].any())


def test_random_reinit_puts_the_reference_mask_on_seed_plus_one() -> None:
    # Prepare
    reference = _reference(init=False)
    assert reference.masks is not None
    fresh, init = _state(1), _state(0)
    # Execute: run seed 0 → initialisation seed 0 + 1
    before = _before_fl("random-reinit", reference, seed=0)
    # Assert
    assert before.state is not None and before.masks is not None
    assert {n: m.tolist() for n, m in before.masks.items()} == {n: m.tolist() for n, m in reference.masks.items()}
    mask = reference.masks["fc1.weight"]
    assert torch.equal(before.state["fc1.weight"][mask], fresh["fc1.weight"][mask])
    assert not torch.equal(before.state["fc1.weight"][mask], init["fc1.weight"][mask])  # not the reference init
    assert bool((before.state["fc1.weight"][~mask] == 0).all())
    assert torch.equal(before.state["fc2.bias"], fresh["fc2.bias"])


def test_random_reinit_seed_offset_chooses_the_initialisation_seed() -> None:
    # Execute: run seed 4, offset 3 → seed 7
    before = _before_fl("random-reinit", _reference(init=False), seed=4, settings=ReinitSettings(seed_offset=3))
    # Assert
    assert before.state is not None
    assert torch.equal(before.state["fc1.bias"], _state(7)["fc1.bias"])


def test_reinit_keeps_the_mask_every_round_and_tracks_no_importance() -> None:
    # Prepare
    ctx = MethodContext(seed=0, rounds=10, local_steps=5, batch_size=20, lr=0.1, num_clients=2)
    method = build_method("reinit", ReinitSettings(), ctx, _reference())
    state, masks = _state(0), _reference_masks()
    views = [AggregateView(round=r, state=state, previous_state=state, masks=masks, importance=None, clients=[0],
                           devices=[]) for r in range(10)]
    # Execute / Assert: the base class's FedAvg hooks change nothing, so the engine keeps the installed mask
    assert all(method.after_aggregate(view) is None for view in views)
    assert not any(method.track_importance(r) or method.upload_importance(r) for r in range(10))


@pytest.mark.parametrize(
    ("name", "reference", "missing"),
    [
        ("reinit", ReferenceRun("runs/x", density=0.2, masks={"fc1.weight": torch.ones(1, dtype=torch.bool)}),
         "init"),  # a run folder saved without its initial weights
        ("reinit", ReferenceRun("runs/x", density=0.2, init_state={"fc1.bias": torch.zeros(1)}),
         "mask"),  # no final mask
        ("random-reinit", ReferenceRun("config", density=0.2), "mask"),  # only a density typed in the config
        ("random-reinit", None, "mask"),  # no reference at all
    ],
)
def test_missing_reference_pieces_are_config_errors(name: str, reference: ReferenceRun | None, missing: str) -> None:
    ctx = MethodContext(seed=0, rounds=10, local_steps=5, batch_size=20, lr=0.1, num_clients=2)
    with pytest.raises(ConfigError, match=rf"{name}.*needs the reference run's .*{missing}"):
        build_method(name, ReinitSettings(), ctx, reference)


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        ({"fc1.weight": torch.ones(64, 64, dtype=torch.bool)}, "missing fc2.weight"),  # a layer short
        # another model: a layer too many, another one shaped differently
        ({**dict.fromkeys(PRUNABLE, torch.ones(64, 64, dtype=torch.bool)), "c.weight": torch.ones(1, dtype=torch.bool)},
         r"unexpected c.weight; shape differs at fc2.weight \(64, 64\) \(model \(10, 64\)\)"),
        ({"fc1.weight": torch.ones(64, 64), "fc2.weight": torch.ones(10, 64, dtype=torch.bool)},
         "not bool at fc1.weight"),  # float 0/1 masks
    ],
)
def test_reference_masks_that_do_not_fit_the_model_are_config_errors(
    masks: dict[str, torch.Tensor], match: str
) -> None:
    with pytest.raises(ConfigError, match=rf"reference 'runs/prunefl' masks do not fit the model: .*{match}"):
        _before_fl("random-reinit", ReferenceRun("runs/prunefl", masks=masks))


def test_reference_init_that_does_not_fit_the_model_is_a_config_error() -> None:
    # Prepare: a checkpoint of a wider model (fc1 with 32 hidden units) and without fc2.bias
    init = _state(0)
    init["fc1.weight"] = torch.zeros(32, 64)
    del init["fc2.bias"]
    reference = ReferenceRun("runs/prunefl", masks=_reference_masks(), init_state=init)
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"initial weights do not fit the model: missing fc2.bias; shape differs "
                                          r"at fc1.weight \(32, 64\) \(model \(64, 64\)\)"):
        _before_fl("reinit", reference)


def test_seed_offset_zero_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"reinit.seed_offset must be in \[1, 2\^32 - 1\]"):
        ReinitSettings(seed_offset=0)


def test_summaries_record_the_reference_and_the_initialisation() -> None:
    # Prepare
    ctx = MethodContext(seed=2, rounds=10, local_steps=5, batch_size=20, lr=0.1, num_clients=2)
    # Execute
    reinit = build_method("reinit", ReinitSettings(), ctx, _reference()).summary()
    random = build_method("random-reinit", ReinitSettings(), ctx, _reference(init=False)).summary()
    # Assert: spec §10 item 12; the mask keeps 1000 + 100 of 4096 + 640 weights
    assert reinit == {K.K_REFERENCE_SOURCE: "runs/prunefl", "init": "reference", "init-seed": None,
                      K.K_TARGET_DENSITY: 1100 / 4736, K.K_N_KEPT: 1100, K.K_N_TOTAL: 4736}
    assert random == {**reinit, "init": "fresh", "init-seed": 3}


def test_both_are_registered_as_lottery_baselines_of_one_class() -> None:
    # Prepare
    ctx = MethodContext(seed=0, rounds=10, local_steps=5, batch_size=20, lr=0.1, num_clients=2)
    reinit, random = get_spec("reinit"), get_spec("random-reinit")
    # Assert
    assert (reinit.display_name, reinit.needs, reinit.lottery) == ("Reinit", frozenset({"mask", "init"}), True)
    assert (random.display_name, random.needs, random.lottery) == ("Random reinit", frozenset({"mask"}), True)
    assert not reinit.extension and not random.extension
    # a colour of their own: "tab:brown" / "tab:pink" would be C5 / C6 (SynFlow, FedDST) under another name
    others = [to_hex(s.colour) for s in all_specs() if s.colour and s.name not in ("reinit", "random-reinit")]
    assert len({to_hex(reinit.colour), to_hex(random.colour), *others}) == len(others) + 2
    assert isinstance(build_method("random-reinit", ReinitSettings(), ctx, _reference()), Reinit)


@pytest.mark.slow
def test_reinit_and_random_reinit_train_prunefl_final_mask_end_to_end(tmp_path: Path) -> None:
    # Prepare: a short PruneFL run on the real digits (IP, then reconfigurations at rounds 2 and 4), read back as
    # the reference
    common = ["data.dataset=digits", "data.partition=iid", "data.num_clients=3", "clients_per_round=3",
              "model.name=mlp", "timing.preset=uniform", "rounds=6", "eval_every=3", "lr=0.25", "threads=1"]
    prunefl = load_config(None, [*common, "method=prunefl", "reconfig_interval=2", "first_reconfig_round=2",
                                 "ip_interval=3", "ip_check_every=2", "ip_max_rounds=12", "ip_batches=3"])
    run_experiment(prunefl, tmp_path / "prunefl", plots=False)
    reference = load_reference_run(tmp_path / "prunefl")
    assert reference.masks is not None and reference.init_state is not None and reference.density is not None
    assert reference.density < 1.0  # IP and reconfiguration pruned something
    layer_density = layer_densities(reference.masks)
    finals = {}
    for name in ("reinit", "random-reinit"):
        config = load_config(None, [*common, f"method={name}"])
        # Execute
        result = run_experiment(config, tmp_path / name, plots=False, reference=reference)
        # Assert: the reference's mask from round 0 to the end (metrics.jsonl and the checkpoint)
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert [r[K.K_ROUND] for r in rows] == list(range(6)) and all(r[K.K_RECONFIG] is None for r in rows)
        assert [r[K.K_DENSITY] for r in rows] == pytest.approx([reference.density] * 6, abs=1e-12)
        assert all(r[K.K_LAYER_DENSITY] == pytest.approx(layer_density, abs=1e-12) for r in rows)
        state, masks, _, _, extra = load_checkpoint(tmp_path / name)
        assert {n: m.tolist() for n, m in masks.items()} == {n: m.tolist() for n, m in reference.masks.items()}
        # the checkpoint's initial weights are the initialisation the run really started from
        saved_init = {k[len("init/"):]: v for k, v in extra.items() if k.startswith("init/")}
        started_from = reference.init_state if name == "reinit" else build_model_state(config, DATASET, config.seed + 1)[1]
        assert all(torch.equal(saved_init[k], v) for k, v in started_from.items())
        assert all(bool((state[n][~m] == 0).all()) for n, m in masks.items())  # pruned weights never came back
        assert result.summary[K.K_REFERENCE_SOURCE] == str(tmp_path / "prunefl")
        assert rows[-1][K.K_TEST_ACCURACY] > 0.3  # 10 classes (chance 0.1): the fixed sparse model learns
        finals[name] = state
    assert not torch.equal(finals["reinit"]["fc1.weight"], finals["random-reinit"]["fc1.weight"])
