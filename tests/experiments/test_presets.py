"""Packaged presets: ``--config NAME`` resolution, ``prunefl presets`` / ``prunefl methods``, presets in the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import prunefl
from prunefl.cli import main
from prunefl.errors import ConfigError
from prunefl.experiments.config import load_config
from prunefl.experiments.presets import preset_descriptions, preset_names, resolve_config_file
from prunefl.pruning.methods import all_specs

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = Path(prunefl.__file__).resolve().parent / "presets"
EXPECTED = ("celeba-conv4", "cifar10-vgg11", "digits-flower", "femnist-conv2", "fmnist-conv2", "imagenet100-resnet18")


def test_preset_name_resolves_to_packaged_file() -> None:
    # Prepare
    packaged = PACKAGED / "fmnist-conv2.toml"

    # Execute
    resolved = resolve_config_file("fmnist-conv2")
    config = load_config("fmnist-conv2")

    # Assert
    assert Path(str(resolved)).resolve() == packaged
    assert config == load_config(packaged)
    assert config.name == "fmnist-conv2"


def test_preset_name_with_toml_suffix_resolves_too() -> None:
    # Execute / Assert
    assert load_config("femnist-conv2.toml") == load_config(PACKAGED / "femnist-conv2.toml")


def test_existing_file_wins_over_preset_of_same_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a local file called exactly like a preset
    monkeypatch.chdir(tmp_path)
    Path("fmnist-conv2").write_text('name = "mine"\n', encoding="utf-8")

    # Execute
    config = load_config("fmnist-conv2")

    # Assert
    assert config.name == "mine"


@pytest.mark.parametrize(
    "bad",
    [
        "no-such-preset",  # neither a file nor a preset
        "configs/no-such.toml",  # a path that does not exist
        "somewhere/fmnist-conv2.toml",  # a preset's file name under a missing directory is a path, not a preset
    ],
)
def test_unknown_name_or_missing_path_raises_listing_presets(bad: str) -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(bad)

    # Assert
    message = str(info.value)
    assert repr(bad) in message
    assert all(name in message for name in EXPECTED)


def test_every_preset_loads_and_has_a_description() -> None:
    # Execute
    descriptions = preset_descriptions()

    # Assert
    assert preset_names() == EXPECTED
    assert tuple(descriptions) == EXPECTED
    assert all(text and not text.startswith("#") for text in descriptions.values())
    assert [load_config(name).name for name in EXPECTED] == list(EXPECTED)  # each preset's name key is its file name


def test_configs_is_a_relative_symlink_to_the_presets() -> None:
    # Prepare
    link = ROOT / "configs"

    # Assert: README paths (configs/fmnist-conv2.toml) reach the packaged files
    assert link.is_symlink()
    assert os.readlink(link) == "src/prunefl/presets"
    assert load_config("configs/fmnist-conv2.toml") == load_config("fmnist-conv2")


def test_cli_presets_prints_every_preset_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    code = main(["presets"])

    # Assert
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    for name, text in preset_descriptions().items():
        assert any(line.startswith(name + " ") and line.endswith(text) for line in lines), name


def test_cli_methods_prints_every_registered_method(capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    code = main(["methods"])

    # Assert
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert code == 0
    for spec in all_specs():
        assert any(line.startswith(spec.name + " ") and spec.description in line for line in lines), spec.name
        if spec.needs:
            assert f"needs from a reference run: {', '.join(sorted(spec.needs))}" in out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built offline from a copy of the sources (no build/ folder of the shared checkout is touched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # no index, no build isolation: setuptools comes from the virtualenv
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(tmp / "out")],
        check=True, capture_output=True, cwd=tmp,
    )
    (built,) = (tmp / "out").glob("prunefl-*.whl")
    return built


@pytest.mark.slow
def test_wheel_ships_presets_and_native_kernel_source(wheel: Path) -> None:
    # Execute
    names = set(zipfile.ZipFile(wheel).namelist())

    # Assert
    assert {f"prunefl/presets/{name}.toml" for name in EXPECTED} <= names
    assert "prunefl/sparse/csr_kernels.c" in names
    assert "prunefl/experiments/presets.py" in names


@pytest.mark.slow
def test_unpacked_wheel_runs_presets_by_name_without_a_checkout(wheel: Path, tmp_path: Path) -> None:
    # Prepare: the wheel's files alone, first on sys.path (the checkout's src/ comes later, via the editable install)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import prunefl; from prunefl.experiments.config import load_config; "
        "from prunefl.experiments.presets import resolve_config_file; "
        "print(prunefl.__file__); print(resolve_config_file('fmnist-conv2')); print(load_config('fmnist-conv2').name)"
    )

    # Execute: from a folder with no configs/ in it
    proc = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)})

    # Assert
    package, preset, name = proc.stdout.splitlines()
    assert package.startswith(str(site))
    assert preset == str(site / "prunefl" / "presets" / "fmnist-conv2.toml")
    assert name == "fmnist-conv2"
