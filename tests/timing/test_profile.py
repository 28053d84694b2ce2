"""Tests for prunefl.timing.profile and the ``prunefl profile`` subcommand: fit, file round trip, measurement."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from prunefl.errors import ConfigError
from prunefl.models import MODEL_NAMES
from prunefl.sparse import native
from prunefl.sparse.masks import get_masks, prunable_parameters
from prunefl.timing.model import TimeModel
from prunefl.timing.profile import (
    PROFILE_FORMAT,
    Measurement,
    ProfileSettings,
    StepFn,
    fit_time_model,
    load_profile,
    load_profile_break_even,
    measure_step_times,
    prunable_sizes,
    save_profile,
)
from prunefl.timing import profile_cli
from prunefl.timing.profile_cli import add_profile_parser, default_profile_path

LAYERS = ("conv.weight", "fc1.weight", "fc2.weight")


def make_rows(tm: TimeModel, kept_rows: np.ndarray, noise_s: np.ndarray) -> list[Measurement]:
    """Measurements whose medians are ``tm``'s compute time per step plus the given noise."""
    rows = []
    for counts, noise in zip(kept_rows, noise_s, strict=True):
        kept = {n: int(c) for n, c in zip(tm.layer_names, counts, strict=True)}
        step_s = tm.compute_time_s(kept, local_steps=1) + float(noise)
        rows.append(Measurement(dict.fromkeys(tm.layer_names, 1.0), kept, step_s))
    return rows


def saved_profile(tmp_path: Path) -> tuple[Path, TimeModel]:
    """Write a profile fitted exactly to t0 = 0.5, a = (1e-3, 0, 2e-3), b = 8.25e-6; return its path and model."""
    tm = TimeModel(LAYERS, (1e-3, 0.0, 2e-3), 0.5, 8.25e-6)
    kept = np.array([[10, 20, 30], [40, 10, 0], [0, 0, 5], [7, 7, 7], [100, 3, 50]])
    fit = fit_time_model(make_rows(tm, kept, np.zeros(len(kept))), LAYERS, 8.25e-6)
    return save_profile(tmp_path / "p.json", fit, ProfileSettings("mlp")), fit.time_model


# ---------------------------------------------------------------------------------------------------------------
# Fit


def test_fit_recovers_known_coefficients_from_noisy_measurements() -> None:
    # Prepare: 40 random configurations of layers with up to 1e5 weights; 0.1 ms of Gaussian timing noise
    truth = TimeModel(LAYERS, (2e-6, 0.0, 5e-7), 0.3, 8.25e-6)
    rng = np.random.default_rng(0)
    kept = rng.integers(0, 100_000, size=(40, 3))
    rows = make_rows(truth, kept, rng.normal(0.0, 1e-4, size=40))
    # Execute
    fit = fit_time_model(rows, LAYERS, comm_s_per_weight=8.25e-6)
    # Assert: the standard error of each a_l is ~1e-4 s / (3e4 weights · √40) ≈ 5e-10, of t0 ~1e-4 s; tolerances
    # are 20x that, far from the size of the coefficients themselves
    a = fit.compute_s_per_weight_per_step
    assert a["conv.weight"] == pytest.approx(2e-6, abs=1e-8)
    assert a["fc2.weight"] == pytest.approx(5e-7, abs=1e-8)
    assert 0.0 <= a["fc1.weight"] <= 1e-8  # the zero coefficient stays (near) zero and never goes negative
    assert fit.constant_s_per_step == pytest.approx(0.3, abs=2e-3)
    assert fit.r_squared > 0.999
    assert fit.rmse_s < 2e-4  # about the noise level
    assert fit.time_model.comm_s_per_weight == 8.25e-6


def test_fit_clamps_a_layer_whose_time_falls_with_its_kept_count_to_zero() -> None:
    # Prepare: step time 1.0, 0.9, 0.8 s at 0, 10, 20 kept: least squares would give a = -0.01 s per weight
    rows = [Measurement({"w": 1.0}, {"w": n}, t) for n, t in ((0, 1.0), (10, 0.9), (20, 0.8))]
    # Execute
    fit = fit_time_model(rows, ["w"], comm_s_per_weight=0.0)
    # Assert: by hand, with a = 0 the best t0 is the mean 0.9; residuals ±0.1, 0 so RMSE = √(0.02/3); R² = 0
    assert fit.compute_s_per_weight_per_step["w"] == 0.0
    assert fit.constant_s_per_step == pytest.approx(0.9)
    assert fit.rmse_s == pytest.approx(math.sqrt(0.02 / 3))
    assert fit.r_squared == pytest.approx(0.0, abs=1e-12)


