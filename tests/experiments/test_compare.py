"""Tests for prunefl.experiments.compare and ``prunefl compare``: validation up front, parallel runs over seeds,
failures recorded, references taken from the comparison's own run, and ``prunefl report`` re-rendering it."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from idx_files import write_fashion_like
from prunefl.cli import main
from prunefl.errors import ConfigError
from prunefl.experiments.compare import ERROR_FILE, RunProgress, default_jobs, run_comparison
from prunefl.experiments.config import RunConfig, load_config
from prunefl.experiments.runner import build_run_method
from prunefl.pruning.methods import ReferenceRun, all_specs
from prunefl.pruning.methods.registry import REFERENCE_METHOD
from prunefl.report.comparison_io import RUN_FAILED, RUN_OK, read_manifest
from prunefl.report.plots import PlotStyle

SMALL = PlotStyle(width_in=3.0, height_in=2.0, dpi=40)
BASELINE = next(spec.name for spec in all_specs() if spec.baseline)
NEEDING = [spec for spec in all_specs() if spec.needs]
DIGITS = [
    "data.dataset=digits", "model.name=mlp", "partition=iid", "data.num_clients=4", "clients_per_round=4",
    "threads=1", "timing.preset=uniform", "rounds=6", "eval_every=2", "lr=0.1", "target_accuracies=[0.3, 0.6]",
    # PruneFL's schedules cut down to 6 rounds, as in test_methods_e2e.py
    "reconfig_interval=2", "first_reconfig_round=2", "ip_interval=2", "ip_check_every=1", "ip_max_rounds=6",
    "ip_batches=2",
]  # fmt: skip


def _digits_toml(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "digits.toml"
    path.write_text(f"""
