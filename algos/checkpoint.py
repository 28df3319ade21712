"""Checkpoints of every trainer: written atomically, verified on load, never running code.

A checkpoint is ``checkpoints/update-<N>/``, written into a temporary folder and renamed in
one step, with ``checkpoints/latest`` naming the newest (a sibling folder, nothing else):

* ``adapters/<name>/`` -- each trained LoRA adapter in PEFT format (safetensors);
* ``trainer_state.pt`` -- optimizer and module state dicts, every RNG state (tensors, lists
  and numbers) and the trainer's own state, read with ``torch.load(weights_only=True)``;
* ``manifest.json`` (written last) -- the SHA-256 of every file and the LoRA tensor names.

:func:`load_checkpoint` checks every digest and every adapter key and shape against the
model, and falls back to the previous intact checkpoint, saying so, when the latest one is
damaged; with none intact it is a one-line :class:`algos.run.UserError` naming the file.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from agents.backbone import file_sha256
from algos.cli import UserError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.pt"
CHECKPOINT_NAME = re.compile(r"update-\d{6,}")


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
                    keep: int = 3, modules: dict[str, torch.nn.Module] | None = None,
                    serving: dict | None = None) -> Path:
    """Write ``checkpoints/update-<N>/`` atomically and point ``checkpoints/latest`` at it.

    ``state`` is the trainer's own JSON-able state (``state["update"]`` names the folder);
    ``modules``: further trained modules (e.g. a value head) saved with their state dicts;
    ``serving``: the settings :func:`agents.lora.save_adapter` records beside each adapter, so a
    checkpoint's adapter is served as it was trained (``llm:<model>:<checkpoint>/adapters/<name>``).
    The ``keep`` newest checkpoints are kept. On a full or read-only disk the temporary
    folder is removed, the previous checkpoint stays intact, and a :class:`UserError` says so.
    """
    from agents.lora import save_adapter

    root = Path(out) / CHECKPOINTS
    name = f"update-{state['update']:06d}"
    tmp = root / f".tmp-{name}"
    writing = tmp
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        adapters = {}
        for adapter in adapter_names:
            writing = tmp / "adapters" / adapter / "adapter_model.safetensors"
            save_adapter(model, tmp / "adapters" / adapter, adapter, **(serving or {}))
            adapters[adapter] = sorted(expected_adapter_keys(model, adapter))
        writing = tmp / TRAINER_STATE
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state(np_rng, torch_gen), "state": state,
                    "modules": {k: m.state_dict() for k, m in (modules or {}).items()}}, tmp / TRAINER_STATE)
        files = {str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        writing = tmp / MANIFEST
        (tmp / MANIFEST).write_text(json.dumps({"name": name, "update": state["update"], "files": files,
                                                "adapters": adapters}, indent=1))
        _fsync_tree(tmp)
        final = root / name
        writing = final
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = root / ".latest.tmp"
        writing = root / LATEST
        pointer.write_text(name)
        os.replace(pointer, root / LATEST)
    except Exception as err:  # noqa: BLE001 - every write failure: safetensors' SafetensorError is no OSError
        shutil.rmtree(tmp, ignore_errors=True)
        (root / ".latest.tmp").unlink(missing_ok=True)
        try:
            previous = read_latest(root) if (root / LATEST).is_file() else None
        except (UserError, OSError):
            previous = None
        kept = (f"the previous checkpoint {root / previous} is intact" if previous and previous != name
                else "no earlier checkpoint exists")
        if isinstance(err, OSError) and err.errno:
            reason = os.strerror(err.errno)
        else:
            reason = (str(err).splitlines() or [type(err).__name__])[0]
        where = getattr(err, "filename", None) or writing
        raise UserError(f"could not write checkpoint {name}: {where}: {reason}; the temporary folder was removed and "
                        f"{kept}; free space and continue with --resume {out}") from None
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
        if file_sha256(path) != digest:
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
        from safetensors.torch import load_file

        bad = next((k for k, v in load_file(str(path)).items() if v.is_floating_point() and not torch.isfinite(v).all()),
                   None)
        if bad is not None:
            raise DamagedCheckpoint(f"{path}: tensor {bad} holds non-finite values (nan or inf)")
    return manifest


def _nonfinite_state(blob: Any, where: str = "") -> str | None:
    """The first floating tensor of the optimizer or module states that is not finite, by name."""
    if isinstance(blob, dict):
        for k, v in blob.items():
            if where == "" and k not in ("optimizer", "modules"):
                continue
            found = _nonfinite_state(v, f"{where}/{k}")
            if found:
                return found
    elif isinstance(blob, (list, tuple)):
        for i, v in enumerate(blob):
            found = _nonfinite_state(v, f"{where}/{i}")
            if found:
                return found
    elif isinstance(blob, torch.Tensor) and blob.is_floating_point() and not torch.isfinite(blob).all():
        return where.lstrip("/")
    return None


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
            reason = ("it holds a pickled object that the safe loader refuses (torch.load weights_only)"
                      if "weights_only" in str(err) or "Weights only load failed" in str(err)
                      else (str(err).splitlines() or [type(err).__name__])[0])
            problems.append(f"{ckpt / TRAINER_STATE}: {reason}")
            log(f"checkpoint {name} is damaged: {problems[-1]}; trying an older one")
            continue
        nonfinite = _nonfinite_state(blob)
        if nonfinite:
            problems.append(f"{ckpt / TRAINER_STATE}: {nonfinite} holds non-finite values (nan or inf)")
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
