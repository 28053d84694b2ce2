"""The comparison table: each method's runs of a comparison aggregated over seeds, as rows, cells and plain text.

Everything is computed from the runs' ``summary.json`` files (times to target, totals), so the table a finished
comparison printed can be rebuilt from its folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prunefl.metrics import (
    K_BEST_ACCURACY,
    K_BYTES_DOWN,
    K_BYTES_UP,
    K_FINAL_ACCURACY,
    K_FINAL_ACCURACY_FULL,
    K_FINAL_DENSITY,
    K_IP,
    K_IP_CHARGED,
    K_IP_COMPUTE_S,
    K_ROUND,
    K_SIM_CLOCK_S,
    K_TARGET_ACCURACY,
    K_TARGETS,
)
from prunefl.pruning.methods import MethodSpec, all_specs
from prunefl.report.formatting import (
    MISSING,
    NOT_REACHED,
    fmt_accuracy,
    fmt_bytes,
    fmt_density,
    fmt_seconds,
    text_table,
)
from prunefl.report.results_io import target_accuracies

__all__ = [
    "Spread",
    "TargetCell",
    "MethodRow",
    "aggregate_comparison",
    "format_comparison_table",
    "table_cells",
    "method_label",
]

_CLOCK_CHARGED = "IP charged"
_CLOCK_NOT_CHARGED = "IP not charged"


@dataclass(frozen=True)
class Spread:
    """Mean, smallest and largest value of one quantity over the seeds that have it, and how many do."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """The spread of ``values``; None when there are none.

        >>> Spread.of([812.0, 930.0, 883.0])
        Spread(mean=875.0, low=812.0, high=930.0, n=3)
        """
        if not values:
            return None
        return cls(float(np.mean(values)), float(min(values)), float(max(values)), len(values))


@dataclass(frozen=True)
class TargetCell:
    """Time to one target accuracy of one method, over seeds.

    Parameters
    ----------
    target : float
        The target accuracy.
    time_s : Spread or None
        Simulated time of the first evaluation at or above the target, over the seeds that reached it.
    round : Spread or None
        That evaluation's round.
    reached : int
        Seeds that reached the target.
    runs : int
        Finished runs of the method (the denominator of ``reached``).
    speed_up : Spread or None
        Baseline time / this method's time, per seed where both reached the target; None without such seeds.
    """

    target: float
    time_s: Spread | None
    round: Spread | None
    reached: int
    runs: int
    speed_up: Spread | None


@dataclass(frozen=True)
class MethodRow:
    """One row of the comparison table: a method (for initial pruning, one row per IP clock) over its seeds.

    Parameters
    ----------
    method : str
        Registered method name.
    label : str
        Name in the table: display name, "(extension)" where the spec says so, and the IP clock if any.
    clock : str
        "" (the run's own clock), "IP charged" or "IP not charged".
    extension : bool
        Not in the official PruneFL code (``MethodSpec.extension``).
    warning : str
        The method's caveat (``MethodSpec.warning``), printed beside it.
    runs, planned : int
        Finished runs aggregated here, and runs the comparison planned for the method.
    targets : tuple of TargetCell
        One per target accuracy, ascending.
    final_accuracy, best_accuracy, final_density, bytes_up, bytes_down, sim_time_s : float or None
        Means over the finished runs (final accuracy on the full test set where the run measured it).
    """

    method: str
    label: str
    clock: str
    extension: bool
    warning: str
    runs: int
    planned: int
    targets: tuple[TargetCell, ...]
    final_accuracy: float | None
    best_accuracy: float | None
    final_density: float | None
    bytes_up: float | None
    bytes_down: float | None
    sim_time_s: float | None


def aggregate_comparison(summaries: Mapping[str, Mapping[int, Mapping[str, Any] | None]]) -> list[MethodRow]:
    """Aggregate each method's run summaries over seeds into table rows.

    Rows follow the registry order (unregistered methods last, in the given order). Times to target are the
    run summaries' own (first evaluation at or above the target); mean, min and max are over the seeds that
    reached it. The speed-up is the baseline method's (``MethodSpec.baseline``) time divided by this method's,
    per seed where both reached the target, then averaged over those seeds. Accuracies, density, bytes and
    total simulated time are means over the finished runs; the final accuracy is the full-test-set one where
    the run measured it (``final-accuracy-full-test``).

    A method with initial pruning (``MethodSpec.initial_pruning``, summary ``ip``) gets two rows: IP compute
    charged to the clock and not charged. The run has one of them on its clock; since IP happens before round 0,
    the other shifts every time by ± ``ip.sim-compute-s``.

    Parameters
    ----------
    summaries : mapping
        ``{method: {seed: summary.json contents, or None where the run did not finish}}``.

    Returns
    -------
    list of MethodRow

    Examples
    --------
    >>> def run(t_s, acc):
    ...     return {"targets": [{"target-accuracy": 0.8, "round": 9, "sim-clock-s": t_s}], "final-accuracy": acc}
    >>> rows = aggregate_comparison({"fedavg": {0: run(100.0, 0.75), 1: run(300.0, 0.25)},
    ...                              "prunefl-no-ip": {0: run(50.0, 0.5), 1: run(100.0, None)}})
    >>> [(r.method, r.targets[0].speed_up.mean, r.final_accuracy) for r in rows]
    [('fedavg', 1.0, 0.5), ('prunefl-no-ip', 2.5, 0.5)]
    """
    specs = {spec.name: spec for spec in all_specs()}
    order = {name: i for i, name in enumerate(specs)}
    methods = sorted(summaries, key=lambda m: (order.get(m, len(order)), list(summaries).index(m)))
    targets = target_accuracies(s for per_seed in summaries.values() for s in per_seed.values() if s is not None)
    baseline = next((m for m in methods if m in specs and specs[m].baseline), None)
    baseline_times = (
        {seed: _target_times(s, targets, 0.0) for seed, s in summaries[baseline].items() if s is not None}
        if baseline is not None else {}
    )  # fmt: skip
    rows = []
    for method in methods:
        spec = specs.get(method)
        finished = {seed: s for seed, s in summaries[method].items() if s is not None}
        has_ip = (spec is not None and spec.initial_pruning
                  and any(_ip_compute_s(s) is not None for s in finished.values()))  # fmt: skip
        for clock in (_CLOCK_CHARGED, _CLOCK_NOT_CHARGED) if has_ip else ("",):
            shifts = {seed: _clock_shift_s(s, clock) for seed, s in finished.items()}
            rows.append(_method_row(method, spec, clock, finished, len(summaries[method]), shifts, targets,
                                    baseline_times if baseline is not None else None))  # fmt: skip
    return rows


def format_comparison_table(rows: Sequence[MethodRow]) -> str:
    """Format aggregated rows as a plain-text table with aligned columns (the stdout twin of report.md's).

    A time-to-target cell reads ``875 s (812–930), r 89 (84–95), 3/3``: mean simulated time (min–max),
    mean round (min–max), seeds that reached the target / finished runs; ``n.r.`` where none did. A speed-up
    cell is the mean of the per-seed ratios (min–max) and how many seeds both reached the target.

    Examples
    --------
    >>> def run(t_s, r):
    ...     return {"targets": [{"target-accuracy": 0.8, "round": r, "sim-clock-s": t_s}], "final-accuracy": 0.8}
    >>> print(format_comparison_table(aggregate_comparison({"fedavg": {0: run(812.0, 84), 1: run(930.0, 95)},
    ...                                                     "prunefl-no-ip": {0: run(406.0, 80), 1: None}})))
    method           seeds                                to 0.8  speed-up 0.8  final acc  best acc  density  bytes up  bytes down  sim time
    ---------------  -----  ------------------------------------  ------------  ---------  --------  -------  --------  ----------  --------
    Conventional FL      2  871 s (812–930), r 89.5 (84–95), 2/2    1.00×, 2/2     0.8000         —        —         —           —         —
    PruneFL (no IP)    1/2                      406 s, r 80, 1/1    2.00×, 1/1     0.8000         —        —         —           —         —
    """
    header, body = table_cells(rows)
    left = {0, len(header) - 1} if header[-1] == "notes" else {0}  # names and notes left-aligned, numbers right
    return text_table(header, body, left)


def table_cells(rows: Sequence[MethodRow]) -> tuple[list[str], list[list[str]]]:
    """The comparison table's header and body cells, for :func:`format_comparison_table` and the Markdown report.

    Columns: method, seeds (finished, or finished/planned), per target accuracy the time to it (and, when a
    baseline ran, the speed-up; cells as :func:`format_comparison_table` describes), then the means, and the
    methods' caveats when any has one.

    >>> run = {"targets": [{"target-accuracy": 0.8, "round": 80, "sim-clock-s": 406.0}], "final-accuracy": 0.8}
    >>> header, body = table_cells(aggregate_comparison({"prunefl-no-ip": {0: run, 1: None}}))
    >>> header[:3], body[0][:3]
    (['method', 'seeds', 'to 0.8'], ['PruneFL (no IP)', '1/2', '406 s, r 80, 1/1'])
    """
    targets = [cell.target for cell in rows[0].targets] if rows else []
    speed = any(cell.speed_up is not None for row in rows for cell in row.targets) or any(
        _is_baseline(row.method) for row in rows
    )
    notes = any(row.warning for row in rows)
    header = ["method", "seeds"]
    for target in targets:
        header += [f"to {target:g}", *([f"speed-up {target:g}"] if speed else [])]
    header += ["final acc", "best acc", "density", "bytes up", "bytes down", "sim time", *(["notes"] if notes else [])]
    body = []
    for row in rows:
        cells = [row.label, str(row.runs) if row.runs == row.planned else f"{row.runs}/{row.planned}"]
        for cell in row.targets:
            cells.append(_fmt_target(cell))
            if speed:
                cells.append(_fmt_speed_up(cell))
        cells += [
            fmt_accuracy(row.final_accuracy),
            fmt_accuracy(row.best_accuracy),
            fmt_density(row.final_density),
            fmt_bytes(None if row.bytes_up is None else round(row.bytes_up)),
            fmt_bytes(None if row.bytes_down is None else round(row.bytes_down)),
            fmt_seconds(row.sim_time_s),
        ]
        if notes:
            cells.append(row.warning)
        body.append(cells)
    return header, body


def method_label(method: str, spec: MethodSpec | None) -> str:
    """A method's name in a comparison's table and figures: its display name, with "(extension)" where it is not in
    the official PruneFL code (spec §8); an unregistered method (``spec`` None) keeps its own name.

    >>> from prunefl.pruning.methods import get_spec
    >>> method_label("synflow", get_spec("synflow")), method_label("mine", None)
    ('SynFlow (extension)', 'mine')
    """
    if spec is None:
        return method
    return spec.display_name + (" (extension)" if spec.extension else "")


def _method_row(
    method: str,
    spec: MethodSpec | None,
    clock: str,
    finished: Mapping[int, Mapping[str, Any]],
    planned: int,
    shifts: Mapping[int, float],
    targets: Sequence[float],
    baseline_times: Mapping[int, dict[float, float | None]] | None,
) -> MethodRow:
    times = {seed: _target_times(s, targets, shifts[seed]) for seed, s in finished.items()}
    rounds = {seed: _target_rounds(s, targets) for seed, s in finished.items()}
    cells = []
    for target in targets:
        reached = [seed for seed in finished if times[seed][target] is not None]
        speed_up = None
        if baseline_times is not None:
            ratios = []
            for seed in reached:
                base_s, own_s = baseline_times.get(seed, {}).get(target), times[seed][target]
                if base_s is not None and own_s is not None and own_s > 0:  # at 0 s there is no finite ratio
                    ratios.append(base_s / own_s)
            speed_up = Spread.of(ratios)
        cells.append(TargetCell(
            target=target,
            time_s=Spread.of([t for seed in reached if (t := times[seed][target]) is not None]),
            round=Spread.of([float(r) for seed in reached if (r := rounds[seed][target]) is not None]),
            reached=len(reached),
            runs=len(finished),
            speed_up=speed_up,
        ))  # fmt: skip
    label = method_label(method, spec)
    if clock:
        label += f" [{clock}]"
    sim_times = [float(s[K_SIM_CLOCK_S]) + shifts[seed] for seed, s in finished.items()
                 if s.get(K_SIM_CLOCK_S) is not None]  # fmt: skip
    return MethodRow(
        method=method,
        label=label,
        clock=clock,
        extension=spec is not None and spec.extension,
        warning="" if spec is None else spec.warning,
        runs=len(finished),
        planned=planned,
        targets=tuple(cells),
        final_accuracy=_mean([_final_accuracy(s) for s in finished.values()]),
        best_accuracy=_mean([s.get(K_BEST_ACCURACY) for s in finished.values()]),
        final_density=_mean([s.get(K_FINAL_DENSITY) for s in finished.values()]),
        bytes_up=_mean([s.get(K_BYTES_UP) for s in finished.values()]),
        bytes_down=_mean([s.get(K_BYTES_DOWN) for s in finished.values()]),
        sim_time_s=_mean(sim_times),
    )


def _target_times(summary: Mapping[str, Any], targets: Sequence[float], shift_s: float) -> dict[float, float | None]:
    entries = {float(t[K_TARGET_ACCURACY]): t for t in summary.get(K_TARGETS) or []}
    out: dict[float, float | None] = {}
    for target in targets:
        t = entries.get(target, {}).get(K_SIM_CLOCK_S)
        out[target] = None if t is None else float(t) + shift_s
    return out


def _target_rounds(summary: Mapping[str, Any], targets: Sequence[float]) -> dict[float, int | None]:
    entries = {float(t[K_TARGET_ACCURACY]): t for t in summary.get(K_TARGETS) or []}
    return {target: entries.get(target, {}).get(K_ROUND) for target in targets}


def _ip_compute_s(summary: Mapping[str, Any]) -> float | None:
    ip = summary.get(K_IP)
    if not isinstance(ip, Mapping) or ip.get(K_IP_COMPUTE_S) is None or ip.get(K_IP_CHARGED) is None:
        return None
    return float(ip[K_IP_COMPUTE_S])


def _clock_shift_s(summary: Mapping[str, Any], clock: str) -> float:
    """Seconds to add to the run's clock to put it on ``clock``: IP ran before round 0, so every later time moves
    by the IP compute time when the run charged it and the row does not, or the other way round."""
    ip_s = _ip_compute_s(summary)
    if ip_s is None or not clock:
        return 0.0
    charged = bool(summary[K_IP][K_IP_CHARGED])
    want = clock == _CLOCK_CHARGED
    return 0.0 if charged == want else (ip_s if want else -ip_s)


def _final_accuracy(summary: Mapping[str, Any]) -> Any:
    full = summary.get(K_FINAL_ACCURACY_FULL)
    return full if full is not None else summary.get(K_FINAL_ACCURACY)


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _is_baseline(method: str) -> bool:
    return any(spec.baseline for spec in all_specs() if spec.name == method)


def _fmt_target(cell: TargetCell) -> str:
    if cell.time_s is None or cell.round is None:
        return f"{NOT_REACHED}, 0/{cell.runs}"
    # Whole seconds from 100 s up (a paper's ks scale), tenths below (test-sized runs).
    seconds = "{:,.0f}" if cell.time_s.high >= 100 else "{:.1f}"
    return f"{_fmt_spread(cell.time_s, seconds, ' s')}, r {_fmt_spread(cell.round, '{:g}')}, {cell.reached}/{cell.runs}"


def _fmt_speed_up(cell: TargetCell) -> str:
    if cell.speed_up is None:
        return MISSING
    return f"{_fmt_spread(cell.speed_up, '{:.2f}', '×')}, {cell.speed_up.n}/{cell.runs}"


def _fmt_spread(spread: Spread, number: str, unit: str = "") -> str:
    """``mean unit (low–high)``; the range only where it shows two different numbers."""
    mean = number.format(round(spread.mean, 1) if number == "{:g}" else spread.mean)
    low, high = number.format(spread.low), number.format(spread.high)
    return f"{mean}{unit}" if low == high else f"{mean}{unit} ({low}–{high})"
