"""Property-based fuzzing of the config parser (issue 10, part 5).

Whatever a config file or a ``--set`` list holds, :func:`load_config` returns a :class:`RunConfig` or raises
:class:`ConfigError`: never TypeError, ValueError, RecursionError, OverflowError or MemoryError. Every config it
returns survives :func:`dump_toml` and loading again unchanged.

Documents are built from the real schema (every section and key of :class:`RunConfig`), half the time with values
of the field's own type (so that many load, and the round trip is exercised), half the time with values of any
type: NaN, infinities, integers past int64 and past Python's 4300-digit limit, NUL and other control characters,
lone surrogates (only ``--set`` can carry them: a file is UTF-8), unicode, nested arrays and inline tables, and raw
nesting thousands of levels deep. Another target throws TOML-ish token soup at the parser. Every 8th case also
checks the load's peak Python allocation (tracemalloc) stays under the stated bound, 4 MiB + 32 bytes per byte of
input (what tomllib itself needs for a text of empty tables; tests/experiments/test_config_validation.py checks the
worst shapes at 64 KiB). Examples are derandomised, so CI runs the same 11,000 cases every time (about 40 s of CPU).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import tracemalloc
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunefl.errors import ConfigError
from prunefl.experiments.config import RunConfig, config_from_dict, dump_toml, load_config
from prunefl.pruning.methods.registry import method_names

# Example counts per target; they add up to 11,000 (the issue asks for >= 10,000 per fuzz target family).
N_DOCUMENTS = 4000
N_OVERRIDES = 4000
N_TOKEN_SOUP = 2500
N_DEEP = 500


def _fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


# ------------------------------------------------------------------------------------------------ the schema


def _schema() -> dict[str | None, dict[str, Any]]:
    """``{section or None (top level): {key: type hint}}`` of :class:`RunConfig`."""
    hints = typing.get_type_hints(RunConfig)
    out: dict[str | None, dict[str, Any]] = {None: {}}
    for f in dataclasses.fields(RunConfig):
        cls = hints[f.name]
        if dataclasses.is_dataclass(cls):
            out[f.name] = typing.get_type_hints(cls)
        else:
            out[None][f.name] = cls
    return out


SCHEMA = _schema()
SECTIONS = [s for s in SCHEMA if s is not None]


@dataclasses.dataclass(frozen=True)
class _Raw:
    """TOML text written as it is (what the value types cannot spell: nan, 5000-digit integers, deep nesting)."""

    text: str


# ---------------------------------------------------------------------------------------------- values


_RAW_LITERALS = st.sampled_from([
    "nan", "+nan", "-nan", "inf", "+inf", "-inf", "1" + "0" * 5000, "-" + "9" * 4400, "0x7fffffffffffffffff",
    "1e400", "-1e400", "5e-324", "1979-05-27T07:32:00Z", "07:32:00", '"\\u0000"', '"\\uD800"', "[]", "{}",
])  # fmt: skip


def _deep(depth: int, kind: str) -> _Raw:
    if kind == "array":
        return _Raw("[" * depth + "]" * depth)
    if kind == "table":
        return _Raw("{a = " * depth + "1" + "}" * depth)
    return _Raw("{" + ".".join(["a"] * max(1, depth)) + " = 1}")  # a dotted key of `depth` parts


_DEEP = st.builds(_deep, st.integers(0, 3000), st.sampled_from(["array", "table", "dotted"]))

_TEXT = st.text(max_size=24) | st.sampled_from(["", ".", "..", "../x", "/abs", "a/b", "a\\b", "a\x00b", "é" * 70])

_ANY_SCALAR = st.one_of(
    st.integers(-10, 10**6),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1),
    st.booleans(),
    _TEXT,
    _RAW_LITERALS.map(_Raw),
)

_ANY_VALUE = st.recursive(
    _ANY_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
) | _DEEP


def _plausible(hint: Any) -> st.SearchStrategy[Any]:
    """Values of the field's own type, mostly in range, so that many documents load."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return st.sampled_from(typing.get_args(hint))
    if origin is tuple:
        return st.lists(st.floats(0.05, 1.0), max_size=3)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(1, 10)
    if hint is float:
        return st.floats(0.0, 1.0) | st.integers(1, 3)
    if hint is str:
        return st.sampled_from(["", "run", "x y", "é名", *method_names()])
    raise AssertionError(f"no strategy for {hint!r}")  # a new field type: teach the fuzzer


