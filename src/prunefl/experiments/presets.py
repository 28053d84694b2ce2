"""Named run presets shipped inside the package (``prunefl/presets/*.toml``), and resolving ``--config`` to a file.

A preset is a TOML config file installed with the package, so ``pip install prunefl`` runs ``prunefl run --config
fmnist-conv2`` without a checkout. A checkout also reaches the same files as ``configs/<name>.toml`` (``configs``
is a symlink to ``src/prunefl/presets``). A preset's description is the first comment line of its file.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from prunefl.errors import ConfigError

__all__ = ["preset_names", "preset_file", "preset_descriptions", "resolve_config_file"]

_SUFFIX = ".toml"


def preset_names() -> tuple[str, ...]:
    """Return the names of the packaged presets, sorted.

    Examples
    --------
    >>> "fmnist-conv2" in preset_names()
    True
    """
    return tuple(sorted(f.name[: -len(_SUFFIX)] for f in _presets_dir().iterdir() if f.name.endswith(_SUFFIX)))


def preset_file(name: str) -> Traversable:
    """Return the packaged file of preset ``name`` (``"fmnist-conv2"``, or ``"fmnist-conv2.toml"``).

    Raises
    ------
    ConfigError
        ``name`` is not a packaged preset (the message lists them).

    Examples
    --------
    >>> preset_file("fmnist-conv2").name
    'fmnist-conv2.toml'
    """
    stem = name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name
    if stem not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; packaged presets: {', '.join(preset_names())}")
    return _presets_dir().joinpath(stem + _SUFFIX)


def preset_descriptions() -> dict[str, str]:
    """Return ``{preset name: one-line description}``, the description being the first comment line of its file.

    Examples
    --------
    >>> preset_descriptions()["fmnist-conv2"].startswith("The embedded default")
    True
    """
    return {name: _first_comment(preset_file(name).read_text(encoding="utf-8")) for name in preset_names()}


def resolve_config_file(path_or_name: str | Path) -> Traversable:
    """Return the config file ``--config`` means: an existing file wins, else a packaged preset of that name.

    Raises
    ------
    ConfigError
        ``path_or_name`` is neither an existing file nor a preset name (the message lists the presets).

    Examples
    --------
    >>> resolve_config_file("fmnist-conv2") == preset_file("fmnist-conv2")
    True
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    # a bare name (no directory part) may be a preset; a path with directories is only ever a path
    if path.name == str(path_or_name) and path.name.removesuffix(_SUFFIX) in preset_names():
        return preset_file(path.name)
    raise ConfigError(
        f"config {str(path_or_name)!r} does not exist as a file and is not a packaged preset; presets: "
        f"{', '.join(preset_names())} (`prunefl presets` describes them)"
    )


# --------------------------------------------------------------------------------------------- helpers


def _presets_dir() -> Traversable:
    return resources.files("prunefl").joinpath("presets")


def _first_comment(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break  # the description must open the file
    return ""