def test_fit_refits_other_layers_after_clamping_one() -> None:
    # Prepare: t = 1 + 0.01·n1 − 0.005·n2 exactly; n2 is independent of n1 (the rows form a full grid)
    grid = [(n1, n2) for n1 in (0, 10, 20) for n2 in (0, 10, 20)]
    rows = [Measurement({"a": 1.0, "b": 1.0}, {"a": n1, "b": n2}, 1 + 0.01 * n1 - 0.005 * n2) for n1, n2 in grid]
    # Execute
    fit = fit_time_model(rows, ["a", "b"], comm_s_per_weight=0.0)
    # Assert: with b clamped, the balanced grid makes n2's effect average out: a = 0.01, t0 = 1 − 0.005·10 = 0.95
    a = fit.compute_s_per_weight_per_step
    assert a["b"] == 0.0
    assert a["a"] == pytest.approx(0.01)
    assert fit.constant_s_per_step == pytest.approx(0.95)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.integers(4, 10))
def test_fit_matches_brute_force_nonnegative_least_squares(seed: int, n_rows: int) -> None:
    # Prepare: arbitrary counts and times, so negative unconstrained coefficients are common
    rng = np.random.default_rng(seed)
    kept = rng.integers(0, 1000, size=(n_rows, 3))
    times = rng.uniform(0.0, 2.0, size=n_rows)
    rows = [
        Measurement(dict.fromkeys(LAYERS, 1.0), dict(zip(LAYERS, map(int, k), strict=True)), float(t))
        for k, t in zip(kept, times, strict=True)
    ]
    design = np.column_stack([np.ones(n_rows), kept.astype(np.float64)])
    # The NNLS optimum is the best unconstrained least-squares fit, over all column subsets, that is non-negative
    best = float(np.sum(times**2))  # empty subset: all coefficients zero
    for size in range(1, 5):
        for subset in itertools.combinations(range(4), size):
            coef = np.linalg.lstsq(design[:, subset], times, rcond=None)[0]
            if (coef >= 0).all():
                best = min(best, float(np.sum((design[:, subset] @ coef - times) ** 2)))
    # Execute
    fit = fit_time_model(rows, LAYERS, comm_s_per_weight=0.0)
    # Assert: same residual up to float64 round-off (relative 1e-6 of the sum of squares, plus an absolute floor)
    assert fit.rmse_s**2 * n_rows == pytest.approx(best, rel=1e-6, abs=1e-12)
    assert min(fit.time_model.compute_s_per_weight_per_step) >= 0.0
    assert fit.constant_s_per_step >= 0.0


def test_fit_with_fewer_measurements_than_unknowns_raises() -> None:
    rows = [Measurement(dict.fromkeys(LAYERS, 1.0), dict.fromkeys(LAYERS, 1), 1.0)] * 3  # 4 unknowns
    with pytest.raises(ConfigError, match="at least 4 measurements"):
        fit_time_model(rows, LAYERS, comm_s_per_weight=0.0)


def test_fit_with_measurement_of_other_layers_raises() -> None:
    rows = [Measurement({"x": 1.0}, {"x": n}, 1.0) for n in range(5)]
    with pytest.raises(ConfigError, match="missing"):
        fit_time_model(rows, ["w"], comm_s_per_weight=0.0)


# ---------------------------------------------------------------------------------------------------------------
# Settings


def test_settings_defaults_follow_the_models_data_set() -> None:
    assert (ProfileSettings("conv2").num_classes, ProfileSettings("conv2").input_shape) == (10, (1, 28, 28))
    assert (ProfileSettings("conv4").num_classes, ProfileSettings("conv4").input_shape) == (2, (3, 84, 84))
    assert (ProfileSettings("resnet18").num_classes, ProfileSettings("resnet18").input_shape) == (100, (3, 64, 64))
    assert ProfileSettings("resnet18", input_shape=(3, 168, 168)).input_shape == (3, 168, 168)


