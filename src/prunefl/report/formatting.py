"""Text of report values and tables, shared by the run, comparison and plain-text reports.

Every report spells a value the same way (accuracies to four places, densities as percentages, seconds with
thousands separators, bytes in SI units) and marks a missing one with ``—``; the functions here are that
spelling, so the Markdown reports and the CLI's tables agree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prunefl.report.plots import byte_unit

__all__ = [
    "MISSING",
    "NOT_REACHED",
    "fmt_accuracy",
    "fmt_density",
    "fmt_float",
    "fmt_int",
    "fmt_count",
    "fmt_seconds",
    "fmt_bytes",
    "text_table",
    "markdown_table",
    "config_section",
    "plots_section",
]

MISSING = "—"  # a value the run did not record
NOT_REACHED = "n.r."  # a target accuracy the run never reached

# Settings that identify a run (field paths of experiments/config.py), shown first; the rest is folded away.
_KEY_CONFIG = (
    "name", "seed", "data.dataset", "data.partition", "data.num_clients", "model.name", "fl.rounds",
    "fl.clients_per_round", "fl.local_steps", "fl.batch_size", "fl.lr", "fl.target_accuracies", "timing.preset",
    "pruning.method",
)  # fmt: skip


def fmt_accuracy(value: float | None) -> str:
    """An accuracy to four decimal places.

    >>> fmt_accuracy(0.85123), fmt_accuracy(None)
    ('0.8512', '—')
    """
    return MISSING if value is None else f"{value:.4f}"


def fmt_density(value: float | None) -> str:
    """A density as a percentage with two decimals.

    >>> fmt_density(0.25)
    '25.00%'
    """
    return MISSING if value is None else f"{value:.2%}"


def fmt_float(value: float | None) -> str:
    """Any other float, to four significant digits.

    >>> fmt_float(0.0123456)
    '0.01235'
    """
    return MISSING if value is None else f"{value:.4g}"


def fmt_int(value: int | None, missing: str = MISSING) -> str:
    """An integer (a round, a count), or ``missing`` (default: "—").

    >>> fmt_int(40), fmt_int(None, NOT_REACHED)
    ('40', 'n.r.')
    """
    return missing if value is None else str(value)


def fmt_count(value: int | dict[str, int] | None) -> str:
    """A weight count, summed over layers when given per layer, with thousands separators.

    >>> fmt_count({"a": 1200, "b": 34})
    '1,234'
    """
    if value is None:
        return MISSING
    return f"{sum(value.values()) if isinstance(value, dict) else value:,}"


def fmt_seconds(value: float | None, missing: str = MISSING) -> str:
    """Seconds to a tenth, with the hours beside them from one hour up, or ``missing`` (default: "—").

    >>> fmt_seconds(1512.0), fmt_seconds(7200.0)
    ('1,512.0 s', '7,200.0 s (2.00 h)')
    """
    if value is None:
        return missing
    hours = f" ({value / 3600:.2f} h)" if value >= 3600 else ""
    return f"{value:,.1f} s{hours}"


def fmt_bytes(value: int | None) -> str:
    """A byte count in its SI unit (:func:`~prunefl.report.plots.byte_unit`), whole bytes below 1 kB.

    >>> fmt_bytes(512), fmt_bytes(2_500_000)
    ('512 B', '2.50 MB')
    """
    if value is None:
        return MISSING
    unit, size = byte_unit(value)
    return f"{value} B" if unit == "B" else f"{value / size:.2f} {unit}"


def text_table(header: Sequence[str], body: Sequence[Sequence[str]], left: Collection[int] = (0,)) -> str:
    """A plain-text table with aligned columns, for the terminal: header, a rule of dashes, then the body.

    Columns are two spaces apart; those whose index is in ``left`` are left-aligned (names), the others
    right-aligned (numbers) (default: only the first). Lines carry no trailing spaces and the text no final newline.

    >>> print(text_table(["run", "acc"], [["fedavg", "0.8512"], ["prunefl", "0.86"]]))
    run         acc
    -------  ------
    fedavg   0.8512
    prunefl    0.86
    """
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True)))  # fmt: skip
        for row in [header, ["-" * w for w in widths], *body]
    ]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Iterator[str]:
    """The lines of a Markdown table, then an empty line; ``|`` inside a cell is escaped.

    >>> print("\\n".join(markdown_table(["run", "acc"], [["a|b", "0.5"]])))
    | run | acc |
    |---|---|
    | a\\|b | 0.5 |
    <BLANKLINE>
    """
    yield "| " + " | ".join(header) + " |"
    yield "|" + "|".join("---" for _ in header) + "|"
    for row in rows:
        yield "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
    yield ""


def config_section(config: dict[str, Any]) -> Iterator[str]:
    """The lines of a report's "Configuration" section: the key settings as a table, the whole config folded.

    ``config`` is a resolved config as nested tables (``config.toml`` read back); it is listed flat, one
    ``dotted.key = value`` line per setting, in TOML spelling.

    >>> lines = list(config_section({"seed": 0, "fl": {"lr": 0.1}}))
    >>> lines[4], lines[-5]
    ('| `seed` | `0` |', 'fl.lr = 0.1')
    """
    leaves = dict(_flatten(config))
    yield "## Configuration"
    yield ""
    key_rows = [[f"`{key}`", f"`{_toml_value(leaves[key])}`"] for key in _KEY_CONFIG if key in leaves]
    if key_rows:
        yield from markdown_table(["key", "value"], key_rows)
    yield "<details><summary>Full resolved configuration</summary>"
    yield ""
    yield "```toml"
    yield from (f"{key} = {_toml_value(value)}" for key, value in leaves.items())
    yield "```"
    yield ""
    yield "</details>"
    yield ""


def plots_section(captions: Mapping[str, str], plots_dir: Path, report_dir: Path) -> Iterator[str]:
    """The lines of a report's "Plots" section: each PNG of ``captions`` found in ``plots_dir``, in that order.

    ``captions`` maps file names to captions; images link by their path relative to ``report_dir``, the folder
    of the report. Nothing when none of the files exists.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     (Path(d) / "plots").mkdir()
    ...     _ = (Path(d) / "plots" / "a.png").write_bytes(b"")
    ...     list(plots_section({"a.png": "Accuracy", "b.png": "Bytes"}, Path(d) / "plots", Path(d)))
    ['## Plots', '', '![Accuracy](plots/a.png)', '']
    """
    present = [(file, caption) for file, caption in captions.items() if (plots_dir / file).is_file()]
    if not present:
        return
    yield "## Plots"
    yield ""
    for file, caption in present:
        relative = Path(os.path.relpath(plots_dir / file, report_dir)).as_posix()
        yield f"![{caption}]({relative})"
        yield ""


def _flatten(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _toml_value(value: Any) -> str:
    # JSON spells strings, booleans, numbers and arrays as TOML does; dates and times fall back to str().
    return json.dumps(value, default=str)
