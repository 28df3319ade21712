"""What every trainer does around its update loop: its output directory, checkpoints, metrics.

* :class:`RunDir` -- an output directory owned by one run. A fresh run needs a new or
  empty directory; ``--resume`` needs one that holds a checkpoint. The directory is locked
  (``fcntl.flock`` on ``.lock``) for the run's whole life, so a second trainer pointed at it
  stops at once instead of interleaving metrics and adapters.
* :func:`resume_args` -- a resumed run continues with the settings in its ``args.json``;
  flags given again on the command line may only differ there when they do not alter the
  run (``--stop-after``, ``--progress`` ...), unless ``--override`` is given, in which case
  each change is recorded in ``args_history.jsonl``.
* :func:`save_checkpoint` / :func:`load_checkpoint` -- a checkpoint is a folder written
  atomically (a temporary folder, then one rename): the adapters in PEFT format, the
  optimizer, module and RNG states in ``trainer_state.pt``, and last ``manifest.json``
  with the SHA-256 of every file and the tensor names of every adapter. Loading never runs
  code (``torch.load(weights_only=True)``, RNG states are tensors, lists and numbers), checks
  every digest and every adapter key against the model, and falls back to the previous
  intact checkpoint, saying so, when the latest one is damaged.
* :class:`MetricsLog` -- namespaced metrics as JSON lines (and TensorBoard events).

User errors (a bad flag, a used directory, a damaged run) raise :class:`UserError`, which
:func:`algos.cli.run_main` prints as one line, before any model loads where it can.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.pt"
ARGS_FILE = "args.json"
ARGS_HISTORY = "args_history.jsonl"
LOCK_FILE = ".lock"
CHECKPOINT_NAME = re.compile(r"update-\d{6,}")
# Flags that change how a run is driven or shown, not what it computes: they may differ on --resume.
RUN_CONTROL_FLAGS = frozenset({"resume", "output_dir", "stop_after", "progress", "tensorboard", "keep_checkpoints",
                               "checkpoint_every", "override", "num_threads"})
# OS errors that mean "this place cannot be written", reported as one line.
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


class UserError(Exception):
    """A problem with the user's input or files, reported as one line (no traceback)."""


# ---------------------------------------------------------------------------- seeding and RNG state
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(np_rng: np.random.Generator, torch_gen: torch.Generator) -> dict[str, Any]:
    """Every RNG a trainer draws from, as tensors, lists and numbers (``weights_only``-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy_global": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state(), "np_rng": np_rng.bit_generator.state, "sampling": torch_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator, torch_gen: torch.Generator) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["np_rng"]
    torch_gen.set_state(state["sampling"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- output directory
def _describe(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def disk_error(err: OSError, doing: str) -> UserError:
    """A one-line :class:`UserError` for an OS error of writing (full, read-only, forbidden)."""
    where = f" {err.filename}" if err.filename else ""
    return UserError(f"{doing}: cannot write{where}: {os.strerror(err.errno) if err.errno else err}")


def check_resumable(path: Path) -> None:
    """:class:`UserError` unless ``path`` is a run directory holding a checkpoint."""
    if not path.is_dir():
        raise UserError(f"--resume {path}: no such directory")
    if not (path / CHECKPOINTS / LATEST).is_file():
        raise UserError(f"--resume {path}: no {CHECKPOINTS}/{LATEST} there (no checkpoint was written)")


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
        target = self.path / name
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
    write(tmp)
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

    The run's ``args.json`` gives every setting, except the :data:`RUN_CONTROL_FLAGS`, which
    belong to each invocation and come from ``parsed`` (the command line as parsed). A flag
    in ``given`` (set explicitly) that differs from ``args.json`` is a :class:`UserError`
    naming every such flag, unless ``override``.
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
    updates = {k: getattr(parsed, k) for k in current if k in RUN_CONTROL_FLAGS or k in changes}
    return dataclasses.replace(base, **updates), changes


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


# ---------------------------------------------------------------------------- checkpoints
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def expected_adapter_keys(model, adapter: str) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes PEFT saves for ``adapter`` of ``model``."""
    from peft import get_peft_model_state_dict

    return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model, adapter_name=adapter).items()}


def save_checkpoint(out: Path, model, optimizer, state: dict, np_rng, torch_gen, adapter_names: Sequence[str],
                    keep: int = 3, modules: dict[str, torch.nn.Module] | None = None) -> Path:
    """Write ``checkpoints/update-<N>/`` atomically and point ``checkpoints/latest`` at it.

    ``state`` is the trainer's own JSON-able state (``state["update"]`` names the folder);
    ``modules``: further trained modules (e.g. a value head) saved with their state dicts.
    The ``keep`` newest checkpoints are kept. On a full or read-only disk the temporary
    folder is removed, the previous checkpoint stays intact, and a :class:`UserError` says so.
    """
    from agents.lora import save_adapter

    root = Path(out) / CHECKPOINTS
    name = f"update-{state['update']:06d}"
    tmp = root / f".tmp-{name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        adapters = {}
        for adapter in adapter_names:
            save_adapter(model, tmp / "adapters" / adapter, adapter)
            adapters[adapter] = sorted(expected_adapter_keys(model, adapter))
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state(np_rng, torch_gen), "state": state,
                    "modules": {k: m.state_dict() for k, m in (modules or {}).items()}}, tmp / TRAINER_STATE)
        files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"name": name, "update": state["update"], "files": files,
                                                "adapters": adapters}, indent=1))
        _fsync_tree(tmp)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = root / ".latest.tmp"
        pointer.write_text(name)
        os.replace(pointer, root / LATEST)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = read_latest(root) if (root / LATEST).is_file() else None
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise UserError(f"could not write checkpoint {name} in {root}: {os.strerror(err.errno) if err.errno else err} "
                        f"({err.filename or ''}); {kept}; free space and continue with --resume {out}") from None
    older = sorted((p for p in root.glob("update-*") if p.name != name and CHECKPOINT_NAME.fullmatch(p.name)),
                   key=lambda p: p.name)
    for old in older[: max(len(older) - (keep - 1), 0)] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_latest(root: Path) -> str:
    """The checkpoint name ``checkpoints/latest`` points at (a sibling folder, nothing else)."""
    name = (root / LATEST).read_text().strip()
    if not CHECKPOINT_NAME.fullmatch(name):
        raise UserError(f"{root / LATEST} does not name a checkpoint folder (got {name[:40]!r})")
    return name