def test_comm_coefficient_counts_four_bytes_and_a_mask_bit_each_way() -> None:
    # 4.125 B / 1e6 B/s up + 4.125 B / 1e6 B/s down = 8.25e-6 s; with 0.5 MB/s up: 8.25e-6 + 4.125e-6
    assert ProfileSettings("mlp").comm_s_per_weight == pytest.approx(8.25e-6)
    assert ProfileSettings("mlp", uplink_bytes_per_s=5e5).comm_s_per_weight == pytest.approx(1.2375e-5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"model": "gpt2"}, "model must be one of"),  # unknown model
        ({"model": "mlp", "densities": (1.0, 1.5)}, "densities"),  # a density above 1
        ({"model": "mlp", "densities": ()}, "densities"),  # nothing to sample
        ({"model": "mlp", "densities": (0.0,)}, "one > 0"),  # only empty models
        ({"model": "mlp", "repeats": 0}, "repeats"),  # no timed step, no median
        ({"model": "mlp", "repeats": 3, "passes": 4}, "repeats must be >= passes"),  # a visit with no timed step
        ({"model": "mlp", "batch_size": 0}, "batch_size"),  # empty batch
        ({"model": "mlp", "threads": -1}, "threads"),  # negative thread count
        ({"model": "mlp", "n_configs": 2.5}, "n_configs"),  # a count must be an int
        ({"model": "mlp", "uplink_bytes_per_s": 0.0}, "uplink_bytes_per_s"),  # infinite transfer time
        ({"model": "mlp", "input_shape": (1, 8)}, "input_shape"),  # not (C, H, W)
    ],
)
def test_settings_reject_bad_values(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ProfileSettings(**options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Profile file


def test_save_then_load_gives_an_equal_time_model(tmp_path: Path) -> None:
    # Prepare
    path, expected = saved_profile(tmp_path)
    # Execute
    loaded = load_profile(path, LAYERS)
    # Assert: JSON floats round-trip exactly (repr), so equality is exact
    assert loaded == expected
    record = json.loads(path.read_text())
    assert (record["format"], record["version"], record["model"]) == (PROFILE_FORMAT, 1, "mlp")
    assert len(record["measurements"]) == 5 and record["fit"]["r_squared"] == pytest.approx(1.0)
    assert {"torch_version", "threads", "cpu_model"} <= set(record["environment"])


def test_load_with_other_layer_names_raises_naming_both(tmp_path: Path) -> None:
    path, _ = saved_profile(tmp_path)
    with pytest.raises(ConfigError, match=r"fc2\.weight.*other\.weight|other\.weight.*fc2\.weight"):
        load_profile(path, ["conv.weight", "fc1.weight", "other.weight"])


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: {**r, "format": "something-else"}, "format"),  # another tool's JSON
        (lambda r: {**r, "version": 2}, "version"),  # a newer layout
        (lambda r: [r], "JSON object"),  # not an object at all
        (lambda r: {k: v for k, v in r.items() if k != "constant_s_per_step"}, "constant_s_per_step"),  # t0 missing
        (lambda r: {**r, "comm_s_per_weight": -1.0}, "invalid time model"),  # negative b
        (lambda r: {**r, "compute_s_per_weight_per_step": [1.0]}, "invalid time model"),  # one a_l for three layers
    ],
)
def test_load_malformed_profile_raises_naming_the_path(
    tmp_path: Path, edit: Callable[[dict[str, Any]], object], match: str
) -> None:
    # Prepare
    path, _ = saved_profile(tmp_path)
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    # Execute / Assert
    with pytest.raises(ConfigError, match=match) as info:
        load_profile(path, LAYERS)
    assert str(path) in str(info.value)


def test_load_corrupt_json_raises_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"format": "prunefl-profile", ')  # cut short
    with pytest.raises(ConfigError, match="not valid JSON") as info:
        load_profile(path, LAYERS)
    assert str(path) in str(info.value)


def test_load_missing_file_raises_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="not found") as info:
        load_profile(path, LAYERS)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# Measurement


