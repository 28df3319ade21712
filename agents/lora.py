"""LoRA adapters for the memory agents (peft), in one of two layouts.

* shared (default): one adapter ``"policy"`` used by both the fact extractor and the memory
  manager -- Memory-R2's shared-parameter co-learning, where the two roles differ only by
  their prompt.
* per-role (``per_role=True``): adapters ``"extract"`` and ``"manage"``.

The answer agent uses the frozen base model unless an ``"answer"`` adapter exists.
:func:`role_adapter` reads the layout off the model, so callers never hard-code it.

The reference policy for the KL penalty is the same model with its adapter disabled
(``with model.disable_adapter():``), never a second copy of the weights -- or, for a
reference taken at a curriculum stage's start (the official Memory-R2 hand-off), a frozen
copy of each trained adapter, ``reference-<name>`` (:func:`snapshot_reference`), which
:func:`reference_adapter` finds for a role: a copy of the adapter, not of the model.

Adapters are saved in the standard PEFT format (``adapter_config.json`` +
``adapter_model.safetensors`` directly in the given directory), so
``PeftModel.from_pretrained(base, path)`` reads them; ``memenv_adapter.json`` beside them
records the adapter's name, so :func:`load_adapters` gives it back its role (an
``"answer"`` adapter answers, a ``"policy"`` one extracts and manages), and the base model
it was trained on (its name and shape, :func:`base_model_record`), so loading it onto a
base of another shape is refused with a one-line error (:func:`check_base_model`) instead
of peft's size-mismatch traceback -- or, for a base with more layers, a silent partial load.
Adapters without that record (plain peft, older versions) load unchecked.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from agents.backbone import Backbone
from agents.prompts import ANSWER, EXTRACT, MANAGE, ROLES

POLICY_ADAPTER = "policy"
# Every linear layer of a Llama-like block: attention and MLP (the usual "all-linear" LoRA).
LLAMA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Beside the PEFT files: which adapter (role layout name) the weights were saved from.
ADAPTER_META = "memenv_adapter.json"
# The base model's name as loaded (Backbone.name), kept on the base module by add_lora and
# load_adapter so that save_adapter can record it without every caller passing it.
BASE_NAME_ATTR = "memenv_base_name"
# The config fields an adapter's weights depend on: the base it is loaded onto must agree.
BASE_SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size")


def _is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _base_module(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under any peft wrapping."""
    return model.get_base_model() if _is_peft(model) else model


def _remember_base_name(backbone: Backbone) -> None:
    setattr(_base_module(backbone.model), BASE_NAME_ATTR, backbone.name)


def base_model_record(model: torch.nn.Module, name: str | None = None) -> dict:
    """The base model's name and shape, as :func:`save_adapter` records them.

    ``name`` defaults to the backbone name :func:`add_lora` / :func:`load_adapter` noted on
    the model (None when it was wrapped otherwise); the shape fields
    (``BASE_SHAPE_FIELDS``) come from the base model's config, each only when present.
    """
    base = _base_module(model)
    config = getattr(base, "config", None)
    record: dict = {"name": name if name is not None else getattr(base, BASE_NAME_ATTR, None)}
    for field in BASE_SHAPE_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            record[field] = value
    return record


def check_base_model(path: str | Path, recorded: dict | None, target: torch.nn.Module,
                     target_name: str | None = None) -> None:
    """``ValueError`` (one line) when the adapter at ``path``, trained on the base ``recorded``
    (:func:`base_model_record`; None: unrecorded, nothing to check), does not fit ``target``.

    Only the shape is compared: the same model under another name or path is fine.
    """
    if not recorded:
        return
    actual = base_model_record(target, target_name)
    differ = [f for f in BASE_SHAPE_FIELDS
              if recorded.get(f) is not None and actual.get(f) is not None and recorded[f] != actual[f]]
    if differ:
        details = ", ".join(f"{f} {recorded[f]!r} != {actual[f]!r}" for f in differ)
        raise ValueError(f"adapter {path} was trained on base model {recorded.get('name') or '(unnamed)'!r} but "
                         f"is being loaded onto {actual.get('name') or '(unnamed)'!r}, which has another shape "
                         f"({details}); load it onto the base it was trained on")


def adapter_names(model: torch.nn.Module) -> tuple[str, ...]:
    """The names of the adapters a model holds (empty for a plain model)."""
    return tuple(model.peft_config) if _is_peft(model) else ()