class DamagedCheckpoint(Exception):
    """A checkpoint folder that fails verification; the message names the file and why."""


def verify_checkpoint(ckpt: Path, model, adapter_names: Sequence[str]) -> dict[str, Any]:
    """Check a checkpoint's digests and adapter keys against ``model``; its manifest, or :class:`DamagedCheckpoint`."""
    manifest_path = ckpt / MANIFEST
    if not manifest_path.is_file():
        raise DamagedCheckpoint(f"{manifest_path} is missing (an unfinished write, or a checkpoint of an older "
                                "version that cannot be verified)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files, adapters = manifest["files"], manifest["adapters"]
    except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as err:
        raise DamagedCheckpoint(f"{manifest_path} is unreadable ({err})") from None
    for rel, digest in files.items():
        path = ckpt / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise DamagedCheckpoint(f"{manifest_path} names a file outside the checkpoint: {rel!r}")
        if not path.is_file():
            raise DamagedCheckpoint(f"{path} is missing")
        if _sha256(path) != digest:
            raise DamagedCheckpoint(f"{path} does not match its SHA-256 in the manifest (changed or damaged)")
    from safetensors import safe_open

    for adapter in adapter_names:
        path = ckpt / "adapters" / adapter / "adapter_model.safetensors"
        if adapter not in adapters or not path.is_file():
            raise DamagedCheckpoint(f"{path}: the checkpoint holds no adapter {adapter!r} (saved: {sorted(adapters)})")
        expected = expected_adapter_keys(model, adapter)
        try:
            with safe_open(str(path), framework="pt") as f:
                found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as err:  # noqa: BLE001 - any parse failure of the file means damage
            raise DamagedCheckpoint(f"{path} is not a readable safetensors file ({err})") from None
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        if missing or extra:
            raise DamagedCheckpoint(f"{path}: LoRA tensors differ from the model's ({len(missing)} missing, e.g. "
                                    f"{missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})")
        wrong = [k for k in expected if expected[k] != found[k]]
        if wrong:
            raise DamagedCheckpoint(f"{path}: tensor {wrong[0]} has shape {found[wrong[0]]}, the model needs "
                                    f"{expected[wrong[0]]}")
    return manifest


def load_checkpoint(run_dir: Path, model, optimizer, np_rng, torch_gen, adapter_names: Sequence[str],
                    modules: dict[str, torch.nn.Module] | None = None, log: Callable[[str], None] = print) -> dict:
    """Restore adapters, optimizer, RNG states (and ``modules``) from the newest intact checkpoint.

    The latest checkpoint is verified first; when it is damaged, older ones are tried in
    turn and ``log`` says which was skipped and why. No intact checkpoint: :class:`UserError`.
    Returns the trainer state saved with it.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    root = Path(run_dir) / CHECKPOINTS
    latest = read_latest(root)
    others = sorted((p.name for p in root.glob("update-*") if CHECKPOINT_NAME.fullmatch(p.name) and p.name != latest),
                    reverse=True)
    problems = []
    for name in [latest, *others]:
        ckpt = root / name
        try:
            verify_checkpoint(ckpt, model, adapter_names)
            blob = torch.load(ckpt / TRAINER_STATE, weights_only=True, map_location="cpu")
        except DamagedCheckpoint as err:
            problems.append(str(err))
            log(f"checkpoint {name} is damaged: {err}; trying an older one")
            continue
        except Exception as err:  # noqa: BLE001 - an unpickling refusal or a torn file
            problems.append(f"{ckpt / TRAINER_STATE}: {err}".splitlines()[0])
            log(f"checkpoint {name} is damaged: {problems[-1]}; trying an older one")
            continue
        saved_modules = blob.get("modules", {})
        missing = sorted(set(modules or {}) - set(saved_modules))
        if missing:
            raise UserError(f"--resume {run_dir}: checkpoint {name} holds no {missing} (saved: {sorted(saved_modules)}); "
                            "was it written with other settings?")
        for adapter in adapter_names:
            weights = load_file(str(ckpt / "adapters" / adapter / "adapter_model.safetensors"))
            set_peft_model_state_dict(model, weights, adapter_name=adapter)
        for key, module in (modules or {}).items():
            module.load_state_dict(saved_modules[key])
        optimizer.load_state_dict(blob["optimizer"])
        set_rng_state(blob["rng"], np_rng, torch_gen)
        if name != latest:
            log(f"resumed from {name}, the newest intact checkpoint ({latest} is damaged)")
        return blob["state"]
    raise UserError(f"--resume {run_dir}: no intact checkpoint: {problems[0]}")


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


def print_error(prog: str, message: str) -> None:
    """``prog: error: message`` on stderr, as argparse prints its own errors."""
    print(f"{prog}: error: {message}", file=sys.stderr)