def test_measure_calls_the_step_on_masked_weights_burn_in_plus_repeats_times() -> None:
    # Prepare: a step builder that records what it sees instead of training
    seen: list[dict[str, int]] = []
    positions: dict[str, set[int]] = {}  # kept-index checksum per visit, keyed by the kept counts
    calls: list[int] = []

    def recording_step(model: nn.Module) -> StepFn:
        masks = get_masks(model)
        # weights must be zero wherever the mask is off when the builder runs
        for name, p in prunable_parameters(model):
            assert not p[~masks[name]].any()
        seen.append({name: int(m.sum()) for name, m in masks.items()})
        checksum = sum(int(m.flatten().nonzero().sum()) for m in masks.values())
        positions.setdefault(str(seen[-1]), set()).add(checksum)
        calls.append(0)

        def step(x: Tensor, y: Tensor) -> None:
            assert x.shape == (5, 1, 8, 8) and y.shape == (5,)
            calls[-1] += 1

        return step

    s = ProfileSettings(
        "mlp", batch_size=5, densities=(1.0, 0.5, 0.1), n_configs=4, repeats=3, passes=2, burn_in=2, seed=7
    )
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    sizes = prunable_sizes(s)
    # Execute
    rows = measure_step_times(s, step=recording_step)
    # Assert: 3 equal + 4 random configurations, each visited twice: 2 burn-in + 2 timed, then 2 + 1
    assert len(rows) == 7 and sorted(calls) == [3] * 7 + [4] * 7
    assert all(len(r.samples_s) == 3 and r.median_step_s >= 0 for r in rows)
    assert sorted(map(str, seen)) == sorted(map(str, [r.kept for r in rows] * 2))  # reported = stepped masks
    for row in rows:
        assert row.kept == {n: round(row.densities[n] * sizes[n]) for n in sizes}  # exact count per layer
    # both visits of a configuration use the same masks (configurations with equal counts share a key)
    assert all(len(sums) <= sum(str(r.kept) == key for r in rows) for key, sums in positions.items())
    # every density has its all-equal configuration (a random one may happen to be all-equal too)
    assert {d for r in rows if len(set(r.densities.values())) == 1 for d in r.densities.values()} == {0.1, 0.5, 1.0}
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global generator is left alone
    assert torch.get_num_threads() == threads_before


def test_measure_is_reproducible_for_one_seed() -> None:
    # Prepare: the same settings twice, with a step that does nothing (only the masks matter)
    s = ProfileSettings("mlp", n_configs=3, repeats=1, passes=1, burn_in=0, seed=3)

    def noop(model: nn.Module) -> StepFn:
        return lambda x, y: None

    # Execute
    first, second = measure_step_times(s, step=noop), measure_step_times(s, step=noop)
    # Assert
    assert [r.kept for r in first] == [r.kept for r in second]
    assert [r.densities for r in first] == [r.densities for r in second]


def test_measure_with_fewer_configurations_than_unknowns_raises() -> None:
    # mlp has 2 prunable layers, so 3 unknowns; 1 equal + 1 random configuration is too few
    s = ProfileSettings("mlp", densities=(1.0,), n_configs=1)
    with pytest.raises(ConfigError, match="at least 3 configurations"):
        measure_step_times(s, step=lambda model: (lambda x, y: None))


@pytest.mark.slow
def test_real_measurement_on_digits_cnn_gives_positive_t0(tmp_path: Path) -> None:
    # Prepare: a tiny real profile (7 configurations x 2 timed steps of ~1 ms), single-threaded
    s = ProfileSettings("digits-cnn", threads=1, n_configs=3, repeats=2, burn_in=1)
    # Execute
    rows = measure_step_times(s)
    fit = fit_time_model(rows, list(prunable_sizes(s)), s.comm_s_per_weight)
    # Assert: dense kernels do the same work at every density, so the intercept carries the step time
    assert len(rows) == 7 and all(r.median_step_s > 0 for r in rows)
    assert fit.constant_s_per_step > 0
    assert fit.time_model.layer_names == ("conv1.weight", "conv2.weight", "fc.weight")


# ---------------------------------------------------------------------------------------------------------------
# CLI


def profile_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunefl")
    add_profile_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.slow