def add_lora(
    backbone: Backbone,
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    per_role: bool = False,
    answer_adapter: bool = False,
    names: Sequence[str] | None = None,
):
    """Wrap the backbone's model in trainable LoRA adapters and return the ``PeftModel``.

    Layout: ``("policy",)`` by default, ``("extract", "manage")`` with ``per_role``, plus
    ``"answer"`` with ``answer_adapter``; or exactly ``names`` (not combinable with the
    two flags). The first adapter is active. Base weights are frozen; every adapter's
    weights are trainable. peft injects the LoRA layers into the model in place, and
    ``backbone.model`` becomes the returned ``PeftModel`` so the backbone stays coherent.
    """
    from peft import LoraConfig, get_peft_model

    if names is not None and (per_role or answer_adapter):
        raise ValueError("give either names or per_role/answer_adapter, not both")
    if names is None:
        names = (EXTRACT, MANAGE) if per_role else (POLICY_ADAPTER,)
        names = (*names, ANSWER) if answer_adapter else names
    names = tuple(names)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"adapter names must be distinct non-empty strings, got {names!r}")
    if r <= 0:
        raise ValueError(f"LoRA rank r must be positive, got {r}")
    if _is_peft(backbone.model):
        raise ValueError(f"backbone {backbone.name!r} already holds adapters {adapter_names(backbone.model)}")
    _remember_base_name(backbone)

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules or LLAMA_TARGET_MODULES),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(backbone.model, config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, copy.deepcopy(config))
    model.set_adapter(names[0])
    for name in names:
        for param in adapter_parameters(model, name):
            param.requires_grad_(True)
    backbone.model = model
    return model


def adapter_parameters(model: torch.nn.Module, adapter_name: str) -> list[torch.nn.Parameter]:
    """The LoRA parameters of one adapter (what an optimizer for that adapter should get)."""
    if adapter_name not in adapter_names(model):
        raise ValueError(f"model has no adapter {adapter_name!r}; it has {adapter_names(model)}")
    marker = f".{adapter_name}."
    return [p for n, p in model.named_parameters() if "lora_" in n and marker in n]


REFERENCE_PREFIX = "reference-"
"""Frozen reference copies of trained adapters are named ``reference-<adapter>``."""


def reference_name(adapter: str) -> str:
    """The name of ``adapter``'s frozen reference copy."""
    return REFERENCE_PREFIX + adapter


def snapshot_reference(model: torch.nn.Module, adapters: Sequence[str]) -> list[str]:
    """Copy each adapter's current weights into its frozen reference copy (created on first use).

    From then on :func:`reference_adapter` gives the copy for the roles the adapter serves,
    so KL penalties pull towards the weights as they are now (e.g. a curriculum stage's
    starting point) instead of the base model. Returns the copies' names.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    names = []
    for adapter in adapters:
        if adapter not in adapter_names(model):
            raise ValueError(f"model has no adapter {adapter!r}; it has {adapter_names(model)}")
        name = reference_name(adapter)
        if name not in adapter_names(model):
            # peft's add_adapter re-marks which adapters train: keep every existing one as it was
            flags = {p: p.requires_grad for n, p in model.named_parameters() if "lora_" in n}
            model.add_adapter(name, copy.deepcopy(model.peft_config[adapter]))
            for param, flag in flags.items():
                param.requires_grad_(flag)
        weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=adapter).items()}
        set_peft_model_state_dict(model, weights, adapter_name=name)
        for param in adapter_parameters(model, name):
            param.requires_grad_(False)
        names.append(name)
    return names


def reference_adapter(model: torch.nn.Module, role: str) -> str | None:
    """The frozen reference copy of the adapter ``role`` uses, or None (the base model) when it has none."""
    adapter = role_adapter(model, role)
    if adapter is None:
        return None
    name = reference_name(adapter)
    return name if name in adapter_names(model) else None


def role_adapter(model: torch.nn.Module, role: str) -> str | None:
    """The adapter a role uses on this model, or None for the frozen base model.

    extract/manage: their own adapter if present (per-role layout), else ``"policy"``
    (shared layout), else the base. answer: ``"answer"`` if present, else the base.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")
    names = adapter_names(model)
    if role in names:
        return role
    if role != ANSWER and POLICY_ADAPTER in names:
        return POLICY_ADAPTER
    return None


