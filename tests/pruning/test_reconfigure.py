"""Reconfiguration on hand-worked tiny instances, its validation, and its invariants (spec §3.3–3.4, §3.10).

Unless stated otherwise, the time model charges t_l = 1 s per weight (a = 0, b = 1, K = 1) so that ρ = s and the
running ratio is "total importance / number of weights (+ c)", easy to follow by hand.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reconfigure_cases import Case, cases, caps, deltas

from prunefl.errors import ConfigError
from prunefl.pruning import reconfigure, reconfigure_reference
from prunefl.timing import TimeModel

# The module, not the function of the same name that prunefl.pruning re-exports.
reconfigure_module = importlib.import_module("prunefl.pruning.reconfigure")


def one_weight_per_second(*names: str, constant_s: float = 0.0) -> TimeModel:
    """t_l = 1 s per weight for every layer; c = ``constant_s`` (K = 1)."""
    return TimeModel(names, (0.0,) * len(names), constant_s, 1.0)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def b(*values: int) -> torch.Tensor:
    return torch.tensor([bool(v) for v in values])


def test_reconfigure_removes_at_most_q_and_keeps_ties_at_tau() -> None:
    # Prepare: all 5 in use, δ = 0.4 -> q = ⌊2.0⌋ = 2. Ascending |w| = 0.1, 0.5, 0.5, 0.9, 2.0, so τ = element 2
    # = 0.5 and only |w| = 0.1 is below it: the two 0.5s tie at τ and stay. s = 0 at the removed weight, so
    # ρ = 0 cannot beat S0/T0 = 4/4 and it is not re-added.
    tm = one_weight_per_second("w")
    # Execute
    out = reconfigure({"w": t(0.1, -0.5, 0.5, 0.9, -2.0)}, {"w": b(1, 1, 1, 1, 1)}, {"w": t(0, 1, 1, 1, 1)}, tm, 1, 0.4)
    # Assert
    assert out.masks["w"].tolist() == [False, True, True, True, True]
    assert out.removed == {"w": 1}
    assert out.added == {"w": 0}


def test_reconfigure_q_zero_removes_nothing() -> None:
    # Prepare: 3 in use, δ = 0.3 -> q = ⌊0.9⌋ = 0, so even the tiny weight with zero importance stays.
    tm = one_weight_per_second("w")
    # Execute
    out = reconfigure({"w": t(1e-9, 1.0, 2.0)}, {"w": b(1, 1, 1)}, {"w": t(0, 0, 0)}, tm, 1, 0.3)
    # Assert
    assert out.masks["w"].tolist() == [True, True, True]
    assert out.removed == {"w": 0}


def test_reconfigure_empty_layers_do_not_crash() -> None:
    # Prepare: layer "a" has no weights at all; layer "b" has none in use (τ undefined in the official code).
    # c = 1, S_fix = 0: S0/T0 = 0/1. In "b", ρ = 3 beats 0 -> add (3/2); ρ = 0 does not.
    tm = one_weight_per_second("a", "b", constant_s=1.0)
    weights = {"a": torch.zeros(0), "b": t(0.5, 0.7)}
    masks = {"a": torch.zeros(0, dtype=torch.bool), "b": b(0, 0)}
    importance = {"a": torch.zeros(0), "b": t(3, 0)}
    # Execute
    out = reconfigure(weights, masks, importance, tm, 1, 0.3)
    # Assert
    assert out.masks["a"].shape == (0,)
    assert out.masks["b"].tolist() == [True, False]
    assert out.kept_before == {"a": 0, "b": 0}
    assert out.kept_after == {"a": 0, "b": 1}


def test_reconfigure_candidate_equal_to_ratio_is_not_added() -> None:
    # Prepare: must keep s = 4 (|w| = 9, δ = 0); the pruned candidate has ρ = 4 = S0/T0 = 4/1.
    # The official test is strict (ρ·T > S): 4·1 > 4 is false, so the mask does not change.
    tm = one_weight_per_second("w")
    # Execute
    out = reconfigure({"w": t(9, 0)}, {"w": b(1, 0)}, {"w": t(4, 4)}, tm, 1, 0.0)
    # Assert
    assert out.masks["w"].tolist() == [True, False]
    assert out.objective_after == out.objective_before == 4.0


def test_reconfigure_fixed_importance_raises_the_bar_for_additions() -> None:
    # Prepare: c = 1, must keep s = 2 -> T0 = 2. Candidate ρ = 3.
    #   S_fix = 0: S0/T0 = 2/2 = 1 < 3 -> added.      S_fix = 5: S0/T0 = 7/2 = 3.5 ≥ 3 -> not added.
    tm = one_weight_per_second("w", constant_s=1.0)
    args = ({"w": t(9, 0)}, {"w": b(1, 0)}, {"w": t(2, 3)}, tm, 1, 0.0)
    # Execute
    without = reconfigure(*args, fixed_importance=0.0)
    with_fix = reconfigure(*args, fixed_importance=5.0)
    # Assert
    assert without.masks["w"].tolist() == [True, True]
    assert with_fix.masks["w"].tolist() == [True, False]
    assert with_fix.objective_after == pytest.approx(3.5)


def test_reconfigure_reports_counts_objectives_and_densities() -> None:
    # Prepare: the docstring example. IU = {0, 1, 2}, δ = 0.7 -> q = 2, ascending |w| = 1, 2, 3 -> τ = 3:
    # A = {0} (s = 4), Cdec = {1, 2}, Cinc = {3}. S0/T0 = 4/1. ρ order 6 (idx 1), 5.5 (idx 3), 1 (idx 2):
    # 6 > 4 -> 10/2; 5.5 > 5 -> 15.5/3; 1 < 5.17 stops. idx 1 is re-added (not counted), idx 2 removed,
    # idx 3 regrown. Before: (4 + 6 + 1)/3 = 11/3.
    tm = one_weight_per_second("w")
    # Execute
    out = reconfigure({"w": t(3, 1, 2, 0)}, {"w": b(1, 1, 1, 0)}, {"w": t(4, 6, 1, 5.5)}, tm, 1, 0.7)
    # Assert
    assert out.masks["w"].tolist() == [True, True, False, True]
    assert (out.removed, out.added) == ({"w": 1}, {"w": 1})
    assert (out.kept_before, out.kept_after) == ({"w": 3}, {"w": 3})
    assert out.objective_before == pytest.approx(11 / 3, rel=1e-15)
    assert out.objective_after == pytest.approx(15.5 / 3, rel=1e-15)
    assert (out.density_before, out.density_after) == (0.75, 0.75)
    assert out.max_decrease == 0.7
    assert out.density_cap is None


def test_reconfigure_delta_one_may_empty_a_layer() -> None:
    # Prepare: δ = 1 -> q = 3 = |IU|: element q does not exist, every in-use weight is a candidate. s = 0
    # everywhere, so nothing comes back (c = 1 keeps T0 > 0).
    tm = one_weight_per_second("w", constant_s=1.0)
    # Execute
    out = reconfigure({"w": t(1, 2, 3)}, {"w": b(1, 1, 1)}, {"w": t(0, 0, 0)}, tm, 1, 1.0)
    # Assert
    assert out.masks["w"].tolist() == [False, False, False]
    assert out.removed == {"w": 3}


def test_reconfigure_cap_exact_and_legacy_off_by_one() -> None:
    # Prepare: |J| = 10, 2 in use and kept (δ = 0), 8 candidates all far above the ratio. D = 0.3 -> ⌊D·|J|⌋ = 3.
    # Exact: 3 − 2 = 1 addition (the largest s). Legacy ("count > cap" before each addition): 2 additions.
    tm = one_weight_per_second("w", constant_s=1.0)
    weights = {"w": t(5, 5, 0, 0, 0, 0, 0, 0, 0, 0)}
    masks = {"w": b(1, 1, 0, 0, 0, 0, 0, 0, 0, 0)}
    importance = {"w": t(1, 1, 10, 90, 80, 70, 60, 50, 40, 30)}
    # Execute
    exact = reconfigure(weights, masks, importance, tm, 1, 0.0, density_cap=0.3)
    legacy = reconfigure(weights, masks, importance, tm, 1, 0.0, density_cap=0.3, legacy_cap_off_by_one=True)
    # Assert
    assert exact.masks["w"].tolist() == [True, True, False, True] + [False] * 6
    assert legacy.masks["w"].tolist() == [True, True, False, True, True] + [False] * 5
    assert (exact.density_after, legacy.density_after) == (0.3, 0.4)


def test_reconfigure_cap_breaks_ties_by_layer_index_then_flat_index() -> None:
    # Prepare: equal t in both layers. Candidates: a[0] = a[1] = 5, b[0] = 5, b[1] = 7; kept a[2], b[2] (s = 1).
    # Uncapped all four go in (7 -> 9/4, then each 5 > ratio). D = 0.7 -> ⌊4.2⌋ − 2 = 2 additions: ρ = 7 (b[1]),
    # then the first ρ = 5 in (layer, flat index) order = a[0]. Layer order is the time model's, not the dicts'.
    tm = one_weight_per_second("a", "b", constant_s=1.0)
    weights = {"b": t(0, 0, 1), "a": t(0, 0, 1)}
    masks = {"b": b(0, 0, 1), "a": b(0, 0, 1)}
    importance = {"b": t(5, 7, 1), "a": t(5, 5, 1)}
    # Execute
    capped = reconfigure(weights, masks, importance, tm, 1, 0.0, density_cap=0.7)
    uncapped = reconfigure(weights, masks, importance, tm, 1, 0.0)
    # Assert
    assert capped.masks["a"].tolist() == [True, False, True]
    assert capped.masks["b"].tolist() == [False, True, True]
    assert uncapped.kept_after == {"a": 3, "b": 3}


def test_reconfigure_cap_below_current_density_adds_nothing_but_removal_is_still_bounded() -> None:
    # Prepare: all 4 in use, D = 0.25 -> cap 1, but δ = 0.5 removes only q = 2 (the smallest |w|): the density
    # stays above the cap (spec §3.10) and no candidate may come back.
    tm = one_weight_per_second("w", constant_s=1.0)
    # Execute
    out = reconfigure({"w": t(1, 2, 3, 4)}, {"w": b(1, 1, 1, 1)}, {"w": t(9, 9, 1, 1)}, tm, 1, 0.5, density_cap=0.25)
    # Assert
    assert out.masks["w"].tolist() == [False, False, True, True]
    assert out.density_after == 0.5


def test_reconfigure_preserves_shapes_devices_and_does_not_modify_inputs() -> None:
    # Prepare
    tm = one_weight_per_second("conv", constant_s=1.0)
    weights = {"conv": torch.arange(12, dtype=torch.float32).reshape(2, 2, 3) - 6}
    masks = {"conv": (torch.arange(12) % 3 != 0).reshape(2, 2, 3)}
    importance = {"conv": torch.linspace(0, 2, 12).reshape(2, 2, 3)}
    before = {k: (weights[k].clone(), masks[k].clone(), importance[k].clone()) for k in weights}
    # Execute
    out = reconfigure(weights, masks, importance, tm, 1, 0.3)
    # Assert
    assert out.masks["conv"].shape == (2, 2, 3)
    assert out.masks["conv"].dtype == torch.bool
    assert out.masks["conv"].device == masks["conv"].device
    assert out.masks["conv"] is not masks["conv"]
    for k, (w0, m0, s0) in before.items():
        assert torch.equal(weights[k], w0) and torch.equal(masks[k], m0) and torch.equal(importance[k], s0)


def test_reconfigure_accepts_parameters_that_require_grad() -> None:
    # Prepare: weights straight from named_parameters() (the IP caller does this)
    layer = torch.nn.Linear(4, 3)
    tm = one_weight_per_second("weight", constant_s=1.0)
    # Execute
    out = reconfigure({"weight": layer.weight}, {"weight": torch.ones(3, 4, dtype=torch.bool)},
                      {"weight": torch.rand(3, 4)}, tm, 1, 0.3)
    # Assert: 3 of 12 removed at most
    assert 9 <= out.kept_after["weight"] <= 12


def test_reconfigure_float32_and_float64_importance_agree() -> None:
    # Prepare: float32 values are exact in float64, so the decision must not depend on the storage dtype
    tm = one_weight_per_second("w", constant_s=0.5)
    w, m = t(3, 1, 2, 0, 4, 0), b(1, 1, 1, 0, 1, 0)
    s32 = t(4, 6, 1, 5.5, 0.25, 7)
    # Execute
    out32 = reconfigure({"w": w}, {"w": m}, {"w": s32}, tm, 1, 0.5)
    out64 = reconfigure({"w": w}, {"w": m}, {"w": s32.double()}, tm, 1, 0.5)
    # Assert
    assert torch.equal(out32.masks["w"], out64.masks["w"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reconfigure_low_precision_tensors_match_reference(dtype: torch.dtype) -> None:
    # Prepare: small integers and halves are exact in both dtypes (bfloat16 also exercises the kthvalue branch)
    tm = one_weight_per_second("w", constant_s=1.0)
    kwargs = dict(weights={"w": t(3, 1, 2, 0, 5, -4).to(dtype)}, masks={"w": b(1, 1, 1, 0, 1, 1)},
                  importance={"w": t(4, 6, 1, 5.5, 0.25, 7).to(dtype)}, time_model=tm, local_steps=1, max_decrease=0.5)
    # Execute
    out, ref = reconfigure(**kwargs), reconfigure_reference(**kwargs)
    # Assert: q = ⌊2.5⌋ = 2, τ = 3: A = {3, 5, −4}, S0/T0 = (4 + 0.25 + 7)/(1 + 3) = 11.25/4. ρ = 6 (|w| = 1)
    # comes back -> 17.25/5; ρ = 5.5 regrows -> 22.75/6 ≈ 3.79; ρ = 1 (|w| = 2) stays out.
    assert out.masks["w"].tolist() == ref.masks["w"].tolist() == [True, True, False, True, True, True]


@settings(max_examples=60, deadline=None)
@given(case=cases(), delta=deltas, cap=caps, legacy=st.booleans())
def test_reconfigure_torch_code_path_matches_numpy_code_path(
    case: Case, delta: float, cap: float | None, legacy: bool
) -> None:
    # Prepare: GPUs run the torch spelling of every helper; run it on CPU tensors here and compare
    kwargs = case.kwargs(max_decrease=delta, density_cap=cap, legacy_cap_off_by_one=legacy)
    try:
        on_numpy = reconfigure(**kwargs)
    except ConfigError:
        return  # degenerate instance, refused by both paths alike
    # Execute
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reconfigure_module, "_CPU_BACKEND", "torch")
        on_torch = reconfigure(**kwargs)
    # Assert
    assert all(torch.equal(on_torch.masks[n], on_numpy.masks[n]) for n in case.masks)
    assert on_torch.objective_after == pytest.approx(on_numpy.objective_after, rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reconfigure_on_cuda_matches_cpu() -> None:
    # Prepare: the torch.nonzero / torch.kthvalue branches run on the device
    case = Case(
        weights={"w": torch.randn(5000, generator=torch.Generator().manual_seed(1))},
        masks={"w": torch.rand(5000, generator=torch.Generator().manual_seed(2)) < 0.3},
        importance={"w": torch.rand(5000, generator=torch.Generator().manual_seed(3)) ** 6},
        time_model=TimeModel(("w",), (1e-6,), 0.5, 1e-6),
        local_steps=5,
        fixed_importance=0.1,
    )
    on_gpu = Case({k: v.cuda() for k, v in case.weights.items()}, {k: v.cuda() for k, v in case.masks.items()},
                  {k: v.cuda() for k, v in case.importance.items()}, case.time_model, 5, 0.1)
    # Execute
    cpu = reconfigure(**case.kwargs(max_decrease=0.3, density_cap=0.3))
    gpu = reconfigure(**on_gpu.kwargs(max_decrease=0.3, density_cap=0.3))
    # Assert
    assert gpu.masks["w"].device.type == "cuda"
    assert torch.equal(gpu.masks["w"].cpu(), cpu.masks["w"])


def test_reconfigure_newton_fallback_sort_gives_same_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: forbid Newton steps so that the optimal ratio comes from the sort-and-scan safety net
    case = Case(
        weights={"w": torch.randn(200, generator=torch.Generator().manual_seed(1))},
        masks={"w": torch.rand(200, generator=torch.Generator().manual_seed(2)) < 0.4},
        importance={"w": torch.rand(200, generator=torch.Generator().manual_seed(3)) ** 4},
        time_model=TimeModel(("w",), (1e-6,), 0.5, 1e-6),
        local_steps=5,
        fixed_importance=0.1,
    )
    expected = reconfigure_reference(**case.kwargs(max_decrease=0.3))
    monkeypatch.setattr(reconfigure_module, "_MAX_NEWTON_STEPS", 0)
    # Execute
    out = reconfigure(**case.kwargs(max_decrease=0.3))
    # Assert
    assert torch.equal(out.masks["w"], expected.masks["w"])


# --- validation --------------------------------------------------------------------------------------------


def _valid() -> dict:
    return dict(
        weights={"w": t(1, 2, 3)},
        masks={"w": b(1, 1, 0)},
        importance={"w": t(1, 1, 1)},
        time_model=one_weight_per_second("w", constant_s=1.0),
        local_steps=1,
        max_decrease=0.3,
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(weights={}), "weights must have exactly"),  # layer missing from weights
        (dict(importance={"w": t(1, 1, 1), "bias": t(1)}), "unknown \\['bias'\\]"),  # extra, non-prunable key
        (dict(masks={"w": t(1, 1, 0)}), "must be torch.bool"),  # float 0/1 mask
        (dict(importance={"w": t(1, 1)}), "shapes of 'w' differ"),  # shape mismatch
        (dict(importance={"w": torch.tensor([1, 1, 1])}), "floating point"),  # integer importance
        (dict(importance={"w": t(1, -1, 1)}), "finite and >= 0"),  # negative importance
        (dict(importance={"w": t(1, math.nan, 1)}), "finite and >= 0"),  # NaN importance
        (dict(weights={"w": t(1, math.nan, 3)}, max_decrease=0.5), "non-finite"),  # NaN weight, q = 1 ranks it
        (dict(max_decrease=1.5), "max_decrease must be in \\[0, 1\\]"),  # δ above 1
        (dict(max_decrease=-0.1), "max_decrease"),  # δ below 0
        (dict(density_cap=0.0), "density_cap must be in \\(0, 1\\]"),  # zero cap
        (dict(density_cap=1.5), "density_cap"),  # cap above 1
        (dict(fixed_importance=-1.0), "fixed_importance"),  # negative S_fix
        (dict(local_steps=0), "local_steps"),  # no local step
        (dict(masks={"w": b(1, 1, 0).to("meta")}), "one device"),  # mask on another device than its weights
        (dict(time_model=TimeModel(("w",), (0.0,), 1.0, 0.0)), "t_l = K·a_l \\+ b must be > 0"),  # free weights
        (dict(time_model=TimeModel(("w",), (0.0,), 0.0, 1.0), max_decrease=1.0), "round time of the must-keep set"),
    ],
)
def test_reconfigure_rejects_invalid_input(change: dict, message: str) -> None:
    # Prepare
    kwargs = _valid()
    kwargs.update(change)
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        reconfigure(**kwargs)


# --- invariants ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(case=cases(), delta=deltas, cap=caps, legacy=st.booleans())
def test_reconfigure_invariants(case: Case, delta: float, cap: float | None, legacy: bool) -> None:
    # Prepare
    kwargs = case.kwargs(max_decrease=delta, density_cap=cap, legacy_cap_off_by_one=legacy)
    try:
        # Execute
        out = reconfigure(**kwargs)
    except ConfigError as err:
        # Only the degenerate "nothing kept and no constant time" case may be refused.
        assert "round time of the must-keep set" in str(err)
        return
    # Assert
    for name, old in case.masks.items():
        new = out.masks[name]
        n_in_use = int(old.sum())
        q = math.floor(delta * n_in_use)
        removed_now = int((old & ~new).sum())
        added_now = int((~old & new).sum())
        assert new.dtype == torch.bool and new.shape == old.shape
        assert out.removed[name] == removed_now <= q  # removals come from IU and are bounded by q_l
        assert out.added[name] == added_now
        assert out.kept_before[name] == n_in_use
        assert out.kept_after[name] == int(new.sum()) == n_in_use - removed_now + added_now
    if cap is None:
        # The old mask is a superset of A, so the optimum over supersets of A is at least as good (§3.4).
        assert out.objective_after >= out.objective_before * (1 - 1e-12)