def test_cli_profile_writes_the_profile_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    out = tmp_path / "sub" / "mlp.json"
    args = profile_parser().parse_args(
        ["profile", "--model", "mlp", "--threads", "1", "--configs", "2", "--repeats", "3", "--burn-in", "1",
         "--densities", "1,0.25", "--bandwidth", "2e6", "--no-progress", "--out", str(out)]
    )
    # Execute
    code = args.func(args)
    # Assert
    assert code == 0
    record = json.loads(out.read_text())
    assert record["format"] == PROFILE_FORMAT and record["model"] == "mlp"
    assert record["layer_names"] == ["fc1.weight", "fc2.weight"]
    assert len(record["measurements"]) == 4  # 2 equal-density + 2 random
    assert record["settings"]["densities"] == [1.0, 0.25]
    assert all(len(m["samples_s"]) == 3 for m in record["measurements"])  # 2 + 1 over the default 2 passes
    assert record["comm_s_per_weight"] == pytest.approx(2 * 4.125 / 2e6)
    assert record["environment"]["threads"] == 1 and record["meta"]["step"] == "masked_dense_step"
    printed = capsys.readouterr().out
    assert "fc1.weight" in printed and "t0 (s/step)" in printed and "R²" in printed and "all 0.25" in printed
    assert f"profile: {out}" in printed
    assert load_profile(out, ["fc1.weight", "fc2.weight"]).constant_s_per_step == record["constant_s_per_step"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--configs", "many"], "--configs"),  # not an integer
        (["--densities", "1,half"], "--densities"),  # not a number
        (["--densities", "1,2"], "densities"),  # density above 1
        (["--input-shape", "1,8"], "--input-shape"),  # two dimensions
        (["--bandwidth", "fast"], "--bandwidth"),  # not a number
        (["--repeats", "0"], "repeats"),  # no timed step
        (["--repeats", "1", "--passes", "2"], "repeats must be >= passes"),  # the second visit would time nothing
    ],
)
def test_cli_profile_bad_argument_raises_config_error(extra: list[str], match: str, tmp_path: Path) -> None:
    args = profile_parser().parse_args(["profile", "--model", "mlp", "--out", str(tmp_path / "p.json"), *extra])
    with pytest.raises(ConfigError, match=match):
        args.func(args)
    assert not (tmp_path / "p.json").exists()


def test_cli_profile_unknown_model_raises_config_error(tmp_path: Path) -> None:
    args = profile_parser().parse_args(["profile", "--model", "gpt2", "--out", str(tmp_path / "p.json")])
    with pytest.raises(ConfigError, match="model must be one of"):
        args.func(args)


def test_cli_help_defaults_match_profile_settings() -> None:
    # the parser quotes the defaults without importing torch; they must not drift from ProfileSettings
    defaults = {f.name: f.default for f in dataclasses.fields(ProfileSettings)}
    assert {k: defaults[k] for k in profile_cli._HELP_DEFAULTS} == profile_cli._HELP_DEFAULTS
    profile = add_profile_parser(argparse.ArgumentParser().add_subparsers())
    model_help = next(action.help for action in profile._actions if action.dest == "model")
    assert all(name in str(model_help) for name in MODEL_NAMES)


def test_default_profile_path_names_model_and_host() -> None:
    path = default_profile_path("conv2")
    assert path.parent == Path("profiles") and path.name.startswith("conv2-") and path.suffix == ".json"


# ---------------------------------------------------------------------------------------------------------------
# Sparse kernels (--kernels auto)


def test_break_even_table_round_trips_and_is_none_for_a_masked_profile(tmp_path: Path) -> None:
    # Prepare
    fit = fit_time_model([Measurement({"w": 1.0}, {"w": n}, 1.0 + n) for n in (0, 1)], ["w"], 0.0)
    table = {"w": (0.3, 0.05)}
    # Execute
    auto = save_profile(tmp_path / "auto.json", fit, ProfileSettings("mlp"), None, table)
    masked = save_profile(tmp_path / "masked.json", fit, ProfileSettings("mlp"))
    # Assert
    record = json.loads(auto.read_text())
    assert record["kernels"] == "auto"
    assert record["break_even"] == {"w": {"no-dense-grad": 0.3, "dense-grad": 0.05}}
    assert load_profile_break_even(auto) == table
    assert json.loads(masked.read_text())["kernels"] == "masked"
    assert load_profile_break_even(masked) is None
    assert load_profile(auto, ["w"]) == fit.time_model  # the time model reads as before


@pytest.mark.parametrize(
    "table",
    [
        ["w"],  # not an object
        {"w": {"no-dense-grad": 0.3}},  # the dense-grad value is missing
        {"w": {"no-dense-grad": 1.5, "dense-grad": 0.1}},  # a density above 1
        {"w": {"no-dense-grad": "0.3", "dense-grad": 0.1}},  # a string, not a number
    ],
)
def test_load_malformed_break_even_table_raises_naming_the_path(tmp_path: Path, table: object) -> None:
    # Prepare
    fit = fit_time_model([Measurement({"w": 1.0}, {"w": n}, 1.0 + n) for n in (0, 1)], ["w"], 0.0)
    path = save_profile(tmp_path / "p.json", fit, ProfileSettings("mlp"))
    record = json.loads(path.read_text())
    record["break_even"] = table
    path.write_text(json.dumps(record))
    # Execute / Assert
    with pytest.raises(ConfigError, match="break_even"):
        load_profile_break_even(path)


