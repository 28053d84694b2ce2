"""Hostile profile and reference files: ConfigError naming the file, never RecursionError/ValueError/MemoryError."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunefl.errors import ConfigError
from prunefl.experiments.reference import load_reference_run
from prunefl.timing.profile import MAX_PROFILE_BYTES, load_profile


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000,  # nesting past the stack
        b'{"format": ' + b"9" * 10_000 + b"}",  # an integer longer than Python converts
        b"\xff\xfe not utf-8",
        b'{"format": 1',  # cut
    ],
)
def test_hostile_profile_gives_config_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    # Prepare
    path = tmp_path / "device.json"
    path.write_bytes(content)

    # Execute / Assert
    with pytest.raises(ConfigError, match="device.json"):
        load_profile(path, ["fc1.weight"])


def test_profile_over_the_size_bound_is_refused_unread(tmp_path: Path) -> None:
    # Prepare: a sparse file one byte over the bound (nothing is allocated to create it)
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(MAX_PROFILE_BYTES + 1)

    # Execute / Assert
    with pytest.raises(ConfigError, match="larger than"):
        load_profile(path, ["fc1.weight"])


def test_reference_folder_with_hostile_summary_gives_config_error(tmp_path: Path) -> None:
    # Prepare: summary.json nested past the stack
    (tmp_path / "summary.json").write_bytes(b"[" * 100_000)

    # Execute / Assert
    with pytest.raises(ConfigError, match="is not a finished run folder"):
        load_reference_run(tmp_path)
