"""Disk faults (issue 10 part 6): an output folder that cannot be made, a disk that fills mid-run.

Tests run as root in CI, where file modes do not stop writes; the faults here are real anyway: a path below a
regular file (no folder can be made there), and ``RLIMIT_FSIZE`` in the run's process (a write past the limit
fails with EFBIG, as a full disk fails with ENOSPC; SIGXFSZ is ignored so that the write returns the error).
"""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import pytest

from prunefl.cli import main
from prunefl.experiments.state import load_run_state
from resume_runs import final_tensors, prunefl, resume_args, rows_without_wall, run_args, tensors_equal, write_config


def test_output_below_a_file_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    config = write_config(tmp_path)
    # Execute
    code = main(run_args(config, blocker / "run", ["rounds=1"]))
    # Assert
    assert code == 2
    err = capsys.readouterr().err
    assert "prunefl: error: cannot create the results folder" in err and str(blocker) in err
    assert "Traceback" not in err
    assert blocker.read_text() == "a file, not a folder"


def _file_size_limit(limit: int) -> None:  # runs in the child process before it starts
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_disk_full_at_a_checkpoint_keeps_the_previous_one_which_resumes(tmp_path: Path) -> None:
    # Prepare: the checkpoint before round 0 holds no importance (~82 KB); the one after 2 rounds of
    # prunefl-no-ip holds every client's (~140 KB): a 110 KB limit lets the first through and fails the second
    sets = ["method=prunefl-no-ip"]
    config = write_config(tmp_path)
    whole, full = tmp_path / "whole", tmp_path / "full"
    assert main(run_args(config, whole, sets)) == 0
    # Execute
    failed = prunefl(run_args(config, full, sets), preexec=lambda: _file_size_limit(110_000))
    # Assert: a clear message naming the file, exit 2, no traceback, no temporary files
    assert failed.returncode == 2, failed.stderr
    assert "cannot write the checkpoint" in failed.stderr and str(full / "checkpoint.safetensors") in failed.stderr
    assert "the previous checkpoint is intact" in failed.stderr and "Traceback" not in failed.stderr
    assert not list(full.glob("*.tmp"))
    state = load_run_state(full)  # the previous checkpoint (before round 0) loads
    assert state.round == 0 and state.metrics.rows == 0
    assert len(rows_without_wall(full)) == 2  # the rows of the two rounds before the failed checkpoint
    # and resumes, with room on the disk again, to the uninterrupted run's results
    assert main(resume_args(full)) == 0
    assert rows_without_wall(full) == rows_without_wall(whole)
    assert tensors_equal(final_tensors(full), final_tensors(whole)) == []