_PAIRS = [(section, key) for section, fields in SCHEMA.items() for key in sorted(fields)]
_PAIRS += [(None, "nosuch"), ("fl", "nosuch"), (None, "fl"), ("data", "lr")]  # unknown, a section as a key, misplaced
_PLAUSIBLE = {(section, key): _plausible(SCHEMA[section][key]) for section, key in _PAIRS if key in SCHEMA[section]}


@st.composite
def _entries(draw: st.DrawFn) -> dict[str, Any]:
    """A nested dict as TOML parses it: top-level keys and [section] tables from the schema, plus a few unknown.

    Half the documents take every value from the field's own type (most of them load), half of any type.
    """
    plausible = draw(st.booleans())
    doc: dict[str, Any] = {}
    for section, key in draw(st.lists(st.sampled_from(_PAIRS), max_size=8, unique=True)):
        value = draw(_PLAUSIBLE[section, key] if plausible and (section, key) in _PLAUSIBLE else _ANY_VALUE)
        if section is None:
            if not isinstance(doc.get(key), dict):
                doc[key] = value
        else:
            table = doc.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = value
    if not plausible and draw(st.integers(0, 9)) == 0:  # a section that is not a table
        doc[draw(st.sampled_from(SECTIONS))] = draw(_ANY_SCALAR)
    return doc


# --------------------------------------------------------------------------------------------- TOML writer


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml(value: Any) -> str:
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise AssertionError(f"cannot write {value!r}")