def test_break_even_table_warns_when_measured_at_another_batch_or_kernel_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a profile measured at batch 20 whose record says the native kernels were off
    fit = fit_time_model([Measurement({"w": 1.0}, {"w": n}, 1.0 + n) for n in (0, 1)], ["w"], 0.0)
    path = save_profile(tmp_path / "p.json", fit, ProfileSettings("mlp", batch_size=20), None, {"w": (0.3, 0.1)})
    record = json.loads(path.read_text())
    assert record["environment"]["native_kernels"] == native.available()
    record["environment"]["native_kernels"] = not native.available()
    path.write_text(json.dumps(record))

    # Execute
    with caplog.at_level(logging.WARNING, logger="prunefl.timing.profile"):
        same = load_profile_break_even(path, batch_size=20)
        warnings_same = [r.getMessage() for r in caplog.records]
        caplog.clear()
        other = load_profile_break_even(path, batch_size=64)
        warnings_other = [r.getMessage() for r in caplog.records]

    # Assert: the table is returned either way; the batch warning only for the other batch
    assert same == other == {"w": (0.3, 0.1)}
    assert len(warnings_same) == 1 and "native CSR kernels" in warnings_same[0]
    assert len(warnings_other) == 2 and any("batch 20; this run uses batch 64" in m for m in warnings_other)


def test_sparse_kernel_step_swaps_only_layers_at_or_below_break_even_and_close_restores() -> None:
    # Prepare: fc1 at density 0.25 (break-even 0.3: sparse), fc2 at 0.5 (break-even 0.3: masked dense)
    torch.manual_seed(0)
    from prunefl.models import build_model
    from prunefl.sparse.masks import apply_masks_, attach_masks, set_masks_
    from prunefl.timing.profile import sparse_kernel_step

    model = build_model("mlp", 3, (1, 2, 2), hidden_sizes=[8])
    attach_masks(model)
    fc1 = torch.zeros(8, 4, dtype=torch.bool)
    fc1.view(-1)[::4] = True  # 8 of 32 kept
    fc2 = torch.zeros(3, 8, dtype=torch.bool)
    fc2.view(-1)[::2] = True  # 12 of 24 kept
    set_masks_(model, {"fc1.weight": fc1, "fc2.weight": fc2})
    apply_masks_(model)
    linear_fc1 = model.fc1
    # Execute
    step = sparse_kernel_step({"fc1.weight": (0.3, 0.1), "fc2.weight": (0.3, 0.3)})(model)
    swapped = (type(model.fc1).__name__, type(model.fc2).__name__)
    step(torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
    step.close()  # type: ignore[attr-defined]
    # Assert
    assert swapped == ("SparseLinear", "Linear")
    assert model.fc1 is linear_fc1  # the original module is back, with the trained values
    assert not model.fc1.weight[~fc1].any() and not model.fc2.weight[~fc2].any()  # pruned weights stay 0


@pytest.mark.slow
def test_cli_profile_auto_kernels_writes_the_break_even_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    out = tmp_path / "mlp-auto.json"
    args = profile_parser().parse_args(
        ["profile", "--model", "mlp", "--threads", "1", "--configs", "2", "--repeats", "2", "--burn-in", "1",
         "--densities", "1,0.05", "--kernels", "auto", "--no-progress", "--out", str(out)]
    )
    # Execute
    code = args.func(args)
    # Assert
    assert code == 0
    record = json.loads(out.read_text())
    assert record["kernels"] == "auto" and record["meta"]["step"] == "sparse_kernel_step"
    assert set(record["break_even"]) == {"fc1.weight", "fc2.weight"}  # both mlp layers are nn.Linear
    table = load_profile_break_even(out)
    assert table is not None and all(0.0 <= v <= 1.0 for pair in table.values() for v in pair)
    printed = capsys.readouterr().out
    assert "break-even" in printed and "auto" in printed
