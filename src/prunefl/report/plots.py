"""Paper-style PNG plots of one run, or of several runs overlaid, built from their results folders.

Figures follow the paper's convention (spec §11.5): 1920×1440 px (6.4×4.8 in at 300 dpi); conventional FL blue,
PruneFL orange, SNIP green, online red, iterative purple; IP at negative round indices with a dashed line at the
IP/FL boundary. Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``, so no global figure state or display backend is involved and nothing needs closing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from prunefl.errors import ConfigError
from prunefl.pruning.methods import all_specs
from prunefl.metrics import (
    K_BYTES_DOWN,
    K_BYTES_UP,
    K_DENSITY,
    K_LAYER_DENSITY,
    K_RECONFIG,
    K_SIM_CLOCK_S,
    K_TEST_ACCURACY,
)
from prunefl.report.results_io import (
    RunLike,
    RunResults,
    evaluated_rows,
    ip_rows,
    load_run,
    plot_round,
    target_accuracies,
)

__all__ = [
    "PlotStyle",
    "PLOTS_DIR",
    "ACCURACY_VS_TIME",
    "ACCURACY_VS_ROUND",
    "DENSITY_VS_TIME",
    "BYTES_VS_ROUND",
    "plot_run",
    "plot_comparison",
    "method_colours",
    "time_unit",
    "byte_unit",
    "run_labels",
    "IP_END_ROUND",
    "new_figure",
    "save_figure",
    "round_label",
    "mark_targets",
]

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"  # default folder of a run's plots, inside its results folder
ACCURACY_VS_TIME = "accuracy_vs_time.png"
ACCURACY_VS_ROUND = "accuracy_vs_round.png"
DENSITY_VS_TIME = "density_vs_time.png"
BYTES_VS_ROUND = "bytes_vs_round.png"
IP_END_ROUND = -0.5  # on a round axis the last IP round is -1 and the first FL round 0 (results_io.plot_round)

# Training and size plots of the paper (spec §11.5): tab10 colours C0..C4.
_FALLBACK_COLOURS = ("tab:olive", "tab:cyan", "black", "dimgray", "gold")  # an unregistered method looks like none
_LINESTYLES = ("-", "--", ":", "-.")  # repeated methods (several seeds) share a colour and differ by style
_TICK_HEIGHT = 0.04  # reconfiguration ticks, as a fraction of the axes height
_MAX_LAYER_LEGEND = 10  # more per-layer lines than this get one legend entry instead of one each
_LegendLoc = Literal["best", "lower right", "upper left"]


@dataclass(frozen=True)
class PlotStyle:
    """Size and resolution of every figure.

    Parameters
    ----------
    width_in, height_in : float
        Figure size in inches (default: 6.4 × 4.8).
    dpi : int
        Dots per inch of the saved PNG (default: 300, so 1920×1440 px as in the paper, spec §11.5).
    """

    width_in: float = 6.4
    height_in: float = 4.8
    dpi: int = 300

    def __post_init__(self) -> None:
        _check_positive("width_in", self.width_in)
        _check_positive("height_in", self.height_in)
        _check_positive("dpi", self.dpi)

    @property
    def size_px(self) -> tuple[int, int]:
        """``(width, height)`` of the saved PNG in pixels.

        >>> PlotStyle().size_px
        (1920, 1440)
        """
        return round(self.width_in * self.dpi), round(self.height_in * self.dpi)


def plot_run(
    run: RunLike, out_dir: str | os.PathLike[str] | None = None, *, style: PlotStyle | None = None
) -> list[Path]:
    """Write the four plots of one run.

    Writes ``accuracy_vs_time.png`` (test accuracy against simulated time), ``accuracy_vs_round.png``,
    ``density_vs_time.png`` (total and per-layer density) and ``bytes_vs_round.png`` (cumulative bytes up and
    down) into ``out_dir``, creating it and overwriting existing files. Reconfiguration rounds are marked by
    short vertical ticks at the bottom of each plot, the end of initial pruning by a dashed line, and the
    summary's target accuracies by dotted horizontal lines.

    Parameters
    ----------
    run : RunResults or path-like
        The results folder, or a run already loaded with :func:`~prunefl.report.results_io.load_run`.
    out_dir : path-like or None
        Where to write the PNGs (default: ``<run_dir>/plots``).
    style : PlotStyle
        Figure size and resolution (default: ``PlotStyle()``, 6.4×4.8 in at 300 dpi).

    Returns
    -------
    list of pathlib.Path
        The written files, in the order above.

    Raises
    ------
    DataError
        If the run folder cannot be read.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     rows = [{"round": r, "sim-clock-s": 10.0 * (r + 1), "density": 1.0, "test-accuracy": 0.1 * r}
    ...             for r in range(3)]
    ...     _ = (Path(d) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    ...     _ = (Path(d) / "summary.json").write_text('{"method": "fedavg"}')
    ...     [p.name for p in plot_run(d, style=PlotStyle(2, 1.5, 50))]
    ['accuracy_vs_time.png', 'accuracy_vs_round.png', 'density_vs_time.png', 'bytes_vs_round.png']
    """
    style = style or PlotStyle()
    loaded = load_run(run)
    out = Path(out_dir) if out_dir is not None else loaded.run_dir / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    curves = _Curves.from_run(loaded)
    colour = method_colours([loaded.method])[0]
    unit, seconds_per_unit = time_unit(float(curves.sim_s.max(initial=0.0)))
    x_time = curves.sim_s / seconds_per_unit
    ip_end_time = curves.ip_end_s / seconds_per_unit
    targets = target_accuracies([loaded.summary])
    name = f"{loaded.method} ({loaded.run_dir.name})"
    paths = []

    # --- test accuracy against simulated time and against round ---
    for file, x, xlabel, ip_end in (
        (ACCURACY_VS_TIME, x_time, f"Simulated time ({unit})", ip_end_time),
        (ACCURACY_VS_ROUND, curves.x_round, round_label(curves.has_ip), IP_END_ROUND),
    ):
        fig, ax = new_figure(style)
        ax.plot(x[curves.evaluated], curves.accuracy, color=colour, marker="o", markersize=2.5, lw=1.2,
                label=loaded.method)  # fmt: skip
        if not curves.evaluated.any():
            ax.text(0.5, 0.5, "no test evaluation recorded", transform=ax.transAxes, ha="center", color="0.4")
        mark_targets(ax, targets)
        _mark_run_events(ax, curves, x, ip_end)
        ax.set(title=f"Test accuracy — {name}", xlabel=xlabel, ylabel="Test accuracy")
        paths.append(save_figure(fig, ax, out / file, legend_loc="lower right"))

    # --- density (total and per layer) against simulated time ---
    fig, ax = new_figure(style)
    n_layers = len(curves.layer_density)
    for i, (layer, density, layer_colour) in enumerate(
        zip(curves.layer_density, curves.layer_density.values(), _layer_colours(n_layers), strict=True)
    ):
        if n_layers <= _MAX_LAYER_LEGEND:
            label: str | None = layer
        else:
            label = f"per layer ({n_layers} layers)" if i == 0 else None
        ax.plot(x_time, density, color=layer_colour, lw=0.8, alpha=0.8, drawstyle="steps-post", label=label)
    ax.plot(x_time, curves.density, color=colour, lw=2.0, drawstyle="steps-post", label="total")
    ax.set_ylim(0.0, 1.05)
    _mark_run_events(ax, curves, x_time, ip_end_time)
    ax.set(title=f"Density — {name}", xlabel=f"Simulated time ({unit})", ylabel="Density (fraction kept)")
    paths.append(save_figure(fig, ax, out / DENSITY_VS_TIME, legend_loc="best"))

    # --- cumulative bytes against round ---
    fig, ax = new_figure(style)
    b_unit, bytes_per_unit = byte_unit(float(max(curves.bytes_up.max(initial=0), curves.bytes_down.max(initial=0))))
    ax.plot(curves.x_round, curves.bytes_up / bytes_per_unit, color="C0", lw=1.5, label="up (clients → server)")
    ax.plot(curves.x_round, curves.bytes_down / bytes_per_unit, color="C3", lw=1.5, ls="--",
            label="down (server → clients)")  # fmt: skip
    ax.set_ylim(bottom=0.0)
    _mark_run_events(ax, curves, curves.x_round, IP_END_ROUND)
    ax.set(title=f"Cumulative bytes — {name}", xlabel=round_label(curves.has_ip), ylabel=f"Bytes ({b_unit})")
    paths.append(save_figure(fig, ax, out / BYTES_VS_ROUND, legend_loc="upper left"))
    logger.debug("wrote %d plots of %s to %s", len(paths), loaded.run_dir, out)
    return paths


def plot_comparison(
    runs: Sequence[RunLike],
    out_dir: str | os.PathLike[str],
    labels: Sequence[str] | None = None,
    *,
    style: PlotStyle | None = None,
) -> list[Path]:
    """Overlay several runs: accuracy against simulated time and round, and density against simulated time.

    Writes ``accuracy_vs_time.png``, ``accuracy_vs_round.png`` and ``density_vs_time.png`` into ``out_dir``
    (created if needed, files overwritten). Each method has its registered colour (the paper's for the official methods); runs
    of the same method differ by line style. The union of the summaries' target accuracies is drawn as dotted
    horizontal lines.

    Parameters
    ----------
    runs : sequence of RunResults or path-like
        Results folders (or loaded runs), at least one.
    out_dir : path-like
        Where to write the PNGs.
    labels : sequence of str or None
        Legend label per run (default: :func:`run_labels`).
    style : PlotStyle
        Figure size and resolution (default: ``PlotStyle()``, 6.4×4.8 in at 300 dpi).

    Returns
    -------
    list of pathlib.Path
        The written files, in the order above.

    Raises
    ------
    ValueError
        If ``runs`` is empty or ``labels`` has a different length.
    DataError
        If a run folder cannot be read.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for method in ("fedavg", "prunefl"):
    ...         run = Path(d) / method
    ...         run.mkdir()
    ...         _ = (run / "metrics.jsonl").write_text('{"round": 0, "sim-clock-s": 5.0, "density": 1.0}\\n')
    ...         _ = (run / "summary.json").write_text(json.dumps({"method": method}))
    ...     paths = plot_comparison([Path(d) / "fedavg", Path(d) / "prunefl"], Path(d) / "cmp",
    ...                             style=PlotStyle(2, 1.5, 50))
    ...     [p.name for p in paths]
    ['accuracy_vs_time.png', 'accuracy_vs_round.png', 'density_vs_time.png']
    """
    if not runs:
        raise ValueError("plot_comparison needs at least one run, got none")
    loaded = [load_run(run) for run in runs]
    labels = run_labels(loaded, labels)
    style = style or PlotStyle()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = [_Curves.from_run(run) for run in loaded]
    colours = method_colours([run.method for run in loaded])
    linestyles = _repeat_linestyles([run.method for run in loaded])
    unit, seconds_per_unit = time_unit(max(float(c.sim_s.max(initial=0.0)) for c in curves))
    targets = target_accuracies([run.summary for run in loaded])
    any_ip = any(c.has_ip for c in curves)
    paths = []

    for file, by_time in ((ACCURACY_VS_TIME, True), (ACCURACY_VS_ROUND, False)):
        fig, ax = new_figure(style)
        for c, label, colour, ls in zip(curves, labels, colours, linestyles, strict=True):
            x = c.sim_s / seconds_per_unit if by_time else c.x_round
            ax.plot(x[c.evaluated], c.accuracy, color=colour, ls=ls, marker="o", markersize=2.0, lw=1.2, label=label)
        mark_targets(ax, targets)
        if any_ip and not by_time:
            ax.axvline(IP_END_ROUND, color="0.4", ls="--", lw=1.0, label="end of IP")
        ax.set(
            title=f"Test accuracy vs {'simulated time' if by_time else 'round'}",
            xlabel=f"Simulated time ({unit})" if by_time else round_label(any_ip),
            ylabel="Test accuracy",
        )
        paths.append(save_figure(fig, ax, out / file, legend_loc="lower right"))

    fig, ax = new_figure(style)
    for c, label, colour, ls in zip(curves, labels, colours, linestyles, strict=True):
        ax.plot(c.sim_s / seconds_per_unit, c.density, color=colour, ls=ls, lw=1.5, drawstyle="steps-post",
                label=label)  # fmt: skip
    ax.set_ylim(0.0, 1.05)
    ax.set(title="Density vs simulated time", xlabel=f"Simulated time ({unit})", ylabel="Density (fraction kept)")
    paths.append(save_figure(fig, ax, out / DENSITY_VS_TIME, legend_loc="best"))
    logger.debug("wrote %d comparison plots of %d runs to %s", len(paths), len(loaded), out)
    return paths


def method_colours(methods: Sequence[str]) -> list[str]:
    """Give each run its colour: its registered colour (the paper's for the official methods), otherwise the
    fallback colours in turn.

    An unknown method keeps the colour it was first given, so repeated runs of it match.

    >>> method_colours(["prunefl", "FedAvg", "mine", "other", "mine"])
    ['C1', 'C0', 'tab:olive', 'tab:cyan', 'tab:olive']
    """
    assigned = {spec.name: spec.colour for spec in all_specs() if spec.colour}
    n_unknown = 0
    colours = []
    for method in methods:
        key = method.lower()
        if key not in assigned:
            assigned[key] = _FALLBACK_COLOURS[n_unknown % len(_FALLBACK_COLOURS)]
            n_unknown += 1
        colours.append(assigned[key])
    return colours


def run_labels(runs: Sequence[RunResults], labels: Sequence[str] | None = None) -> list[str]:
    """Name each run in legends and tables: ``labels`` if given, else its method plus, where two runs share a
    method, its folder name.

    Raises
    ------
    ValueError
        If ``labels`` is given with a different length than ``runs``.

    Examples
    --------
    >>> from pathlib import Path
    >>> runs = [RunResults(Path(n), [], {"method": m}, {}) for n, m in [("a", "fedavg"), ("b", "prunefl"),
    ...                                                                      ("c", "prunefl")]]
    >>> run_labels(runs)
    ['fedavg', 'prunefl (b)', 'prunefl (c)']
    """
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"expected one label per run ({len(runs)}), got {len(labels)}: {list(labels)}")
        return list(labels)
    methods = [run.method for run in runs]
    return [f"{run.method} ({run.run_dir.name})" if methods.count(run.method) > 1 else run.method for run in runs]


def time_unit(max_s: float) -> tuple[str, float]:
    """Choose the unit of a simulated-time axis that ends at ``max_s`` seconds.

    Returns the unit's name and its length in seconds: seconds below 2 min, minutes below 2 h, else hours.

    >>> time_unit(90.0), time_unit(1800.0), time_unit(17_200.0)
    (('s', 1.0), ('min', 60.0), ('h', 3600.0))
    """
    if max_s < 120.0:
        return "s", 1.0
    if max_s < 7200.0:
        return "min", 60.0
    return "h", 3600.0


def byte_unit(max_bytes: float) -> tuple[str, float]:
    """Choose the decimal (SI) unit of a byte axis that ends at ``max_bytes``.

    >>> byte_unit(512), byte_unit(3e6), byte_unit(2.5e9)
    (('B', 1.0), ('MB', 1000000.0), ('GB', 1000000000.0))
    """
    for name, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if max_bytes >= size:
            return name, size
    return "B", 1.0


def new_figure(style: PlotStyle) -> tuple[Figure, Axes]:
    """A figure of ``style``'s size and resolution with one axes, outside ``pyplot`` (see the module docstring).

    >>> fig, ax = new_figure(PlotStyle(2, 1.5, 50))
    >>> fig.get_size_inches().tolist()
    [2.0, 1.5]
    """
    # Constrained layout instead of bbox_inches="tight", so the PNG keeps exactly style.size_px.
    fig = Figure(figsize=(style.width_in, style.height_in), dpi=style.dpi, layout="constrained")
    return fig, fig.add_subplot()


def save_figure(fig: Figure, ax: Axes, path: Path, *, legend_loc: _LegendLoc) -> Path:
    """Give ``ax`` the house title size, grid and legend, write ``fig`` to ``path`` as PNG and clear it.

    Overwrites ``path``; the legend, drawn only when something is labelled, keeps clear of the strip of
    reconfiguration ticks. Returns ``path``.

    >>> import tempfile
    >>> fig, ax = new_figure(PlotStyle(2, 1.5, 50))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_figure(fig, ax, Path(d) / "a.png", legend_loc="best").stat().st_size > 0
    True
    """
    ax.title.set_fontsize(10)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        # The legend's box leaves out the strip of reconfiguration ticks, so a legend at the bottom sits above them.
        ax.legend(
            loc=legend_loc, bbox_to_anchor=(0.0, _TICK_HEIGHT, 1.0, 1.0 - _TICK_HEIGHT), fontsize=7, framealpha=0.85
        )
    fig.savefig(path, dpi=fig.dpi, format="png")
    fig.clear()  # drop the artists now; a Figure outside pyplot is otherwise freed only by the garbage collector
    return path


def round_label(has_ip: bool) -> str:
    """The label of a round axis, which has IP rounds at negative indices when ``has_ip``.

    >>> round_label(True)
    'Round (IP at negative indices)'
    """
    return "Round (IP at negative indices)" if has_ip else "Round"


def mark_targets(ax: Axes, targets: Sequence[float]) -> None:
    """Draw each target accuracy as a dotted horizontal line on ``ax``, labelled with its value at the left.

    >>> fig, ax = new_figure(PlotStyle(2, 1.5, 50))
    >>> mark_targets(ax, [0.8, 0.9])
    >>> len(ax.lines), ax.lines[0].get_label()
    (2, 'target accuracy')
    """
    # Label on the left, where accuracy curves are still low and the text does not hide them.
    to_axes_x = blended_transform_factory(ax.transAxes, ax.transData)
    for i, target in enumerate(targets):
        ax.axhline(target, color="0.5", ls=":", lw=0.9, label="target accuracy" if i == 0 else None)
        ax.text(0.01, target, f"{target:g}", transform=to_axes_x, fontsize=7, color="0.35", ha="left", va="bottom")


@dataclass(frozen=True)
class _Curves:
    """One run's metrics as arrays, one entry per row (``accuracy`` only for evaluated rows)."""

    sim_s: np.ndarray  # (n_rows,)
    x_round: np.ndarray  # (n_rows,), IP rounds negative
    evaluated: np.ndarray  # (n_rows,) bool
    accuracy: np.ndarray  # (n_evaluated,)
    density: np.ndarray  # (n_rows,)
    layer_density: dict[str, np.ndarray]  # name -> (n_rows,), NaN where a row lacks the layer
    reconfig: np.ndarray  # (n_rows,) bool
    bytes_up: np.ndarray  # (n_rows,) cumulative
    bytes_down: np.ndarray  # (n_rows,) cumulative
    has_ip: bool
    ip_end_s: float  # simulated clock at the end of IP; NaN without IP

    @classmethod
    def from_run(cls, run: RunResults) -> _Curves:
        rows = run.rows
        evaluated = np.array([row.get(K_TEST_ACCURACY) is not None for row in rows], dtype=bool)
        layers: dict[str, None] = {}  # insertion-ordered set: layers in order of first appearance
        for row in rows:
            layers.update(dict.fromkeys(row.get(K_LAYER_DENSITY) or {}))
        ip = ip_rows(rows)
        return cls(
            sim_s=np.array([row[K_SIM_CLOCK_S] for row in rows], dtype=float),
            x_round=np.array(plot_round(rows), dtype=float),
            evaluated=evaluated,
            accuracy=np.array([row[K_TEST_ACCURACY] for row in evaluated_rows(rows)], dtype=float),
            density=np.array([row[K_DENSITY] for row in rows], dtype=float),
            layer_density={
                layer: np.array([(row.get(K_LAYER_DENSITY) or {}).get(layer, np.nan) for row in rows], dtype=float)
                for layer in layers
            },
            reconfig=np.array([bool(row.get(K_RECONFIG)) for row in rows], dtype=bool),
            bytes_up=np.cumsum([row.get(K_BYTES_UP, 0) for row in rows], dtype=float),
            bytes_down=np.cumsum([row.get(K_BYTES_DOWN, 0) for row in rows], dtype=float),
            has_ip=bool(ip),
            ip_end_s=float(ip[-1][K_SIM_CLOCK_S]) if ip else float("nan"),
        )


def _mark_run_events(ax: Axes, curves: _Curves, x: np.ndarray, ip_end_x: float) -> None:
    if curves.reconfig.any():
        # Short ticks along the bottom edge (x in data, y in axes coordinates), so they never hide a curve.
        ax.vlines(
            x[curves.reconfig],
            0.0,
            _TICK_HEIGHT,
            transform=ax.get_xaxis_transform(),
            colors="0.25",
            lw=0.9,
            label="reconfiguration",
        )
    if curves.has_ip and np.isfinite(ip_end_x):
        ax.axvline(ip_end_x, color="0.4", ls="--", lw=1.0, label="end of IP")


def _layer_colours(n_layers: int) -> list[Any]:
    # A sequential colormap keeps per-layer lines apart from the method colours of the total line.
    cmap = colormaps["viridis"]
    return [cmap(i / max(n_layers - 1, 1) * 0.9) for i in range(n_layers)]


def _repeat_linestyles(methods: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    styles = []
    for method in methods:
        key = method.lower()
        styles.append(_LINESTYLES[seen.get(key, 0) % len(_LINESTYLES)])
        seen[key] = seen.get(key, 0) + 1
    return styles


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
