"""A run's results folder: resolved config, per-round metrics (JSON Lines), summary, checkpoint.

Everything is a plain, self-describing file: TOML, JSON, JSON Lines and safetensors. Nothing is pickled.

Durability. Files that are replaced as a whole (config.toml, summary.json, the checkpoint) are written by
:func:`atomic_write`: a temporary file in the same folder, flushed and fsync'ed, then ``os.replace`` and an
fsync of the folder, so a kill at any instant leaves the old file or the new one, never a mix. The checkpoint is
two files: ``checkpoint.safetensors`` (tensors) and ``checkpoint.json`` (everything else, written last, naming
the tensors file's SHA-256 and size); :func:`write_checkpoint_files` writes both temporary files completely
before renaming either, so a kill leaves the previous pair whole, or the new tensors with the new JSON still in
its temporary file, which :func:`read_checkpoint_files` recognises by the SHA-256 and rolls forward. A torn pair
is never mistaken for a checkpoint. ``metrics.jsonl`` grows by appending whole lines; see :class:`ResultsWriter`
for what a resumed run does with rows written after its checkpoint.

A write that fails (folder not writable, disk full) raises :class:`~prunefl.errors.ResultsWriteError` naming the
path and removes its own temporary file; what was written before stays as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from prunefl.errors import CheckpointError, ConfigError, ResultsWriteError
from prunefl.experiments.config import RunConfig, config_from_dict, dump_toml
from prunefl import metrics as K
from prunefl.faults import fault_point

__all__ = [
    "ResultsWriter",
    "MetricsPosition",
    "summarize",
    "save_checkpoint",
    "load_checkpoint",
    "write_checkpoint_files",
    "read_checkpoint_files",
    "atomic_write",
    "new_run_dir",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_META = "checkpoint.json"
CHECKPOINT_FORMAT = "prunefl-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the JSON names the tensors' SHA-256 and may hold a run state; 1 is read too
TMP_SUFFIX = ".tmp"
MAX_CHECKPOINT_JSON_BYTES = 256 * 2**20  # a run state's JSON is a few KB per client; the tensors are elsewhere


def new_run_dir(out: str | Path | None, name: str, root: str | Path = "runs") -> Path:
    """Choose the run folder: ``out`` if given (must be absent or empty), else ``runs/<name>-<UTC time>``.

    Nothing is created here; :class:`ResultsWriter` creates the folder once the run is ready to start.

    Raises
    ------
    ConfigError
        ``out`` exists and is not an empty folder.
    ResultsWriteError
        ``out`` lies below a path that is a file, so no folder can be made there.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"--out {str(path)!r} exists and is not an empty folder; choose a new folder")
        blocking = next((p for p in path.absolute().parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ResultsWriteError(f"cannot create the results folder {str(path)!r}: {str(blocking)!r} is a file")
        return path
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    n = 1
    while path.exists():
        path = Path(root) / f"{name}-{stamp}-{n}"
        n += 1
    return path


def fsync_dir(path: str | Path) -> None:
    """fsync the folder ``path``, so renames and new files in it survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open folders; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path``, flush and fsync it; on failure remove it and re-raise."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove_quietly(path)
        raise


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Replace ``path`` by ``data`` atomically: temporary file in the same folder, fsync, rename, fsync the folder.

    A kill at any instant leaves either the old file (or none) or the new one complete.

    Raises
    ------
    ResultsWriteError
        The folder is not writable or the disk is full; names the path. The old file is unchanged.

    Examples
    --------
    >>> import tempfile
    >>> p = atomic_write(Path(tempfile.mkdtemp()) / "a.txt", "hello")
    >>> p.read_text()
    'hello'
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        _write_synced(tmp, raw)
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise ResultsWriteError(f"cannot write {str(path)!r}: {exc}") from exc
    fsync_dir(path.parent)
    return path


@dataclass(frozen=True)
class MetricsPosition:
    """Where metrics.jsonl ended when a checkpoint was written: bytes, whole rows, SHA-256 of those bytes.

    >>> p = MetricsPosition(26, 2, "0" * 64)
    >>> MetricsPosition.from_json(p.to_json(), "checkpoint.json") == p
    True
    """

    bytes: int
    rows: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "rows": self.rows, "sha256": self.sha256}

    @classmethod
    def from_json(cls, value: Any, where: str) -> MetricsPosition:
        """Parse :meth:`to_json`'s output; ``where`` names the file for the error.

        Raises
        ------
        CheckpointError
            Not a table of two non-negative ints and a 64-digit hex string.
        """
        ok = (
            isinstance(value, Mapping)
            and all(isinstance(value.get(k), int) and not isinstance(value.get(k), bool) and value[k] >= 0
                    for k in ("bytes", "rows"))
            and isinstance(value.get("sha256"), str)
            and len(value["sha256"]) == 64
        )
        if not ok:
            raise CheckpointError(f"{where}: 'metrics' must hold bytes, rows and sha256, got {value!r}")
        return cls(int(value["bytes"]), int(value["rows"]), str(value["sha256"]))


class ResultsWriter:
    """Writes one run's folder as the run goes, so an interrupted run keeps every finished round.

    ``metrics.jsonl`` is written by appending whole lines (flushed after each row; fsync'ed at every checkpoint,
    whose JSON records the byte length, row count and SHA-256 of the file at that moment, :meth:`position`).

    Resuming (``resume`` given): the rows written *after* the checkpoint (the rounds the resumed run will do
    again, and possibly a torn last line from the kill) are dropped, so that the resumed run appends them again,
    identically. "Appended, never truncated" means here: the file is never truncated in place (no
    ``open("w")`` on it, no ``ftruncate``) and no row up to the checkpoint is ever rewritten or lost; where rows
    past the checkpoint must go, the first ``resume.bytes`` bytes are copied to a temporary file, fsync'ed and
    renamed over the file, so a kill during the repair leaves either the old file or the repaired one. Those
    bytes must hash to ``resume.sha256``: a file changed since the checkpoint is refused.

    Parameters
    ----------
    run_dir : path-like
        The run folder (created with its parents if missing).
    config : RunConfig
        Written to ``config.toml`` (atomically).
    resume : MetricsPosition or None
        Continue the metrics of a checkpoint instead of starting an empty file (default: None).

    Raises
    ------
    ResultsWriteError
        The folder cannot be created or written; names the path.
    CheckpointError
        ``resume``: metrics.jsonl is missing, shorter than the checkpoint says, or its rows up to the checkpoint
        differ from those the checkpoint recorded.
    """

    def __init__(self, run_dir: str | Path, config: RunConfig, resume: MetricsPosition | None = None) -> None:
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsWriteError(f"cannot create the results folder {str(self.run_dir)!r}: {exc}") from exc
        self.path = self.run_dir / METRICS_FILE
        self.rows: list[dict[str, Any]] = []
        self._hash = hashlib.sha256()
        if resume is not None:
            prefix = self._repair(resume)
            self.rows = [json.loads(line) for line in prefix.decode("utf-8").splitlines()]
            self._hash.update(prefix)
        atomic_write(self.run_dir / CONFIG_FILE, dump_toml(config))
        if resume is None:
            atomic_write(self.path, b"")  # a new, empty file (an old one is replaced whole, never truncated)
        try:
            self._metrics: BinaryIO = open(self.path, "ab")
        except OSError as exc:
            raise ResultsWriteError(f"cannot write {str(self.path)!r}: {exc}") from exc

    def _repair(self, pos: MetricsPosition) -> bytes:
        """Check the first ``pos.bytes`` bytes against the checkpoint, drop what follows them; return them."""
        try:
            with open(self.path, "rb") as f:
                prefix = f.read(pos.bytes)
                more = f.read(1) != b""
        except OSError as exc:
            raise CheckpointError(f"cannot read {str(self.path)!r} to resume the run: {exc}") from exc
        if len(prefix) < pos.bytes:
            raise CheckpointError(
                f"{str(self.path)!r} has {len(prefix)} bytes, fewer than the {pos.bytes} the checkpoint recorded; "
                "rows the checkpoint counts on are lost, so the run cannot be resumed"
            )
        if hashlib.sha256(prefix).hexdigest() != pos.sha256 or (prefix and not prefix.endswith(b"\n")):
            raise CheckpointError(
                f"{str(self.path)!r}: its first {pos.bytes} bytes differ from those the checkpoint recorded "
                "(SHA-256); the file was changed since, so the run cannot be resumed"
            )
        n_rows = prefix.count(b"\n")
        if n_rows != pos.rows:
            raise CheckpointError(f"{str(self.path)!r}: {n_rows} rows, the checkpoint recorded {pos.rows}")
        if more:
            logger.warning("%s: dropping what was written after the checkpoint (it is rewritten by the resumed run)",
                           self.path)
            atomic_write(self.path, prefix)
        return prefix

    def write_row(self, row: Mapping[str, Any]) -> None:
        """Append one metrics row and flush it to disk.

        Raises
        ------
        ResultsWriteError
            The disk is full or the file cannot be written; the rows before stay intact.
        """
        line = (json.dumps(row, allow_nan=False, default=_jsonable) + "\n").encode("utf-8")
        try:
            self._metrics.write(line)
            self._metrics.flush()
        except OSError as exc:
            raise ResultsWriteError(f"cannot write {str(self.path)!r}: {exc}") from exc
        self._hash.update(line)
        self.rows.append(dict(row))

    def position(self) -> MetricsPosition:
        """fsync the metrics written so far and return where they end (for a checkpoint).

        Raises
        ------
        ResultsWriteError
            The file cannot be synced (disk full, I/O error).
        """
        try:
            self._metrics.flush()
            os.fsync(self._metrics.fileno())
            size = self._metrics.tell()
        except OSError as exc:
            raise ResultsWriteError(f"cannot write {str(self.path)!r}: {exc}") from exc
        return MetricsPosition(size, len(self.rows), self._hash.hexdigest())

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` atomically."""
        text = json.dumps(summary, indent=2, allow_nan=False, default=_jsonable) + "\n"
        return atomic_write(self.run_dir / SUMMARY_FILE, text)

    def close(self) -> None:
        try:
            self._metrics.close()
        except OSError:
            pass  # a full disk already raised at the write that failed


def summarize(
    rows: Sequence[Mapping[str, Any]], method: str, targets: Sequence[float], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Summarise FL metrics rows: final and best accuracy, totals, and the first crossing of each target.

    IP rows (stage "ip") count towards the totals of time and bytes but not towards accuracy targets' rounds.

    >>> rows = [{"round": 0, "stage": "fl", "sim-clock-s": 1.0, "wall-s": 0.1, "test-accuracy": 0.5,
    ...          "density": 1.0, "bytes-up": 4, "bytes-down": 4},
    ...         {"round": 1, "stage": "fl", "sim-clock-s": 2.0, "wall-s": 0.2, "test-accuracy": 0.9,
    ...          "density": 1.0, "bytes-up": 4, "bytes-down": 4}]
    >>> s = summarize(rows, "fedavg", [0.8])
    >>> s["final-accuracy"], s["targets"][0]["round"], s["targets"][0]["sim-clock-s"]
    (0.9, 1, 2.0)
    """
    fl_rows = [r for r in rows if r.get(K.K_STAGE, "fl") == "fl"]
    evaluated = [r for r in fl_rows if r.get(K.K_TEST_ACCURACY) is not None]
    last = rows[-1] if rows else {}
    target_rows = []
    for t in targets:
        hit = next((r for r in evaluated if r[K.K_TEST_ACCURACY] >= t), None)
        target_rows.append(
            {
                K.K_TARGET_ACCURACY: t,
                K.K_ROUND: None if hit is None else hit[K.K_ROUND],
                K.K_SIM_CLOCK_S: None if hit is None else hit[K.K_SIM_CLOCK_S],
                K.K_WALL_S: None if hit is None else hit[K.K_WALL_S],
            }
        )
    summary: dict[str, Any] = {
        K.K_METHOD: method,
        K.K_ROUNDS: len(fl_rows),
        K.K_FINAL_ACCURACY: evaluated[-1][K.K_TEST_ACCURACY] if evaluated else None,
        K.K_BEST_ACCURACY: max((r[K.K_TEST_ACCURACY] for r in evaluated), default=None),
        K.K_FINAL_DENSITY: last.get(K.K_DENSITY),
        K.K_SIM_CLOCK_S: last.get(K.K_SIM_CLOCK_S, 0.0),
        K.K_WALL_S: last.get(K.K_WALL_S, 0.0),
        K.K_BYTES_UP: int(sum(r.get(K.K_BYTES_UP, 0) for r in rows)),
        K.K_BYTES_DOWN: int(sum(r.get(K.K_BYTES_DOWN, 0) for r in rows)),
        K.K_TARGETS: target_rows,
    }
    if extra:
        summary.update(extra)
    return summary


def write_checkpoint_files(run_dir: str | Path, tensors: Mapping[str, torch.Tensor], doc: Mapping[str, Any],
                           number: int = 0) -> Path:
    """Write a checkpoint pair atomically: ``checkpoint.safetensors``, then ``checkpoint.json`` naming its SHA-256.

    Both temporary files are written and fsync'ed before either is renamed; the JSON is renamed last. A kill
    before its rename leaves the previous pair whole, or (between the two renames) the new tensors beside the
    new JSON's complete temporary file, which :func:`read_checkpoint_files` rolls forward. ``number`` counts the
    run's checkpoints for the test hook :func:`prunefl.faults.fault_point`.

    Raises
    ------
    ResultsWriteError
        Disk full or folder not writable; names the path. The temporary files are removed and the previous
        checkpoint is left whole.
    
    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = write_checkpoint_files(folder, {"state/w": torch.ones(2)}, checkpoint_doc(RunConfig(), 3))
    >>> tensors, doc = read_checkpoint_files(folder)
    >>> tensors["state/w"].tolist(), doc["round"], len(doc["tensors"]["sha256"])
    ([1.0, 1.0], 3, 64)
    """
    run_dir = Path(run_dir)
    data = save_tensors(_unshared(tensors))
    full = dict(doc)
    full["tensors"] = {"file": CHECKPOINT_TENSORS, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    text = (json.dumps(full, indent=1, default=_jsonable) + "\n").encode("utf-8")
    tensors_path, meta_path = run_dir / CHECKPOINT_TENSORS, run_dir / CHECKPOINT_META
    tensors_tmp, meta_tmp = _tmp(tensors_path), _tmp(meta_path)
    try:
        _write_synced(tensors_tmp, data)
        _write_synced(meta_tmp, text)
        fault_point("kill-checkpoint-written", number)
        os.replace(tensors_tmp, tensors_path)
        fsync_dir(run_dir)
        fault_point("kill-checkpoint-half", number)
        os.replace(meta_tmp, meta_path)
    except OSError as exc:
        _remove_quietly(tensors_tmp)
        _remove_quietly(meta_tmp)
        raise ResultsWriteError(
            f"cannot write the checkpoint {str(tensors_path)!r}: {exc}; the previous checkpoint is intact"
        ) from exc
    fsync_dir(run_dir)
    return tensors_path


def _unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, each with its own memory (safetensors refuses tensors sharing storage)."""
    out, seen = {}, set()
    for k, v in tensors.items():
        t = v.detach().contiguous().cpu()
        ptr = t.untyped_storage().data_ptr()
        out[k] = t.clone() if ptr in seen and t.numel() > 0 else t
        seen.add(ptr)
    return out


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


def read_checkpoint_files(run_dir: str | Path, finish: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a checkpoint pair: ``(tensors, JSON document)``.

    Version 2 documents name the tensors' SHA-256, which must match. Where ``checkpoint.json`` does not match the
    tensors file but its complete temporary file does (a kill between the two renames of
    :func:`write_checkpoint_files`), that newer document is used; with ``finish`` its rename is completed.

    Raises
    ------
    CheckpointError
        A file is missing or unreadable, the JSON is not a prunefl checkpoint, the SHA-256 or size differs (a torn
        or damaged pair), or the safetensors header is malformed. The message names the file.
    """
    run_dir = Path(run_dir)
    tensors_path, meta_path = run_dir / CHECKPOINT_TENSORS, run_dir / CHECKPOINT_META
    try:
        data = tensors_path.read_bytes()
    except OSError as exc:
        hint = " (a run killed before its first checkpoint cannot resume: start it again)" if (
            not tensors_path.exists() and not meta_path.exists()) else ""
        raise CheckpointError(f"cannot read the checkpoint {str(tensors_path)!r}: {exc}{hint}") from exc
    digest = hashlib.sha256(data).hexdigest()
    doc, error = _read_doc(meta_path, digest, len(data))
    if doc is None:
        newer, _ = _read_doc(_tmp(meta_path), digest, len(data))
        if newer is None or newer.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(error)
        logger.warning("%s is from the checkpoint before %s; using the complete %s", meta_path, tensors_path,
                       _tmp(meta_path))
        doc = newer
        if finish:
            try:
                os.replace(_tmp(meta_path), meta_path)
            except OSError as exc:
                raise ResultsWriteError(f"cannot write {str(meta_path)!r}: {exc}") from exc
            fsync_dir(run_dir)
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # noqa: BLE001 (safetensors raises its own SafetensorError and others)
        raise CheckpointError(f"{str(tensors_path)!r} is not a valid safetensors file: {exc}") from exc
    return tensors, doc


def _read_doc(path: Path, digest: str, size: int) -> tuple[dict[str, Any] | None, str | None]:
    """The checkpoint document at ``path`` if it is one and matches the tensors' digest, else why not."""
    try:
        with open(path, "rb") as f:
            # never more than the bound, whatever the file is; read(n) allocates n bytes up front, so ask for
            # what the file holds (+1 to see growth), not for the bound (256 MiB for every load)
            raw = f.read(min(os.fstat(f.fileno()).st_size, MAX_CHECKPOINT_JSON_BYTES) + 1)
        if len(raw) > MAX_CHECKPOINT_JSON_BYTES:
            return None, f"{str(path)!r} is larger than {MAX_CHECKPOINT_JSON_BYTES} bytes: not a checkpoint document"
        doc = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested past the stack
        return None, f"cannot read the checkpoint {str(path)!r}: {type(exc).__name__}: {exc}"
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT or doc.get("version") not in (1, 2):
        return None, f"{str(path)!r} is not a prunefl checkpoint (format {CHECKPOINT_FORMAT!r}, version 1 or 2)"
    if not isinstance(doc.get("round"), int) or not isinstance(doc.get("config"), str):
        return None, f"{str(path)!r} needs an int 'round' and the run's config as TOML text"
    if doc["version"] >= 2:
        t = doc.get("tensors")
        if not isinstance(t, dict) or t.get("sha256") != digest or t.get("bytes") != size:
            return None, (
                f"{str(path)!r} names tensors {t!r}, but {CHECKPOINT_TENSORS} has {size} bytes with SHA-256 "
                f"{digest}: a torn or damaged checkpoint"
            )
    return doc, None


def checkpoint_config(doc: Mapping[str, Any], where: str) -> RunConfig:
    """The run config a checkpoint document holds.

    Raises
    ------
    CheckpointError
        The TOML text is not a valid config; names ``where``.
    """
    import tomllib

    from prunefl.experiments.config import _check_toml_text  # the config loader's nesting and size bounds

    try:
        text = str(doc["config"])
        _check_toml_text(text, where)
        return config_from_dict(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ConfigError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{where}: the config it holds is not valid: {type(exc).__name__}: {exc}") from exc


def save_checkpoint(
    run_dir: str | Path,
    state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    config: RunConfig,
    round: int,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save global state and masks as safetensors, plus a JSON file with the config, round and metadata.

    Tensor names are prefixed ``state/``, ``mask/`` (bool stored as uint8) and ``extra/``. Written atomically
    (:func:`write_checkpoint_files`); a run's resumable checkpoints add a run state
    (:mod:`prunefl.experiments.state`).
    """
    tensors = checkpoint_tensors(state, masks, extra_tensors)
    return write_checkpoint_files(run_dir, tensors, checkpoint_doc(config, round, meta))


def checkpoint_tensors(
    state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The tensors every checkpoint holds: ``state/<k>``, ``mask/<k>`` (uint8) and ``extra/<k>``.

    >>> t = checkpoint_tensors({"w": torch.ones(2)}, {"w": torch.tensor([True, False])}, {"init/w": torch.zeros(2)})
    >>> sorted(t), t["mask/w"].tolist()
    (['extra/init/w', 'mask/w', 'state/w'], [1, 0])
    """
    tensors = {f"state/{k}": v for k, v in state.items()}
    tensors.update({f"mask/{k}": v.detach().to(torch.uint8) for k, v in masks.items()})
    tensors.update({f"extra/{k}": v for k, v in (extra_tensors or {}).items()})
    return tensors


def checkpoint_doc(config: RunConfig, round: int, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document every checkpoint holds (format, version, round, config TOML, meta).

    >>> sorted(checkpoint_doc(RunConfig(), 2))
    ['config', 'format', 'meta', 'round', 'version']
    """
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "round": round, "config": dump_toml(config),
            "meta": dict(meta or {})}


def load_checkpoint(
    run_dir: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], RunConfig, dict[str, Any], dict[str, torch.Tensor]]:
    """Load ``(state, masks, config, meta-document, extra tensors)`` written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        Files missing, unreadable, torn, or not a prunefl checkpoint (the message names the file).
    """
    tensors, doc = read_checkpoint_files(run_dir)
    config = checkpoint_config(doc, str(Path(run_dir) / CHECKPOINT_META))
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("state/")}
    masks = {k[5:]: v.to(torch.bool) for k, v in tensors.items() if k.startswith("mask/")}
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra/")}
    return state, masks, config, doc, extra


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
