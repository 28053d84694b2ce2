"""The ``prunefl profile`` subcommand: measure this machine, fit the time model, print it and write the profile.

``cli.py`` registers it with ``add_profile_parser(sub)``. Like ``cli.py``, this module prints and owns the
progress bar; the measuring and fitting are in :mod:`prunefl.timing.profile`, whose ``ProfileSettings`` documents
every option. That module (and torch) is imported only when the command runs, so building the parser for
``prunefl --help`` stays fast; the defaults quoted in the help are checked against ``ProfileSettings`` by a test.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunefl.errors import ConfigError

if TYPE_CHECKING:
    from prunefl.timing.profile import FitResult, ProfileSettings

__all__ = ["add_profile_parser", "cmd_profile", "default_profile_path", "format_profile_table", "settings_from_args"]

# ProfileSettings defaults quoted in the help; literal so the parser needs no torch (a test keeps them equal).
_HELP_DEFAULTS: dict[str, Any] = {
    "batch_size": 20,
    "threads": 0,
    "densities": (1.0, 0.5, 0.2, 0.05),
    "n_configs": 24,
    "repeats": 10,
    "passes": 2,
    "burn_in": 2,
    "seed": 0,
    "uplink_bytes_per_s": 1e6,
    "downlink_bytes_per_s": 1e6,
}
_MASKED_DENSE_NOTE = (
    "\nnote: masked dense kernels do the full work at any density, so a_l ~ 0 and t0 ~ the dense step time are\n"
    "the honest fit on this backend; a sparse-kernel backend is where a_l > 0 (spec §4.2, §10 item 9)."
)


def add_profile_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``profile`` subcommand on an argparse subparsers object and return its parser.

    The handler is set with ``set_defaults(func=cmd_profile)``, for a main that calls ``args.func(args)``.
    Numbers are parsed by the handler, so a bad value raises ConfigError rather than exiting inside argparse.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="prunefl")
    >>> _ = add_profile_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["profile", "--model", "mlp", "--configs", "3"])
    >>> args.func is cmd_profile, args.model, args.configs
    (True, 'mlp', '3')
    """
    p = subparsers.add_parser(
        "profile",
        help="measure the local-step time of a model on this machine and fit a time-model profile",
        description="Time one local step (masked dense kernels, or CSR fc kernels with --kernels auto) under random "
        "per-layer masks, fit "
        "step_s = t0 + sum_l a_l * kept_l by non-negative least squares, print the fit and write a JSON profile "
        "for `timing.profile` (spec §10 item 9).",
    )
    p.add_argument("--model", required=True, help="model to profile: conv2, conv4, vgg11, resnet18, digits-cnn, mlp")
    p.add_argument("--batch", default=None,
                   help=f"examples per local step (default: {_HELP_DEFAULTS['batch_size']})")
    p.add_argument("--threads", default=None, help=f"torch threads while measuring; 0 leaves torch's "
                   f"(default: {_HELP_DEFAULTS['threads']})")
    p.add_argument("--out", default=None, help="profile file to write (default: profiles/<model>-<hostname>.json)")
    p.add_argument(
        "--densities",
        default=None,
        help="comma-separated per-layer densities to sample (default: "
        + ",".join(f"{d:g}" for d in _HELP_DEFAULTS["densities"])
        + ")",
    )
    p.add_argument("--configs", default=None, help=f"random per-layer configurations on top of one per density "
                   f"(default: {_HELP_DEFAULTS['n_configs']})")
    p.add_argument("--repeats", default=None, help=f"timed steps per configuration, median taken "
                   f"(default: {_HELP_DEFAULTS['repeats']})")
    p.add_argument("--passes", default=None, help=f"visits per configuration the repeats are spread over "
                   f"(default: {_HELP_DEFAULTS['passes']})")
    p.add_argument("--burn-in", default=None,
                   help=f"untimed steps per visit of a configuration (default: {_HELP_DEFAULTS['burn_in']})")
    p.add_argument("--bandwidth", default=None, help=f"link bandwidth in bytes/s, both directions, for b "
                   f"(default: {_HELP_DEFAULTS['uplink_bytes_per_s']:g})")
    p.add_argument("--seed", default=None,
                   help=f"seed of weights, batches and masks (default: {_HELP_DEFAULTS['seed']})")
    p.add_argument("--num-classes", default=None, help="output classes (default: the model's data set)")
    p.add_argument("--input-shape", default=None, help="C,H,W of one example (default: the model's data set)")
    p.add_argument("--kernels", choices=("masked", "auto"), default="masked",
                   help="masked: time masked dense kernels; auto: first measure each fc layer's break-even density, "
                   "then run the fc layers at or below it on the CSR kernel, as `fl.kernels = \"auto\"` does, and "
                   "save the break-even table in the profile (default: masked)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_profile)
    return p


def cmd_profile(args: argparse.Namespace) -> int:
    """Run ``prunefl profile``: measure, fit, write the profile, print the table; return the exit code 0.

    Writes the profile file (``--out``) and prints to stdout; the progress bar goes to stderr.

    Raises
    ------
    ConfigError
        If an argument is malformed or out of range (the message names the flag).

    Examples
    --------
    >>> import tempfile, contextlib, io
    >>> parser = argparse.ArgumentParser(prog="prunefl")
    >>> _ = add_profile_parser(parser.add_subparsers(dest="command"))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     args = parser.parse_args(["profile", "--model", "mlp", "--threads", "1", "--configs", "1",
    ...                               "--repeats", "2", "--no-progress", "--out", f"{d}/mlp.json"])
    ...     with contextlib.redirect_stdout(io.StringIO()) as printed:
    ...         code = cmd_profile(args)
    >>> code, "t0 (s/step)" in printed.getvalue()
    (0, True)
    """
    from prunefl.timing.profile import measure_linear_break_even, prunable_sizes, run_profile

    settings = settings_from_args(args)
    out = Path(args.out) if args.out else default_profile_path(settings.model)
    break_even = None
    if getattr(args, "kernels", "masked") == "auto":
        print(f"measuring break-even densities of the fc layers of {settings.model} ...", file=sys.stderr)
        break_even = measure_linear_break_even(settings)
    bar, progress = (None, None) if args.no_progress else _progress_bar(settings.model)
    try:
        fit = run_profile(settings, out, progress=progress, break_even=break_even)
    finally:
        if bar is not None:
            bar.close()
    print(format_profile_table(fit, settings, prunable_sizes(settings), break_even))
    if break_even is None:
        print(_MASKED_DENSE_NOTE)
    print(f"profile: {out}")
    return 0


def settings_from_args(args: argparse.Namespace) -> ProfileSettings:
    """Convert the parsed ``profile`` arguments into ``ProfileSettings``; flags left out keep their defaults.

    Raises
    ------
    ConfigError
        If a number or list does not parse, or ``ProfileSettings`` rejects a value.

    Examples
    --------
    >>> ns = argparse.Namespace(model="conv2", batch="10", threads=None, densities="1,0.1", configs=None,
    ...                         repeats=None, passes=None, burn_in=None, bandwidth="2e6", seed=None, num_classes=None,
    ...                         input_shape=None)
    >>> s = settings_from_args(ns)
    >>> s.batch_size, s.densities, s.uplink_bytes_per_s
    (10, (1.0, 0.1), 2000000.0)
    """
    from prunefl.timing.profile import ProfileSettings

    options: dict[str, Any] = {}
    for flag, field_name, parse in (
        ("batch", "batch_size", _parse_int),
        ("threads", "threads", _parse_int),
        ("densities", "densities", _parse_floats),
        ("configs", "n_configs", _parse_int),
        ("repeats", "repeats", _parse_int),
        ("passes", "passes", _parse_int),
        ("burn_in", "burn_in", _parse_int),
        ("seed", "seed", _parse_int),
        ("num_classes", "num_classes", _parse_int),
        ("input_shape", "input_shape", _parse_shape),
    ):
        raw = getattr(args, flag, None)
        if raw is not None:
            options[field_name] = parse("--" + flag.replace("_", "-"), raw)
    bandwidth = getattr(args, "bandwidth", None)
    if bandwidth is not None:
        options["uplink_bytes_per_s"] = options["downlink_bytes_per_s"] = _parse_float("--bandwidth", bandwidth)
    return ProfileSettings(model=args.model, **options)


def default_profile_path(model: str) -> Path:
    """Return ``profiles/<model>-<hostname>.json``, relative to the working directory.

    Examples
    --------
    >>> default_profile_path("conv2").parent.name
    'profiles'
    """
    return Path("profiles") / f"{model}-{socket.gethostname() or 'localhost'}.json"


def format_profile_table(
    fit: FitResult,
    settings: ProfileSettings,
    sizes: dict[str, int],
    break_even: dict[str, tuple[float, float]] | None = None,
) -> str:
    """Return the fit as text: per-layer coefficients, t0, b, fit quality, predicted against measured steps.

    With a ``break_even`` table (``--kernels auto``) each layer also shows its break-even density without and
    with the dense weight gradient ("-" for a layer not in the table: a convolution, always masked dense).

    Examples
    --------
    >>> from prunefl.timing.profile import Measurement, ProfileSettings, fit_time_model
    >>> rows = [Measurement({"w": d}, {"w": round(d * 10)}, 1.0 + d) for d in (1.0, 0.5, 0.2)]
    >>> text = format_profile_table(fit_time_model(rows, ["w"], 0.0), ProfileSettings("mlp"), {"w": 10})
    >>> "R²" in text and "all 0.5" in text
    True
    """
    tm = fit.time_model
    a = fit.compute_s_per_weight_per_step
    name_width = max(12, *(len(n) for n in tm.layer_names))
    kernels = "masked dense kernels" if break_even is None else "CSR kernels at or below break-even (auto)"
    lines = [
        f"profile of {settings.model}: batch {settings.batch_size}, input {settings.input_shape}, "
        f"{len(fit.measurements)} configurations x median of {settings.repeats} steps over {settings.passes} passes, "
        f"{kernels}",
        "",
        f"{'layer':<{name_width}}  {'weights':>10}  {'a_l (s/kept weight/step)':>24}  {'a_l*n_l (s/step)':>16}"
        + ("" if break_even is None else f"  {'break-even':>10}  {'(dense grad)':>12}"),
    ]
    for name in tm.layer_names:
        row = f"{name:<{name_width}}  {sizes[name]:>10,}  {a[name]:>24.4e}  {a[name] * sizes[name]:>16.6f}"
        if break_even is not None:
            without, with_dw = (f"{v:g}" for v in break_even[name]) if name in break_even else ("-", "-")
            row += f"  {without:>10}  {with_dw:>12}"
        lines.append(row)
    full_s = tm.constant_s_per_step + sum(a[n] * sizes[n] for n in tm.layer_names)
    lines += [
        "",
        f"{'t0 (s/step)':<28}{tm.constant_s_per_step:.6f}",
        f"{'t0 + sum a_l*n_l (s/step)':<28}{full_s:.6f}  (full density)",
        f"{'b (s/kept weight/round)':<28}{tm.comm_s_per_weight:.4e}  "
        f"(4 B + 1 bit each way at {settings.uplink_bytes_per_s:g} B/s up, {settings.downlink_bytes_per_s:g} B/s down)",
        f"{'R²':<28}{fit.r_squared:.4f}",
        f"{'RMSE (s/step)':<28}{fit.rmse_s:.6f}",
        "",
        f"{'configuration':<16}{'density':>9}{'measured s':>13}{'predicted s':>13}{'error':>9}",
    ]
    for label, index in _example_rows(fit):
        m = fit.measurements[index]
        overall = sum(m.kept.values()) / sum(sizes[n] for n in tm.layer_names)
        predicted = fit.predicted_s[index]
        error = (predicted - m.median_step_s) / m.median_step_s if m.median_step_s > 0 else 0.0
        lines.append(f"{label:<16}{overall:>9.3f}{m.median_step_s:>13.6f}{predicted:>13.6f}{error:>+9.1%}")
    return "\n".join(lines)


def _example_rows(fit: FitResult, n_random: int = 3) -> list[tuple[str, int]]:
    """Return (label, index) of the all-equal configurations, densest first, then the first few random ones."""
    equal: dict[float, int] = {}  # a random draw can be all-equal too; show the first of each density
    random_rows: list[tuple[str, int]] = []
    for i, m in enumerate(fit.measurements):
        levels = set(m.densities.values())
        if len(levels) == 1:
            equal.setdefault(levels.pop(), i)
        elif len(random_rows) < n_random:
            random_rows.append((f"mixed #{len(random_rows) + 1}", i))
    return [(f"all {d:g}", equal[d]) for d in sorted(equal, reverse=True)] + random_rows


def _progress_bar(model: str) -> tuple[Any, Callable[[int, int], None]]:
    """Return a tqdm bar on stderr and the ``progress(done, total)`` callback that advances it."""
    from tqdm import tqdm

    bar = tqdm(desc=f"profile {model}", unit="config", dynamic_ncols=True, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return bar, progress


def _parse_int(flag: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{flag} must be an integer, got {raw!r}") from None


def _parse_float(flag: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{flag} must be a number, got {raw!r}") from None


def _parse_floats(flag: str, raw: str) -> tuple[float, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"{flag} must be a comma-separated list of numbers, got {raw!r}")
    return tuple(_parse_float(flag, p) for p in parts)


def _parse_shape(flag: str, raw: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 3:
        raise ConfigError(f"{flag} must be C,H,W (three integers), got {raw!r}")
    c, h, w = (_parse_int(flag, p) for p in parts)
    return (c, h, w)
