"""Kill `prunefl run` with SIGKILL at several points, resume it, and get the uninterrupted run bit for bit (issue 10).

The kill comes from the test hook ``PRUNEFL_FAULT_INJECT`` (:mod:`prunefl.faults`): the process sends itself
SIGKILL at an exact point, so the tests are deterministic. The killed run is a real process; the uninterrupted
run and the resume run in this process through the same CLI entry point.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from prunefl.cli import main
from resume_runs import (
    final_tensors,
    prunefl,
    resume_args,
    rows_without_wall,
    run_args,
    tensors_equal,
    write_config,
)

# (method settings, where the kill happens, what the folder must hold after the kill)
CASES = {
    # between rounds: round 4 finished and its row written; the last checkpoint is after round 3 (4 done)
    "prunefl-no-ip-between-rounds": (["method=prunefl-no-ip"], "kill-after-round=4", "row-after-checkpoint"),
    # inside a round: the clients of round 5 trained, nothing aggregated (initial pruning before FL)
    "prunefl-inside-round": (["method=prunefl"], "kill-inside-round=5", "plain"),
    # while the 3rd checkpoint (after 4 rounds) is written: tensors renamed into place, JSON not yet
    "feddst-checkpoint-half": (["method=feddst", "reference.density=0.5"], "kill-checkpoint-half=3", "torn"),
    # while the 2nd checkpoint (after 2 rounds) is written: both temporary files complete, none renamed
    "momentum-checkpoint-written": (["fl.momentum=0.5"], "kill-checkpoint-written=2", "temporaries"),
    "iterative-inside-round": (["method=iterative", "reference.density=0.5", "iterative.prunes=2"],
                               "kill-inside-round=3", "plain"),
    "online-between-rounds": (["method=online"], "kill-after-round=3", "plain"),
    # while the final checkpoint (the 5th: after 0, 2, 4, 6 and 8 rounds) is written: the resume runs no round,
    # it finishes the checkpoint and writes the summary
    "fedavg-final-checkpoint-half": ([], "kill-checkpoint-half=5", "torn"),
    # the 2nd checkpoint (after 2 rounds) comes after SNIP's one decision (round 0)
    "snip-checkpoint-half": (["method=snip", "reference.density=0.3"], "kill-checkpoint-half=2", "torn"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_run_resumes_to_the_uninterrupted_results(case: str, tmp_path: Path) -> None:
    # Prepare: the uninterrupted run, and the same run killed by SIGKILL at the case's point
    sets, fault, leftover = CASES[case]
    config = write_config(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(run_args(config, whole, sets)) == 0
    dead = prunefl(run_args(config, killed, sets), fault=fault)
    assert dead.returncode == -signal.SIGKILL, dead.stderr
    assert not (killed / "summary.json").exists()
    if leftover == "torn":  # the JSON in place belongs to the checkpoint before the tensors in place
        assert (killed / "checkpoint.json.tmp").is_file()
    if leftover == "temporaries":
        assert (killed / "checkpoint.json.tmp").is_file() and (killed / "checkpoint.safetensors.tmp").is_file()
    if leftover == "row-after-checkpoint":  # 4 rounds checkpointed, 5 rows written
        assert len(rows_without_wall(killed)) == 5
    # Execute
    code = main(resume_args(killed))
    # Assert: every row (wall times aside) and every tensor of the final checkpoint, bit for bit
    assert code == 0
    assert rows_without_wall(killed) == rows_without_wall(whole)
    assert [r["round"] for r in rows_without_wall(killed) if r["stage"] == "fl"] == list(range(8))
    assert tensors_equal(final_tensors(killed), final_tensors(whole)) == []
    assert not list(killed.glob("*.tmp"))


@pytest.mark.slow
def test_resume_of_a_run_killed_twice(tmp_path: Path) -> None:
    # Prepare: killed inside round 3, resumed and killed again after round 6
    sets = ["method=prunefl-no-ip", "fl.momentum=0.3"]
    config = write_config(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(run_args(config, whole, sets)) == 0
    assert prunefl(run_args(config, killed, sets), fault="kill-inside-round=3").returncode == -signal.SIGKILL
    assert prunefl(resume_args(killed), fault="kill-after-round=6").returncode == -signal.SIGKILL
    # Execute
    code = main(resume_args(killed))
    # Assert
    assert code == 0
    assert rows_without_wall(killed) == rows_without_wall(whole)
    assert tensors_equal(final_tensors(killed), final_tensors(whole)) == []


@pytest.mark.slow
def test_same_config_and_seed_twice_give_identical_results(tmp_path: Path) -> None:
    # Prepare
    sets = ["method=prunefl-no-ip", "fl.momentum=0.5"]
    config = write_config(tmp_path)
    # Execute
    codes = [main(run_args(config, tmp_path / name, sets)) for name in ("a", "b")]
    # Assert
    assert codes == [0, 0]
    rows = rows_without_wall(tmp_path / "a")
    assert rows == rows_without_wall(tmp_path / "b")
    assert any(r["reconfig"] is not None for r in rows)  # the run did change its masks
    assert tensors_equal(final_tensors(tmp_path / "a"), final_tensors(tmp_path / "b")) == []


@pytest.mark.slow
def test_resume_extends_a_finished_run(tmp_path: Path) -> None:
    # Prepare: an 8-round run
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert main(run_args(config, out, ["method=fedavg"])) == 0
    # Execute: 4 more rounds from its final checkpoint
    code = main(resume_args(out, ["fl.rounds=12"]))
    # Assert
    assert code == 0
    rows = rows_without_wall(out)
    assert [r["round"] for r in rows] == list(range(12))
    assert "rounds = 12" in (out / "config.toml").read_text()


@pytest.mark.slow
def test_resume_refuses_a_config_that_reshapes_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    config = write_config(tmp_path)
    out = tmp_path / "run"
    assert prunefl(run_args(config, out, []), fault="kill-after-round=2").returncode == -signal.SIGKILL
    before = (out / "metrics.jsonl").read_bytes()
    # Execute
    code = main(resume_args(out, ["seed=4", "fl.lr=0.2", "threads=1"]))
    # Assert: both shaping keys named, exit 2, nothing touched
    assert code == 2
    err = capsys.readouterr().err
    assert "seed differs (checkpoint 3, now 4)" in err and "fl.lr differs (checkpoint 0.1, now 0.2)" in err
    assert "threads" not in err.split("; these shape")[0]
    assert (out / "metrics.jsonl").read_bytes() == before


@pytest.mark.slow
def test_compare_resume_continues_killed_runs_and_keeps_finished_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a comparison run whole, and the same comparison whose every run is SIGKILLed after round 4
    config = write_config(tmp_path)
    args = ["compare", "--config", str(config), "--methods", "fedavg,prunefl-no-ip", "--jobs", "1",
            "--no-run-plots", "--no-progress"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*args, "--out", str(whole)]) == 0
    monkeypatch.setenv("PRUNEFL_FAULT_INJECT", "kill-after-round=4")  # the spawned workers inherit it
    assert main([*args, "--out", str(killed)]) == 1  # both runs failed: their worker died
    monkeypatch.delenv("PRUNEFL_FAULT_INJECT")
    runs = ["fedavg/seed-3", "prunefl-no-ip/seed-3"]
    assert all(not (killed / r / "summary.json").exists() for r in runs)
    # Execute
    code = main(["compare", "--resume", str(killed), "--no-progress"])
    summaries = {r: (killed / r / "summary.json").read_bytes() for r in runs}
    again = main(["compare", "--resume", str(killed), "--no-progress"])  # nothing left to do
    # Assert
    assert code == 0 and again == 0
    for r in runs:
        assert rows_without_wall(killed / r) == rows_without_wall(whole / r)
        assert tensors_equal(final_tensors(killed / r), final_tensors(whole / r)) == []
        assert (killed / r / "summary.json").read_bytes() == summaries[r]  # finished runs were kept as they were
    assert '"status": "ok"' in (killed / "comparison.json").read_text()