name = "digits"
threads = 1
[data]
dataset = "digits"
partition = "iid"
num_clients = 4
[model]
name = "mlp"
[fl]
rounds = 6
clients_per_round = 4
lr = 0.1
eval_every = 2
target_accuracies = [0.3, 0.6]
[timing]
preset = "uniform"
[pruning]
reconfig_interval = 2
first_reconfig_round = 2
ip_interval = 2
ip_check_every = 1
ip_max_rounds = 6
ip_batches = 2
{extra}
""")
    return path


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("methods", "seeds", "jobs", "message"),
    [
        (["nope"], [0], 1, "unknown method 'nope'"),  # not registered
        ([BASELINE, BASELINE], [0], 1, "each be given once"),  # repeated method
        ([], [0], 1, "non-empty list of method names"),  # nothing to run
        ([BASELINE], [-1], 1, "non-negative integers, got -1"),  # negative seed
        ([BASELINE], [True], 1, "non-negative integers, got True"),  # a bool is not a seed
        ([BASELINE], [0, 0], 1, "each be given once"),  # repeated seed
        ([BASELINE], [], 1, "non-empty list"),  # no seed
        ([BASELINE], [0], 0, "jobs must be an integer >= 1, got 0"),  # no worker
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, methods: list[str], seeds: list, jobs: int, message: str
) -> None:
    # Execute
    with pytest.raises(ConfigError, match=message):
        run_comparison(load_config(None, DIGITS), methods, seeds, tmp_path / "out", jobs)
    # Assert
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spec", NEEDING, ids=lambda s: s.name)
def test_method_needing_a_reference_without_one_fails_naming_it_and_its_needs(tmp_path: Path, spec) -> None:
    # Prepare: the reference method is not among the methods, and the config has no [reference]
    config = load_config(None, DIGITS)
    # Execute
    with pytest.raises(ConfigError) as caught:
        run_comparison(config, [BASELINE, spec.name], [0], tmp_path / "out")
    # Assert
    message = str(caught.value)
    assert f"methods {spec.name} need a reference run" in message
    assert all(need in message for need in spec.needs) and REFERENCE_METHOD in message
    assert not (tmp_path / "out").exists()


def test_method_settings_that_do_not_fit_the_run_fail_before_anything_starts(tmp_path: Path) -> None:
    # Prepare: a registered method whose factory rejects a 1-round run (e.g. a pruning schedule that needs more)
    config = load_config(None, [*DIGITS, "rounds=1", "eval_every=1"])
    stand_in = ReferenceRun("test", density=0.5, masks={}, init_state={})
    refused = None
    for spec in all_specs():
        try:
            build_run_method(replace(config, pruning=replace(config.pruning, method=spec.name)),
                             stand_in if spec.needs else None)  # fmt: skip
        except ConfigError as exc:
            refused = spec, str(exc)
            break
    if refused is None:
        pytest.skip("every registered method builds for a 1-round run")
    spec, message = refused
    methods = [REFERENCE_METHOD, spec.name] if spec.needs and spec.name != REFERENCE_METHOD else [spec.name]
    # Execute
    with pytest.raises(ConfigError) as caught:
        run_comparison(config, methods, [0], tmp_path / "out")
    # Assert: the factory's own message, and nothing written
    assert str(caught.value) == message
    assert not (tmp_path / "out").exists()


def test_out_folder_that_is_not_empty_is_refused_and_left_alone(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    # Execute
    with pytest.raises(ConfigError, match="not an empty folder"):
        run_comparison(load_config(None, DIGITS), [BASELINE], [0], tmp_path / "out")
    # Assert
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_default_jobs_divides_the_cores_by_the_threads_and_never_exceeds_the_runs() -> None:
    # Prepare: cores are whatever this machine has; 1 thread per run
    import os

    cores = os.cpu_count() or 1
    # Execute / Assert
    assert default_jobs(RunConfig(threads=1), 1000) == cores
    assert default_jobs(RunConfig(threads=1), 1) == 1
    assert default_jobs(RunConfig(threads=cores * 4), 10) == 1  # more threads than cores still runs one


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0,x"], "--seeds must be comma-separated non-negative integers"),  # not a number
        (["--seeds=-1"], "non-negative integers, got -1"),  # negative
        (["--jobs", "0"], "jobs must be an integer >= 1"),  # no worker
        (["--methods", f"{BASELINE},nope"], "unknown method 'nope'"),  # not registered
    ],
)
def test_cli_bad_input_exits_2_with_a_message_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # Prepare
    base = ["compare", "--config", str(_digits_toml(tmp_path)), "--out", str(tmp_path / "out"), "--no-progress"]
    if "--methods" not in args:
        base += ["--methods", BASELINE]
    # Execute
    code = main(base + args)
    # Assert
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- running


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_the_others_finish(tmp_path: Path) -> None:
    # Prepare: Fashion-MNIST-format files that are there when the comparison is checked; they vanish once the
    # first run has finished (a network share unmounted mid-comparison), so the second seed's worker cannot
    # load them. One job: the second run starts only after the parent has seen the first finish.
    data = write_fashion_like(tmp_path / "fmnist", n_train=200, n_test=60)
    config = load_config(None, [f"data.data_dir={data}", "data.dataset=fashion-mnist", *DIGITS[1:]])
    events: list[RunProgress] = []

    def on_progress(progress: RunProgress) -> None:
        events.append(progress)
        if progress.event == "finished":
            shutil.rmtree(data, ignore_errors=True)

    # Execute
    result = run_comparison(config, [BASELINE], [0, 1], tmp_path / "out", jobs=1, on_progress=on_progress,
                            run_plots=False, style=SMALL)  # fmt: skip
    # Assert: seed 0 finished, seed 1 failed with the loader's error, recorded in the manifest and the report
    manifest = read_manifest(tmp_path / "out")
    assert [(r.seed, r.status) for r in manifest.runs] == [(0, RUN_OK), (1, RUN_FAILED)]
    assert manifest.runs[1].error.startswith("DataError") and str(data) in manifest.runs[1].error
    assert "Traceback" in (tmp_path / "out" / BASELINE / "seed-1" / ERROR_FILE).read_text()
    assert [f.seed for f in result.failed] == [1]
    assert result.summaries[BASELINE][1] is None and result.summaries[BASELINE][0]["rounds"] == 6
    assert [(e.seed, e.event) for e in events if e.event != "row"] == [(0, "started"), (0, "finished"),
                                                                         (1, "started"), (1, "failed")]
    assert [e.round for e in events if e.event == "row"] == list(range(6))  # every round of seed 0 was reported
    report = result.report.read_text()
    assert "1 finished, 1 failed" in report and "DataError" in report
    assert " 1/2 " in result.table()  # one of the two planned seeds in the seeds column


@pytest.mark.slow
def test_cli_compare_of_every_registered_method_over_two_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: every method registered now, so the test grows as methods land
    specs = all_specs()
    out = tmp_path / "cmp"
    config = _digits_toml(tmp_path, "[iterative]\nprunes = 2\n")  # 20 prunes need >= 40 rounds
    # Execute
    code = main(["compare", "--config", str(config), "--methods", ",".join(s.name for s in specs), "--seeds", "0,1",
                 "--jobs", "2", "--out", str(out), "--no-run-plots", "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    # Assert: every run finished, in its own run folder, methods needing a reference took the seed's own
    assert code == 0, printed
    manifest = read_manifest(out)
    assert (manifest.seeds, manifest.jobs) == ([0, 1], 2)
    assert [(r.method, r.seed) for r in manifest.runs] == [(s.name, seed) for s in specs for seed in (0, 1)]
    assert all(r.status == RUN_OK for r in manifest.runs), [(r.method, r.error) for r in manifest.runs]
    for r in manifest.runs:
        summary = json.loads((out / r.method / f"seed-{r.seed}" / "summary.json").read_text())
        assert summary["method"] == r.method and summary["rounds"] == 6
        assert r.reference == (f"{REFERENCE_METHOD}/seed-{r.seed}" if r.method in {s.name for s in NEEDING} else None)
    # the table: one row per method, two for each with initial pruning; a column per target and its speed-up
    table = printed[: printed.index("comparison:")].rstrip("\n")
    header, rule, *body = table.splitlines()
    assert [c.strip() for c in header.split("  ") if c.strip()][:6] == ["method", "seeds", "to 0.3", "speed-up 0.3",
                                                                           "to 0.6", "speed-up 0.6"]  # fmt: skip
    expected = []
    for s in specs:
        name = s.display_name + (" (extension)" if s.extension else "")
        expected += [f"{name} [IP charged]", f"{name} [IP not charged]"] if s.initial_pruning else [name]
    assert [line[: len(label)] for line, label in zip(body, expected, strict=True)] == expected
    assert all(line.split("  ")[0].strip() in expected for line in body)
    assert (out / "report.md").is_file() and (out / "plots" / "accuracy_vs_time.png").is_file()
    assert (out / "plots" / "lottery_ticket.png").is_file() == any(s.lottery for s in specs)
    # `prunefl report` on the folder prints the same table from the saved results
    assert main(["report", str(out)]) == 0
    again = capsys.readouterr().out
    assert again[: again.index("comparison:")].rstrip("\n") == table
    # and each run folder is an ordinary one: `prunefl report` on it draws the run's own report
    assert main(["report", str(out / BASELINE / "seed-1")]) == 0
    assert (out / BASELINE / "seed-1" / "report.md").is_file()


def test_progress_lines_show_each_run_at_most_every_few_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    from prunefl.cli import _ProgressLines

    printer = _ProgressLines(every_s=60.0)
    row = RunProgress(BASELINE, 1, "row", 120, round=39, accuracy=0.8123, density=0.0812, sim_clock_s=372.0)
    # Execute: a row, a second row of the same run at once (held back), a row of another run, its end
    printer(row)
    printer(replace(row, round=40))
    printer(replace(row, seed=2))
    printer(RunProgress(BASELINE, 2, "failed", 120, error="DataError: gone"))
    # Assert: 372 s is 6.2 min; round index 39 is round 40 of 120
    assert capsys.readouterr().err.splitlines() == [
        f"[{BASELINE} seed 1] round 40/120 acc 0.812 density 0.081 sim 6.2min",
        f"[{BASELINE} seed 2] round 40/120 acc 0.812 density 0.081 sim 6.2min",
        f"[{BASELINE} seed 2] failed: DataError: gone",
    ]
