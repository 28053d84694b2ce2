"""The run state: everything a run needs to continue exactly as if it had never stopped, and its checkpoint.

A run state is collected from the parts' own ``state_dict()`` hooks, between two rounds:

* the server (:meth:`prunefl.fl.server.Server.state_dict`: global state, masks, mask version) and its link
  (:meth:`prunefl.fl.links.ServerLink.state_dict`: the mask version each participant holds);
* the method (:meth:`prunefl.pruning.methods.base.Method.state_dict`);
* every client (:meth:`prunefl.fl.client.ClientState.state_dict`: batch stream and its generator, augmentation
  generator, importance accumulator, momentum buffers, cached masks) where the engine holds them
  (:attr:`prunefl.engines.simulation.SimulationEngine.holds_client_states`: in-process; a Flower node keeps
  its client's state in its own ``context.state``, and the Flower engine fetches them from the nodes first,
  ``sync_clients``; an engine that overrides ``deliver`` without that has none);
* the simulated clock, the rounds done, the wall seconds so far, torch's global generator, the run's initial
  weights, the kernel break-even table (measured once: a resumed run must choose the same kernels), what the
  method's ``before_fl`` put in the summary, and where ``metrics.jsonl`` ended (bytes, rows, SHA-256).

It is written as one checkpoint pair (:func:`prunefl.experiments.results.write_checkpoint_files`, atomic):
``checkpoint.safetensors`` holds the tensors — ``state/<k>``, ``mask/<k>`` and ``extra/init/<k>`` as every
checkpoint does (so a resumable checkpoint is also a finished run's checkpoint and a reference run), plus
``run/method/<k>``, ``run/client/<i>/<k>`` and ``run/torch-rng`` — and ``checkpoint.json`` the rest under
``"run-state"``. Nothing is pickled.

A resume rebuilds the run from its config exactly as a fresh run does (data, partitions, model, devices, method),
skips the method's ``before_fl`` (its effect is in the state), and loads the state into the parts
(:func:`restore_run_state`); each part checks what it loads and raises :class:`~prunefl.errors.CheckpointError`.
:func:`check_resume_config` refuses a config that changes what shapes the run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from prunefl.errors import CheckpointError, ConfigError
from prunefl.experiments.config import RunConfig, config_to_dict
from prunefl.experiments.results import (
    CHECKPOINT_META,
    MetricsPosition,
    checkpoint_config,
    checkpoint_doc,
    checkpoint_tensors,
    read_checkpoint_files,
    write_checkpoint_files,
)

if TYPE_CHECKING:
    from prunefl.engines.simulation import SimulationEngine

__all__ = [
    "RunState",
    "RESUME_FREE_KEYS",
    "collect_run_state",
    "write_run_state",
    "load_run_state",
    "restore_run_state",
    "check_resume_config",
    "resume_config",
]

logger = logging.getLogger(__name__)

RUN_STATE_KEY = "run-state"
#: config keys a resumed run may change: they do not shape the training (``fl.rounds`` extends or shortens it;
#: methods whose schedule depends on the total rounds then follow the new total from the resume point on;
#: evaluation settings change what is measured — and so what methods acting on accuracy see)
RESUME_FREE_KEYS = frozenset({
    "name", "threads", "checkpoint_every", "fl.rounds", "fl.eval_every", "fl.target_accuracies", "data.data_dir",
    "data.eval_subset",
})
_METHOD, _CLIENT, _RNG = "run/method/", "run/client/", "run/torch-rng"


@dataclass
class RunState:
    """A run between two rounds, as a checkpoint holds it (see the module docstring).

    Attributes
    ----------
    run_dir : pathlib.Path
        The run folder it was read from.
    config : RunConfig
        The config the run was started (or last resumed) with.
    round : int
        FL rounds done: the resumed run starts with this round.
    server : dict
        :meth:`prunefl.fl.server.Server.state_dict`.
    server_link : dict
        :meth:`prunefl.fl.links.ServerLink.state_dict`.
    method : dict
        :meth:`prunefl.pruning.methods.base.Method.state_dict`.
    clients : list of dict
        :meth:`prunefl.fl.client.ClientState.state_dict` of every client, by client id; empty where the engine
        does not hold them (Flower).
    sim_clock_s, wall_s : float
        The simulated clock, and real seconds since the run started (rows after a resume continue from it).
    initial_state : dict of str to torch.Tensor
        The run's initial weights (saved with the final checkpoint for lottery-ticket baselines).
    break_even : dict of str to (float, float)
        The kernel break-even table the run measured (empty: masked kernels).
    before_fl_summary : dict
        What the method's ``before_fl`` put in the summary.
    torch_rng : torch.Tensor
        torch's global generator state (uint8).
    metrics : MetricsPosition
        Where ``metrics.jsonl`` ended.
    """

    run_dir: Path
    config: RunConfig
    round: int
    server: dict[str, Any]
    server_link: dict[str, Any]
    method: dict[str, Any]
    clients: list[dict[str, Any]]
    sim_clock_s: float
    wall_s: float
    initial_state: dict[str, torch.Tensor]
    break_even: dict[str, tuple[float, float]]
    before_fl_summary: dict[str, Any]
    torch_rng: torch.Tensor
    metrics: MetricsPosition


def collect_run_state(
    engine: SimulationEngine,
    config: RunConfig,
    done: int,
    initial_state: Mapping[str, torch.Tensor],
    before_fl_summary: Mapping[str, Any],
    metrics: MetricsPosition,
    wall_s: float,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The checkpoint of ``engine`` after ``done`` rounds: ``(tensors, JSON document)``; see the module docstring.

    Raises
    ------
    TypeError
        A part's ``state_dict()`` holds a value that is neither a tensor nor JSON-able (our own bug).
    """
    s = engine.setup
    server = s.server.state_dict()
    tensors = checkpoint_tensors(
        {k[len("state/"):]: v for k, v in server.items() if k.startswith("state/")},
        {k[len("masks/"):]: v for k, v in server.items() if k.startswith("masks/")},
        {f"init/{k}": v for k, v in initial_state.items()},
    )
    method_values = _split(s.method.state_dict(), _METHOD, tensors)
    engine.sync_clients()  # Flower: fetch the states the nodes keep
    held = engine.holds_client_states  # a Flower node keeps its own client's state
    masks = {k[len("masks/"):]: v for k, v in server.items() if k.startswith("masks/")}
    clients = [
        _split(_without_server_masks(c.state_dict(), masks), f"{_CLIENT}{i}/", tensors)
        for i, c in enumerate(engine.clients)
    ] if held else []
    tensors[_RNG] = torch.get_rng_state()
    doc = checkpoint_doc(config, done)
    doc[RUN_STATE_KEY] = {
        "round": done,
        "sim-clock-s": engine.sim_clock_s,
        "wall-s": wall_s,
        "mask-version": server["mask-version"],
        "server-link": engine.protocol.link.state_dict(),
        "method": method_values,
        "clients": clients,
        "clients-held": held,
        "break-even": {k: [a, b] for k, (a, b) in s.break_even.items()},
        "before-fl-summary": dict(before_fl_summary),
        "metrics": metrics.to_json(),
    }
    return tensors, doc