def _document_text(doc: dict[str, Any]) -> str:
    lines = [f"{_toml_string(k)} = {_toml(v)}" for k, v in doc.items() if not (k in SECTIONS and isinstance(v, dict))]
    for section, table in doc.items():
        if section in SECTIONS and isinstance(table, dict):
            lines.append(f"[{section}]")
            lines.extend(f"{_toml_string(k)} = {_toml(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the property


OUTCOMES: dict[str, int] = {"loaded": 0, "refused": 0, "traced": 0, "max_peak_bytes": 0}
TRACE_EVERY = 8  # tracemalloc slows a load several times over: every 8th case is traced
PEAK_BASE_BYTES, PEAK_BYTES_PER_INPUT_BYTE = 4 << 20, 32  # the stated bound on a load's peak Python allocation


def _loads_or_refuses(load: Callable[[], RunConfig], input_bytes: int) -> None:
    """``load()`` returns a config that round-trips through dump_toml, or raises ConfigError; nothing else.

    Every TRACE_EVERY-th case also checks the load's peak allocation against the bound for ``input_bytes``.
    """
    traced = (OUTCOMES["loaded"] + OUTCOMES["refused"]) % TRACE_EVERY == 0
    if traced:
        tracemalloc.start()
    try:
        cfg = load()
    except ConfigError:
        OUTCOMES["refused"] += 1
        return
    finally:
        if traced:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            OUTCOMES["traced"] += 1
            OUTCOMES["max_peak_bytes"] = max(OUTCOMES["max_peak_bytes"], peak)
            bound = PEAK_BASE_BYTES + PEAK_BYTES_PER_INPUT_BYTE * input_bytes
            assert peak <= bound, f"a load of {input_bytes} bytes allocated {peak} bytes, more than {bound}"
    OUTCOMES["loaded"] += 1
    text = dump_toml(cfg)
    assert config_from_dict(tomllib.loads(text)) == cfg
    assert dump_toml(config_from_dict(tomllib.loads(text))) == text


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "config.toml"


@_fuzz_settings(N_DOCUMENTS)
@given(doc=_entries())
def test_random_documents_load_or_raise_config_error(config_path: Path, doc: dict[str, Any]) -> None:
    # Prepare
    text = _document_text(doc)
    config_path.write_text(text, encoding="utf-8")
    # Execute / Assert
    _loads_or_refuses(lambda: load_config(config_path), len(text.encode()))


_OVERRIDE_KEYS = st.one_of(
    st.sampled_from([f"{s}.{k}" for s in SECTIONS for k in SCHEMA[s]]),  # dotted
    st.sampled_from(sorted({k for fields in SCHEMA.values() for k in fields})),  # bare (some ambiguous)
    st.text(max_size=12),  # anything, including "=", "." and NUL
)
_OVERRIDE_TEXT = st.one_of(
    _ANY_VALUE.map(_toml),
    st.text(max_size=30),
    st.sampled_from(["\udcff", "a\udc80b", "1\nname = 'x'", "[fl]\nlr = 1", "0.1 # comment", " 3 "]),
)


_PLAUSIBLE_OVERRIDE = st.sampled_from(sorted(_PLAUSIBLE, key=str)).flatmap(
    lambda pair: _PLAUSIBLE[pair].map(lambda v: (pair[1] if pair[0] is None else f"{pair[0]}.{pair[1]}", _toml(v)))
)


@_fuzz_settings(N_OVERRIDES)
@given(overrides=st.lists(st.tuples(_OVERRIDE_KEYS, _OVERRIDE_TEXT), max_size=6)
       | st.lists(_PLAUSIBLE_OVERRIDE, max_size=6))  # fmt: skip
def test_random_set_lists_load_or_raise_config_error(overrides: list[tuple[str, str]]) -> None:
    # Execute / Assert
    items = [f"{key}={text}" for key, text in overrides]
    _loads_or_refuses(lambda: load_config(None, items), sum(len(item) * 4 for item in items))  # <= 4 bytes a char


_TOKENS = st.sampled_from([
    "[", "]", "[[", "]]", "{", "}", "=", ".", ",", " ", "\n", "#", '"', "'", '"""', "'''", "\\", "\\u0000",
    "a", "fl", "lr", "seed", "1", "1.5", "nan", "inf", "true", "[fl]\n", "[data]\n", "lr = ", "name = ", "x.y.z",
])  # fmt: skip


@_fuzz_settings(N_TOKEN_SOUP)
@given(tokens=st.lists(_TOKENS, max_size=120))
def test_token_soup_loads_or_raises_config_error(config_path: Path, tokens: list[str]) -> None:
    # Prepare
    text = "".join(tokens)
    config_path.write_text(text, encoding="utf-8")
    # Execute / Assert
    _loads_or_refuses(lambda: load_config(config_path), len(text.encode()))


@_fuzz_settings(N_DEEP)
@given(
    depth=st.integers(0, 20_000),
    opener=st.sampled_from(["[", "{a=", "a.", "[a.", '"a".', "x = [", "x = {a.b = "]),
    closer=st.sampled_from(["", "]", "}", "=1"]),
)
def test_deep_nesting_is_refused_without_exhausting_the_stack(
    config_path: Path, depth: int, opener: str, closer: str
) -> None:
    # Prepare: up to 20,000 levels, 20 times Python's recursion limit (and a dotted key that tomllib would keep
    # 20,000 prefixes of)
    text = "x = " + opener * depth + closer * depth + "\n"
    config_path.write_text(text, encoding="utf-8")
    # Execute / Assert
    _loads_or_refuses(lambda: load_config(config_path), len(text))


def test_fuzzers_reached_both_outcomes() -> None:
    # Assert (after the targets above ran in this module): the documents were not all refused, nor all loaded
    if OUTCOMES["loaded"] + OUTCOMES["refused"] < N_DOCUMENTS:
        pytest.skip("run with the fuzz targets above")
    assert OUTCOMES["loaded"] > 500 and OUTCOMES["refused"] > 500 and OUTCOMES["traced"] > 1000, OUTCOMES
