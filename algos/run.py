"""What every trainer does around its update loop: its output directory, checkpoints, metrics.

* :class:`RunDir` -- an output directory owned by one run. A fresh run needs a new or
  empty directory; ``--resume`` needs one that holds a checkpoint. The directory is locked
  (``fcntl.flock`` on ``.lock``) for the run's whole life, so a second trainer pointed at it
  stops at once instead of interleaving metrics and adapters.
* :func:`resume_args` -- a resumed run continues with the settings in its ``args.json``;
  flags given again on the command line may only differ there when they do not alter the
  run (``--stop-after``, ``--progress`` ...), unless ``--override`` is given, in which case
  each change is recorded in ``args_history.jsonl``.
* checkpoints live in :mod:`algos.checkpoint`.
* :class:`MetricsLog` -- namespaced metrics as JSON lines (and TensorBoard events).

User errors (a bad flag, a used directory, a damaged run) raise :class:`UserError`, which
:func:`algos.cli.run_main` prints as one line, before any model loads where it can.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import random
import shutil
import time
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from algos.cli import DISK_ERRNOS, UserError, print_error  # noqa: F401  (re-exported: trainers raise UserError)

ARGS_FILE = "args.json"
ARGS_HISTORY = "args_history.jsonl"
LOCK_FILE = ".lock"
# Flags that change how a run is driven or shown, not what it computes: they may differ on --resume.
RUN_CONTROL_FLAGS = frozenset({"resume", "output_dir", "stop_after", "progress", "tensorboard", "keep_checkpoints",
                               "checkpoint_every", "override", "num_threads"})
# The run-control flags that belong to one invocation only: every other run-control flag keeps
# the run's value on --resume unless the resuming command sets it (the change is recorded).
INVOCATION_FLAGS = frozenset({"resume", "output_dir", "stop_after", "override"})
# What a trainer writes before its first checkpoint: a directory holding only these (and
# no checkpoints/latest) is a failed or killed start, which a fresh run may take over.
START_FILES = frozenset({LOCK_FILE, ARGS_FILE, ARGS_HISTORY, "metrics.jsonl", "tensorboard", "checkpoints"})
# ---------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- output directory
def _describe(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def disk_error(err: OSError, doing: str) -> UserError:
    """A one-line :class:`UserError` for an OS error of writing (full, read-only, forbidden)."""
    where = f" {err.filename}" if err.filename else ""
    return UserError(f"{doing}: cannot write{where}: {os.strerror(err.errno) if err.errno else err}")


def failed_start(path: Path) -> bool:
    """Whether ``path`` is a run directory that stopped (failed or killed) before its first
    checkpoint: an ``args.json``, nothing but :data:`START_FILES`, no ``checkpoints/latest``,
    and no other process holding its lock."""
    from algos.checkpoint import CHECKPOINTS, LATEST

    if not path.is_dir() or not (path / ARGS_FILE).is_file() or (path / CHECKPOINTS / LATEST).exists():
        return False
    if any(p.name not in START_FILES and not p.name.startswith(f".{ARGS_FILE}") for p in path.iterdir()):
        return False
    if (path / CHECKPOINTS).is_dir() and any(not p.name.startswith(".") for p in (path / CHECKPOINTS).iterdir()):
        return False  # only temporary folders of an unfinished first checkpoint may be there
    if (path / LOCK_FILE).is_file():
        try:
            with open(path / LOCK_FILE, "a+") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        except BlockingIOError:
            return False  # a run is starting there now
        except OSError:
            return False
    return True


def _clear_failed_start(path: Path) -> None:
    """Remove what a failed start left (args.json, lock, metrics, temporary checkpoints)."""
    try:
        for p in path.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    except OSError as err:
        raise disk_error(err, f"--output-dir {path}") from None
    print(f"{path}: an earlier start stopped before its first checkpoint; starting afresh there", flush=True)


def check_resumable(path: Path) -> None:
    """:class:`UserError` unless ``path`` is a run directory holding a checkpoint."""
    from algos.checkpoint import CHECKPOINTS, LATEST

    if not path.is_dir():
        raise UserError(f"--resume {path}: no such directory")
    if not (path / CHECKPOINTS / LATEST).is_file():
        hint = (" (the run stopped before its first checkpoint: rerun its command without --resume, which "
                "starts afresh in the same directory)") if failed_start(path) else " (no checkpoint was written)"
        raise UserError(f"--resume {path}: no {CHECKPOINTS}/{LATEST} there{hint}")


class RunDir:
    """An output directory owned by one run, locked until :meth:`close` (or process exit).

    ``resume=False``: ``path`` must not exist or be empty; it is created. ``resume=True``:
    ``path`` must hold ``checkpoints/latest``. ``writer=False`` (the other ranks of a
    data-parallel run) checks and locks nothing: rank 0 owns the directory.
    """

    def __init__(self, path: str | Path, *, resume: bool, writer: bool = True, flag: str = "--output-dir") -> None:
        self.path = Path(path)
        self.writer = writer
        self._lock = None
        if not writer:
            return
        if resume:
            check_resumable(self.path)
        elif failed_start(self.path):
            _clear_failed_start(self.path)
        elif self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            what = _describe(self.path) if self.path.is_dir() else "a file"
            raise UserError(f"{flag} {self.path} already holds {what}; continue a run there with --resume {self.path}, "
                            "or choose a new directory (nothing was changed)")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / LOCK_FILE, "a+")
        except OSError as err:
            raise disk_error(err, f"{flag} {self.path}") from None
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            owner = self._lock.read().strip() or "unknown"
            self._lock.close()
            self._lock = None
            raise UserError(f"{self.path} is in use by another run (pid {owner}); wait for it to finish or choose "
                            "another directory") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()

    def close(self) -> None:
        """Release the lock (also released when the process exits)."""
        if self._lock is not None:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write_json(self, name: str, value: Any) -> Path:
        """Write ``name`` atomically (temporary file, then rename)."""
        return write_json_atomically(self.path / name, value)


def write_json_atomically(target: Path, value: Any) -> Path:
    """Write ``value`` as JSON to ``target`` through a temporary sibling and a rename, so a kill
    leaves the old file or the new one, never half of one."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=2))
        os.replace(tmp, target)
    except OSError as err:
        raise disk_error(err, f"writing {target}") from None
    return target