def write_run_state(
    run_dir: str | Path,
    engine: SimulationEngine,
    config: RunConfig,
    done: int,
    initial_state: Mapping[str, torch.Tensor],
    before_fl_summary: Mapping[str, Any],
    metrics: MetricsPosition,
    wall_s: float,
    number: int = 0,
) -> Path:
    """Collect the run state (:func:`collect_run_state`) and write it as the run's checkpoint, atomically.

    ``number`` counts the run's checkpoints, for the test hook :func:`prunefl.faults.fault_point` (default: 0).

    Raises
    ------
    ResultsWriteError
        The disk is full or the folder cannot be written; the previous checkpoint is left whole.
    """
    tensors, doc = collect_run_state(engine, config, done, initial_state, before_fl_summary, metrics, wall_s)
    return write_checkpoint_files(run_dir, tensors, doc, number=number)


def load_run_state(run_dir: str | Path) -> RunState:
    """Read the run state of the checkpoint in ``run_dir``, to resume the run (the Flower ServerApp can too).

    Completes a checkpoint whose JSON was not yet renamed into place when the run was killed
    (:func:`prunefl.experiments.results.read_checkpoint_files`). Pass the result to
    :func:`prunefl.experiments.runner.run_experiment` as ``resume``.

    Raises
    ------
    CheckpointError
        No checkpoint, a damaged or torn one, one without a run state (written by a version of prunefl that could
        not resume), or a run state with missing or malformed entries. The message names the file.
    """
    run_dir = Path(run_dir)
    where = str(run_dir / CHECKPOINT_META)
    tensors, doc = read_checkpoint_files(run_dir, finish=True)
    config = checkpoint_config(doc, where)
    rs = doc.get(RUN_STATE_KEY)
    if not isinstance(rs, dict):
        raise CheckpointError(f"{where} holds no run state (a checkpoint from before resumable runs); start the run "
                              "again")
    done = rs.get("round")
    if not isinstance(done, int) or isinstance(done, bool) or done < 0 or done != doc["round"]:
        raise CheckpointError(f"{where}: run-state round must be an int >= 0 equal to 'round', got {done!r}")
    version = rs.get("mask-version")
    if not _is_int(version):
        raise CheckpointError(f"{where}: run-state mask-version must be an int, got {version!r}")
    server: dict[str, Any] = {k: v for k, v in tensors.items() if k.startswith("state/")}
    server.update({f"masks/{k[len('mask/'):]}": v.to(torch.bool) for k, v in tensors.items() if k.startswith("mask/")})
    server["mask-version"] = version
    clients_json = rs.get("clients")
    if not isinstance(clients_json, list) or not all(isinstance(c, dict) for c in clients_json):
        raise CheckpointError(f"{where}: run-state clients must be a list of tables, got {type(clients_json).__name__}")
    masks = {k[len("masks/"):]: v for k, v in server.items() if k.startswith("masks/")}
    clients = [_with_server_masks(_join(values, f"{_CLIENT}{i}/", tensors), masks, where)
               for i, values in enumerate(clients_json)]
    method_json, link, summary = (_table(rs, key, where) for key in ("method", "server-link", "before-fl-summary"))
    clock, wall = rs.get("sim-clock-s"), rs.get("wall-s")
    for key, value in (("sim-clock-s", clock), ("wall-s", wall)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise CheckpointError(f"{where}: run-state {key} must be a finite number >= 0, got {value!r}")
    rng = tensors.get(_RNG)
    if rng is None or rng.dtype != torch.uint8:
        raise CheckpointError(f"{where}: the tensors hold no uint8 {_RNG!r}")
    initial = {k[len("extra/init/"):]: v for k, v in tensors.items() if k.startswith("extra/init/")}
    return RunState(
        run_dir=run_dir,
        config=config,
        round=int(done),
        server=server,
        server_link=link,
        method=_join(method_json, _METHOD, tensors),
        clients=clients,
        sim_clock_s=float(clock),  # type: ignore[arg-type]
        wall_s=float(wall),  # type: ignore[arg-type]
        initial_state=initial,
        break_even=_break_even(rs.get("break-even"), where),
        before_fl_summary=summary,
        torch_rng=rng,
        metrics=MetricsPosition.from_json(rs.get("metrics"), where),
    )


def restore_run_state(engine: SimulationEngine, state: RunState) -> None:
    """Load ``state`` into a freshly built ``engine`` (server, its link, method, every client, clock, torch RNG).

    Modifies the engine's parts. Each part checks what it loads against what the config built (names, shapes,
    dtypes, client ids, partitions).

    Raises
    ------
    CheckpointError
        The state does not fit the run built from the config (another model, partition or method).
    """
    s = engine.setup
    where = str(state.run_dir / CHECKPOINT_META)
    expected_clients = len(engine.clients) if engine.holds_client_states else 0
    if len(state.clients) != expected_clients:
        raise CheckpointError(f"{where} holds {len(state.clients)} clients' states, the run's engine holds "
                              f"{expected_clients}")
    expected = {k: (v.shape, v.dtype) for k, v in s.server.state.items()}
    got = {k: (v.shape, v.dtype) for k, v in state.initial_state.items()}
    if got != expected:
        raise CheckpointError(f"{where}: the initial weights (extra/init/) do not fit the model's state entries")
    for i, values in enumerate(state.clients):
        _check_client_tensors(values, s.server.state, f"{where}: client {i}")
    try:
        s.server.load_state_dict(state.server)
        engine.protocol.link.load_state_dict(state.server_link)
        for client, values in zip(engine.clients, state.clients):
            client.load_state_dict(values)
        s.method.load_state_dict(state.method)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 (a part's loader meeting a value of the wrong kind: only ours escapes)
        raise CheckpointError(f"{where}: the run state does not load: {type(exc).__name__}: {exc}") from exc
    engine.sim_clock_s = state.sim_clock_s
    engine.restored = True
    try:
        torch.set_rng_state(state.torch_rng.clone())
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: {_RNG} is not a generator state: {exc}") from exc


def check_resume_config(saved: RunConfig, new: RunConfig, done: int = 0) -> None:
    """Refuse to resume a run saved with ``saved`` under ``new`` if they differ in what shapes the run.

    Only :data:`RESUME_FREE_KEYS` may differ; ``fl.rounds`` must stay >= the ``done`` rounds.

    Raises
    ------
    ConfigError
        Naming every differing key with both values.

    Examples
    --------
    >>> check_resume_config(RunConfig(), dataclasses.replace(RunConfig(), threads=2))
    >>> check_resume_config(RunConfig(), RunConfig(seed=1))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prunefl.errors.ConfigError: cannot resume: seed differs (checkpoint 0, now 1); ...
    """
    a, b = _flat(config_to_dict(saved)), _flat(config_to_dict(new))
    differing = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RESUME_FREE_KEYS]
    if differing:
        listed = "; ".join(f"{k} differs (checkpoint {a.get(k)!r}, now {b.get(k)!r})" for k in differing)
        raise ConfigError(
            f"cannot resume: {listed}; these shape the run. Only {', '.join(sorted(RESUME_FREE_KEYS))} may change"
        )
    if new.fl.rounds < done:
        raise ConfigError(
            f"cannot resume: fl.rounds={new.fl.rounds} is below the {done} rounds the checkpoint has done"
        )
    if new.fl.rounds != saved.fl.rounds:
        logger.warning("resuming with fl.rounds=%d (was %d): schedules that depend on the total rounds follow the "
                       "new total from round %d on", new.fl.rounds, saved.fl.rounds, done)


def resume_config(saved: RunConfig, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The config of a resumed run: the checkpoint's, with ``key=value`` overrides (checked by the caller).

    >>> resume_config(RunConfig(), ["fl.rounds=20"]).fl.rounds
    20
    """
    from prunefl.experiments.config import apply_overrides, config_from_dict

    return config_from_dict(apply_overrides(config_to_dict(saved), overrides))


# --------------------------------------------------------------------------------------------- helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _split(state: Mapping[str, Any], prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move ``state``'s tensors into ``tensors`` under ``prefix``; return the other (JSON-able) entries."""
    values: dict[str, Any] = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            tensors[prefix + k] = v
        else:
            values[k] = v
    return values


def _join(values: Mapping[str, Any], prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Inverse of :func:`_split`: the JSON entries plus the tensors under ``prefix`` (prefix removed)."""
    out = dict(values)
    out.update({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    return out


def _table(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: run-state {key} must be a table, got {value!r}")
    return value


_FROM_SERVER = "link/masks-are-the-server's"


def _without_server_masks(client: dict[str, Any], masks: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``client`` without its cached masks where they equal the server's (the usual case): saves a model's worth
    of bools per client; :func:`_with_server_masks` puts them back."""
    names = client.get("link/mask-names")
    if not isinstance(names, list) or sorted(names) != sorted(masks) or not all(torch.equal(client[f"link/masks/{n}"], masks[n]) for n in names):
        return client
    out = {k: v for k, v in client.items() if not k.startswith("link/masks/")}
    out[_FROM_SERVER] = True
    return out


def _with_server_masks(client: dict[str, Any], masks: Mapping[str, torch.Tensor], where: str) -> dict[str, Any]:
    if not client.pop(_FROM_SERVER, False):
        return client
    names = client.get("link/mask-names")
    if not isinstance(names, list) or sorted(names) != sorted(masks):
        raise CheckpointError(f"{where}: a client's cached masks {names!r} are not the server's {list(masks)}")
    client.update({f"link/masks/{n}": masks[n].clone() for n in names})
    return client


#: a client's tensors that mirror a model entry, and their dtype (None: the entry's own)
_CLIENT_TENSORS = {"importance/": torch.float32, "momentum-buffers/": None, "link/masks/": torch.bool}


def _check_client_tensors(values: Mapping[str, Any], model: Mapping[str, torch.Tensor], where: str) -> None:
    """A client's importance, momentum buffers and cached masks must fit the model's entries (name, shape, dtype).

    The client's own loader cannot know the model; a misfit it accepted would only fail rounds later.
    """
    for key, value in values.items():
        prefix = next((p for p in _CLIENT_TENSORS if isinstance(key, str) and key.startswith(p)), None)
        if prefix is None:
            continue
        ref = model.get(key[len(prefix):])
        dtype = _CLIENT_TENSORS[prefix] or (ref.dtype if ref is not None else None)
        if ref is None or not isinstance(value, torch.Tensor) or value.shape != ref.shape or value.dtype != dtype:
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            fit = "no model entry" if ref is None else f"{dtype} {tuple(ref.shape)}"
            raise CheckpointError(f"{where}: {key!r} is {got}, the model's entry needs {fit}")


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _break_even(value: Any, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: run-state break-even must be a table, got {value!r}")
    out = {}
    for k, pair in value.items():
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair)):
            raise CheckpointError(f"{where}: run-state break-even {k!r} must be two numbers, got {pair!r}")
        out[k] = (float(pair[0]), float(pair[1]))
    return out