@contextlib.contextmanager
def use_adapter(model: torch.nn.Module, name: str | None) -> Iterator[torch.nn.Module]:
    """Within the block, run ``model`` with adapter ``name`` active (None: adapters disabled).

    The previously active adapter is restored on exit. Unlike peft's ``set_adapter`` and
    ``disable_adapter`` (which both mark the active adapter trainable), switching never
    changes which parameters are trainable: a frozen adapter stays frozen.
    """
    if not _is_peft(model):
        if name is not None:
            raise ValueError(f"model has no adapters, so it cannot use adapter {name!r}")
        yield model
        return
    if name is not None and name not in adapter_names(model):
        raise ValueError(f"model has no adapter {name!r}; it has {adapter_names(model)}")
    flags = {p: p.requires_grad for n, p in model.named_parameters() if "lora_" in n}

    def restore_flags() -> None:
        for param, flag in flags.items():
            param.requires_grad_(flag)

    if name is None:
        try:
            with model.disable_adapter():
                yield model
        finally:
            restore_flags()
        return
    previous = model.active_adapter
    model.set_adapter(name)
    restore_flags()
    try:
        yield model
    finally:
        model.set_adapter(previous)
        restore_flags()


def save_adapter(model: torch.nn.Module, path: str | Path, adapter_name: str, *, prompt_style: str | None = None,
                 max_prompt_tokens: int | None = None, max_new_tokens: int | None = None,
                 distill: bool | None = None, base_model: str | None = None,
                 manage_ops: Sequence[str] | None = None) -> Path:
    """Save one adapter in PEFT format directly into ``path`` (created; files replaced).

    peft itself puts non-default adapters in a sub-folder named after them; here the files
    land in ``path`` so that ``PeftModel.from_pretrained(base, path)`` reads them.
    ``memenv_adapter.json`` beside them records ``adapter_name``, the base model
    (``base_model``: its name, by default the backbone name the model was wrapped under,
    and its shape; see :func:`base_model_record`) and, when given, the settings the adapter
    was trained with (``prompt_style``, ``max_prompt_tokens``, ``max_new_tokens`` of the
    roles it serves, ``distill``, ``manage_ops``: the manager operations it was trained
    under, recorded only when not all four): an :class:`agents.llm_agent.LLMAgent` loading it serves
    it the same way by default. It also records the command of the process that saved it
    (:func:`process_command`) and when, so that whoever reads a result made with the adapter
    can rebuild it.
    """
    if adapter_name not in adapter_names(model):
        raise ValueError(f"model has no adapter {adapter_name!r}; it has {adapter_names(model)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path) as tmp:
        model.save_pretrained(tmp, selected_adapters=[adapter_name])
        source = Path(tmp) if adapter_name == "default" else Path(tmp) / adapter_name
        for file in ADAPTER_FILES:
            shutil.move(str(source / file), str(path / file))
            os.chmod(path / file, 0o644)  # the temporary folder's files are private (0600); the run's are not
    from memenv.parsing import OPS

    ops = list(manage_ops) if manage_ops is not None and tuple(manage_ops) != OPS else None
    settings = {"prompt_style": prompt_style, "max_prompt_tokens": max_prompt_tokens,
                "max_new_tokens": max_new_tokens, "distill": distill, "manage_ops": ops}
    meta = {"adapter_name": adapter_name, "base_model": base_model_record(model, base_model),
            **{k: v for k, v in settings.items() if v is not None}, "command": process_command(),
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (path / ADAPTER_META).write_text(json.dumps(meta) + "\n")
    return path


def process_command() -> str:
    """How this process was started, as a command to type: ``python -m <module> <args>`` when
    it was run as a module, else ``python <argv>``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if name:
        name = name.removesuffix(".__main__")
        return "python -m " + shlex.join([name, *sys.argv[1:]])
    return "python " + shlex.join(sys.argv)


def saved_adapter_info(path: str | Path) -> dict:
    """What :func:`save_adapter` recorded at ``path`` (``{}`` for an adapter saved by plain peft)."""
    meta = Path(path) / ADAPTER_META
    if not meta.is_file():
        return {}
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta} is not JSON: {err}") from None
    if not isinstance(info, dict) or not isinstance(info.get("adapter_name"), str) or not info["adapter_name"]:
        raise ValueError(f"{meta} is not a JSON object with an 'adapter_name' string")
    if "base_model" in info and not isinstance(info["base_model"], dict):
        raise ValueError(f"{meta}: 'base_model' should be a JSON object (the base model's name and shape)")
    return info


def saved_adapter_name(path: str | Path, default: str = POLICY_ADAPTER) -> str:
    """The adapter name recorded by :func:`save_adapter` at ``path`` (``default`` when absent,
    e.g. for an adapter saved by plain peft)."""
    return saved_adapter_info(path).get("adapter_name", default)


def find_adapters(path: str | Path) -> dict[str, Path]:
    """The adapters a directory holds, by the name each gets when loaded.

    ``path`` is one PEFT adapter (named as recorded by :func:`save_adapter`, else
    ``"policy"``) or a directory of adapter sub-directories, one per role (``extract/``,
    ``manage/``, ``answer/``, ``policy/``: each named as recorded, else after its
    sub-directory), as the trainers write them. ``FileNotFoundError`` when there is none.
    """
    path = Path(path)
    if (path / ADAPTER_FILES[0]).is_file():
        return {saved_adapter_name(path): path}
    found: dict[str, Path] = {}
    if path.is_dir():
        for sub in sorted(p for p in path.iterdir() if (p / ADAPTER_FILES[0]).is_file()):
            name = saved_adapter_name(sub, default=sub.name)
            if name in found:
                raise ValueError(f"{path}: sub-directories {found[name].name}/ and {sub.name}/ both hold adapter {name!r}")
            found[name] = sub
    if not found:
        raise FileNotFoundError(f"no PEFT adapter at {path} (no {ADAPTER_FILES[0]} there nor in a sub-directory)")
    return found


def _check_pickled_weights(path: Path) -> None:
    """``ValueError`` (one line) for an adapter whose only weights are an ``adapter_model.bin``
    that torch's weights-only loader refuses (a pickled object: it could run code)."""
    legacy = path / "adapter_model.bin"
    if (path / ADAPTER_FILES[1]).is_file() or not legacy.is_file():
        return  # peft reads the safetensors file first
    try:
        torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - an UnpicklingError quoting many lines, or a torn file
        reason = ("it holds a pickled object that the safe loader refuses (torch.load weights_only)"
                  if "weights_only" in str(err) or "Weights only load failed" in str(err)
                  else (str(err).splitlines() or [type(err).__name__])[0])
        raise ValueError(f"{legacy}: {reason}; save the adapter as {ADAPTER_FILES[1]}") from None


def load_adapters(target: Backbone, path: str | Path, *, is_trainable: bool = False):
    """Load every adapter :func:`find_adapters` finds at ``path`` under its own name; the ``PeftModel``.

    On a plain backbone the first one loaded becomes active; roles pick theirs through
    :func:`role_adapter` (and :func:`use_adapter`) either way.
    """
    model = None
    for name, sub in find_adapters(path).items():
        model = load_adapter(target if model is None else model, sub, adapter_name=name, is_trainable=is_trainable)
    return model


def load_adapter(
    target: Backbone | torch.nn.Module,
    path: str | Path,
    *,
    adapter_name: str = POLICY_ADAPTER,
    is_trainable: bool = False,
):
    """Load a PEFT adapter saved at ``path`` and return the ``PeftModel``.

    ``target`` is a Backbone (a plain model gets wrapped, becomes ``backbone.model`` and
    has the adapter active; a wrapped one gets the adapter added) or a ``PeftModel``
    (the adapter is added, not activated). ``is_trainable=False`` loads it frozen.
    ``ValueError`` when the adapter recorded a base model of another shape than the
    target's (:func:`check_base_model`).
    """
    from peft import PeftModel

    path = Path(path)
    if not (path / ADAPTER_FILES[0]).is_file():
        raise FileNotFoundError(f"no PEFT adapter at {path} (missing {ADAPTER_FILES[0]})")
    _check_pickled_weights(path)
    recorded = saved_adapter_info(path).get("base_model")
    if isinstance(target, Backbone):
        _remember_base_name(target)
        if not _is_peft(target.model):
            check_base_model(path, recorded, target.model)
            target.model = PeftModel.from_pretrained(
                target.model, str(path), adapter_name=adapter_name, is_trainable=is_trainable
            )
            return target.model
        target = target.model
    if not _is_peft(target):
        raise TypeError(f"target must be a Backbone or a PeftModel, got {type(target).__name__}")
    check_base_model(path, recorded, target)
    if adapter_name in adapter_names(target):
        raise ValueError(f"model already holds an adapter named {adapter_name!r}")
    target.load_adapter(str(path), adapter_name=adapter_name, is_trainable=is_trainable)
    return target


def merge_for_inference(model: torch.nn.Module, *, adapter_name: str | None = None, copy_model: bool = True):
    """A plain (non-peft) model with ``adapter_name`` (default: the active one) merged in.

    With ``copy_model`` (default) the input is left untouched -- merging in place would
    also change the base weights that serve as the reference policy.
    """
    if not _is_peft(model):
        raise TypeError(f"expected a PeftModel, got {type(model).__name__}")
    name = adapter_name or model.active_adapter
    if name not in adapter_names(model):
        raise ValueError(f"model has no adapter {name!r}; it has {adapter_names(model)}")
    work = copy.deepcopy(model) if copy_model else model
    return work.merge_and_unload(adapter_names=[name])