def export_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(folder)`` into a temporary sibling of ``target``, then put it in place.

    A kill mid-way leaves the previous ``target`` (or none) and a ``.tmp`` folder that the
    next export removes: never a half-written ``target``.
    """
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)
    return target


def export_adapters(model, target: Path, names: Sequence[str], *, nested: bool, **serving) -> Path:
    """Save adapters ``names`` into ``target`` atomically: ``target/<name>/`` each when
    ``nested`` (or when there are several), else the one adapter directly in ``target``.
    ``serving``: the settings :func:`agents.lora.save_adapter` records beside the weights."""
    from agents.lora import save_adapter

    def write(folder: Path) -> None:
        for name in names:
            save_adapter(model, folder / name if nested or len(names) > 1 else folder, name, **serving)

    try:
        return export_atomically(Path(target), write)
    except OSError as err:
        raise disk_error(err, f"saving adapters to {target}") from None
    except Exception as err:  # noqa: BLE001 - safetensors' SafetensorError (a full disk) is no OSError
        if isinstance(err, UserError):
            raise
        raise UserError(f"saving adapters to {target}: cannot write: {str(err).splitlines()[0] if str(err) else type(err).__name__} "
                        "(nothing was replaced)") from None


# ---------------------------------------------------------------------------- args on resume
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def args_from_json(cls: type, saved: dict[str, Any]):
    """An ``Args`` dataclass from a saved ``args.json`` (lists back to tuples where typed so)."""
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in saved.items():
        if key not in names:
            continue  # written by another version: dropped, the current default applies
        tp = hints[key]
        origin = typing.get_origin(tp)
        if isinstance(value, list) and (origin is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(tp))):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def resume_args(cls: type, run_dir: Path, parsed: Any, given: set[str], *, override: bool) -> tuple[Any, dict[str, tuple]]:
    """The arguments a resumed run continues with, and the changes made to them.

    The run's ``args.json`` gives every setting. The :data:`RUN_CONTROL_FLAGS` keep the
    run's values too, unless the resuming command sets them (in ``given``): then the new
    value applies and the change is returned (and recorded); the :data:`INVOCATION_FLAGS`
    always come from ``parsed``. Any other flag in ``given`` that differs from ``args.json``
    is a :class:`UserError` naming every such flag, unless ``override``.
    """
    path = Path(run_dir) / ARGS_FILE
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--resume {run_dir}: no {ARGS_FILE} there (was it written by this trainer?)") from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise UserError(f"--resume {run_dir}: {ARGS_FILE} is not valid JSON ({err})") from None
    if not isinstance(saved, dict):
        raise UserError(f"--resume {run_dir}: {ARGS_FILE} is not a JSON object")
    try:
        base = args_from_json(cls, saved)
    except (TypeError, ValueError) as err:
        raise UserError(f"--resume {run_dir}: {ARGS_FILE} does not hold this trainer's settings ({err})") from None
    current = dataclasses.asdict(base)
    changes = {}
    for key in sorted(given):
        if key in RUN_CONTROL_FLAGS or key not in current:
            continue
        old, new = current[key], getattr(parsed, key)
        old = list(old) if isinstance(old, tuple) else old
        new = list(new) if isinstance(new, tuple) else new
        if old != new:
            changes[key] = (old, new)
    if changes and not override:
        listed = "; ".join(f"--{k.replace('_', '-')} {_show(new)} (the run has {_show(old)})"
                           for k, (old, new) in changes.items())
        raise UserError(f"--resume {run_dir}: these flags differ from the run's {ARGS_FILE}: {listed}. Leave them out "
                        "to continue as the run started, or add --override to change them (the change is recorded)")
    control = {}
    for key in sorted(given & RUN_CONTROL_FLAGS - INVOCATION_FLAGS):
        if key in current and current[key] != getattr(parsed, key):
            control[key] = (current[key], getattr(parsed, key))
    updates = {k: getattr(parsed, k) for k in current if k in INVOCATION_FLAGS or k in changes or k in control}
    return dataclasses.replace(base, **updates), {**changes, **control}


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def start_run(cls: type, argv: Sequence[str], *, prog: str, description: str | None,
              demo_defaults: Callable[[Any, Sequence[str]], Any]) -> tuple[Any, dict[str, tuple]]:
    """Parse a trainer's command line into its ``Args``: a fresh run gets ``demo_defaults``
    applied; ``--resume DIR`` continues with ``DIR/args.json`` and the flags given again
    (see :func:`resume_args`). Returns the arguments and the changes ``--override`` made."""
    from algos.cli import given_flags, parse_args

    args = parse_args(cls, argv, description=description, prog=prog)
    if not args.resume:
        return demo_defaults(args, argv), {}
    check_resumable(Path(args.resume))
    args, changes = resume_args(cls, Path(args.resume), args, given_flags(args, argv), override=args.override)
    return dataclasses.replace(args, output_dir=args.resume), changes


def open_run_dir(args: Any, default_name: str, *, rank: int = 0, changes: dict[str, tuple] | None = None) -> RunDir:
    """The run's locked output directory, with ``args.json`` written (fresh) or its overrides
    recorded in ``args_history.jsonl`` (resumed with ``--override``)."""
    out = Path(args.output_dir or f"runs/{default_name}")
    run_dir = RunDir(out, resume=bool(args.resume), writer=rank == 0)
    if rank == 0 and not args.resume:
        run_dir.write_json(ARGS_FILE, dataclasses.asdict(args))
    elif rank == 0 and changes:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": {k: list(v) for k, v in changes.items()}}
        try:
            with (out / ARGS_HISTORY).open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            raise disk_error(err, f"writing {out / ARGS_HISTORY}") from None
        run_dir.write_json(ARGS_FILE, dataclasses.asdict(args))
    return run_dir


# ---------------------------------------------------------------------------- metrics
class MetricsLog:
    """JSON lines (and TensorBoard) of namespaced metrics; only an enabled log writes."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = Path(out) / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out) / "tensorboard"))
            except ImportError:
                self.tb = None

    def truncate_after(self, step: int) -> int:
        """Drop rows logged after update ``step`` (a resumed run writes them again); how many."""
        if not self.enabled or not self.path.is_file():
            return 0
        lines = self.path.read_text().splitlines(keepends=True)

        def kept(line: str) -> bool:
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                return False  # a line torn by a crash mid-write
            return isinstance(row, dict) and isinstance(row.get("update", 0), (int, float)) and row.get("update", 0) <= step

        keep = [line if line.endswith("\n") else line + "\n" for line in lines if line.strip() and kept(line)]
        if len(keep) != len(lines):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(keep))
            os.replace(tmp, self.path)
        return len(lines) - len(keep)

    def close(self) -> None:
        """Flush and close the TensorBoard writer (the JSON lines are written row by row)."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one row ``{"update": step, **metrics}``."""
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps({"update": step, **metrics}) + "\n")
        except OSError as err:
            raise disk_error(err, f"writing metrics of update {step}") from None
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)


# ---------------------------------------------------------------------------- misc
def check_finite(model, losses: dict[str, Any], update: int, out: Path) -> None:
    """:class:`UserError` when an update's loss or any trained (LoRA) weight is not finite:
    the run stops before sampling from a broken policy; the last checkpoint is kept."""
    import math

    bad = [k for k, v in losses.items() if isinstance(v, float) and k.startswith("losses/") and not math.isfinite(v)]
    weights = next((n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()), None)
    if bad or weights:
        what = f"the loss {bad[0]} is {losses[bad[0]]}" if bad else f"the weight {weights} is not finite"
        raise UserError(f"update {update}: {what}; stopping before sampling from it (the checkpoints in {out} were "
                        "written before it: resume with --resume and --override --learning-rate <smaller>, or start afresh)")


def adapter_digest(model) -> str:
    """A hash of every trainable parameter (ranks of a data-parallel run must agree)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not distributed."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def run_name(*parts: Any) -> str:
    """``part1__part2__...__<unix time>`` (CleanRL's run names)."""
    return "__".join(str(p).replace(":", "_").replace("/", "_") for p in (*parts, int(time.time())))
