"""Saved memory managers: one ``.safetensors`` file, no pickle.

:func:`save_manager` writes one ``.safetensors`` file, the policy's float32 tensors plus
a JSON header (net architecture, activation, feature names and version, action count,
and a marker that this project wrote it); :func:`load_manager_policy` rebuilds SB3's
``ActorCriticPolicy`` from it. That is the only file the ``sb3-manager`` agent opens,
because neither part is pickle and opening it cannot run code. SB3's own ``.zip`` is
refused: ``PPO.load`` unpickles its ``data`` entry (cloudpickle), so a crafted zip runs
arbitrary code. So are ``torch.save`` files, pickles, files without the marker, and files
whose features, architecture or tensor shapes do not match. To reuse a zip you trust,
re-save it: ``save_manager(PPO.load(zip_path), "model.safetensors")``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from gymnasium import spaces

from agents.sb3_features import DECISIONS, FEATURE_NAMES, FEATURE_VERSION, NUM_FEATURES

# A saved manager is one safetensors file: the policy's float32 tensors, and in the
# header's metadata (under MODEL_METADATA_KEY) a JSON object that rebuilds the policy.
# Neither part is pickle, so opening a file cannot run code — unlike SB3's .zip, whose
# ``data`` entry PPO.load unpickles with cloudpickle.
MODEL_FORMAT = "memenv-sb3-manager"  # the marker: this project wrote the file
MODEL_FORMAT_VERSION = 1
MODEL_METADATA_KEY = "memenv"
# activation name in the file -> name of the torch.nn class (only these two are rebuilt)
ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU"}
# Bounds on a saved net, checked before it is built (a header cannot make us allocate much).
MAX_LAYER_WIDTH = 1024
MAX_LAYERS = 4
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_OPCODE = 0x80


def _policy_of(model: Any):
    """The ``ActorCriticPolicy`` of a PPO model (or the policy itself); refuses other kinds."""
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = getattr(model, "policy", model)
    if type(policy) is not ActorCriticPolicy:
        raise ValueError(f"only SB3 MlpPolicy (ActorCriticPolicy) managers can be saved, got {type(policy).__name__}")
    if policy.features_extractor_class is not FlattenExtractor:
        raise ValueError(f"the manager policy must use FlattenExtractor, got {policy.features_extractor_class.__name__}")
    if tuple(policy.observation_space.shape) != (NUM_FEATURES,):
        raise ValueError(f"the manager policy must read {NUM_FEATURES} features, got {policy.observation_space.shape}")
    if not isinstance(policy.action_space, spaces.Discrete) or int(policy.action_space.n) != len(DECISIONS):
        raise ValueError(f"the manager policy must choose among {len(DECISIONS)} decisions, got {policy.action_space}")
    return policy


def _manager_header(policy: Any) -> dict:
    """The JSON that rebuilds ``policy`` (see :func:`save_manager`)."""
    import torch

    activation = next((name for name, cls_name in ACTIVATIONS.items()
                       if policy.activation_fn is getattr(torch.nn, cls_name)), None)
    if activation is None:
        raise ValueError(f"the manager policy's activation must be one of {sorted(ACTIVATIONS)}, "
                         f"got {policy.activation_fn.__name__}")
    arch = policy.net_arch
    net_arch = {"pi": list(arch.get("pi", [])), "vf": list(arch.get("vf", []))} if isinstance(arch, dict) \
        else {"pi": list(arch), "vf": list(arch)}
    return {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES), "observation_size": NUM_FEATURES, "num_actions": len(DECISIONS),
            "net_arch": net_arch, "activation": activation}


def save_manager(model: Any, path: str) -> str:
    """Save a trained manager (SB3 PPO ``MlpPolicy`` model, or its policy) for :func:`load_manager_policy`.

    Writes one ``.safetensors`` file: the policy's tensors, and in its header the net
    architecture, activation, feature names and version, and this project's format
    marker. Returns ``path``. To reuse an SB3 ``.zip`` you trust, save
    ``PPO.load(zip_path)`` with this function: the loader never opens a zip.
    """
    from safetensors.torch import save_file

    policy = _policy_of(model)
    header = _manager_header(policy)
    why = _check_header(header)  # what the loader would refuse is not written
    if why is not None:
        raise ValueError(f"cannot save this manager: {why}")
    tensors = {key: value.detach().cpu().contiguous() for key, value in policy.state_dict().items()}
    save_file(tensors, path, metadata={MODEL_METADATA_KEY: json.dumps(header)})
    return path


def _short(value: Any) -> str:
    """``repr(value)`` cut to one short line (header values come from the file)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _layer_sizes(value: Any) -> bool:
    return (isinstance(value, list) and len(value) <= MAX_LAYERS
            and all(type(d) is int and 1 <= d <= MAX_LAYER_WIDTH for d in value))


def _check_header(header: Any) -> str | None:
    """Why a parsed header cannot be rebuilt by this code, or None when it can."""
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        return f"no {MODEL_FORMAT!r} marker in its metadata, so it was not written by save_manager"
    if header.get("format_version") != MODEL_FORMAT_VERSION:
        return f"format version {_short(header.get('format_version'))}, this code reads {MODEL_FORMAT_VERSION}"
    if header.get("feature_version") != FEATURE_VERSION or header.get("feature_names") != list(FEATURE_NAMES) \
            or header.get("observation_size") != NUM_FEATURES:
        return (f"it was trained on other features (feature version {_short(header.get('feature_version'))}, "
                f"{_short(header.get('observation_size'))} features; this code has version {FEATURE_VERSION}, "
                f"{NUM_FEATURES} features); retrain it")
    if header.get("num_actions") != len(DECISIONS):
        return f"{_short(header.get('num_actions'))} actions, the manager has {len(DECISIONS)}"
    if header.get("activation") not in ACTIVATIONS:
        return f"activation {_short(header.get('activation'))} is not one of {sorted(ACTIVATIONS)}"
    arch = header.get("net_arch")
    if not isinstance(arch, dict) or set(arch) != {"pi", "vf"} or not all(_layer_sizes(v) for v in arch.values()):
        return (f"net_arch {_short(arch)} is not {{'pi': [...], 'vf': [...]}} with at most {MAX_LAYERS} layers "
                f"of 1..{MAX_LAYER_WIDTH} units")
    return None


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def load_manager_policy(path: str):
    """The SB3 ``ActorCriticPolicy`` (CPU, eval mode) saved at ``path`` by :func:`save_manager`.

    Reads only the safetensors header (JSON) and float32 tensors — never pickle, so a
    crafted file cannot run code. Anything else is refused with a one-line
    ``ValueError`` naming the file: SB3 ``.zip`` files and ``torch.save`` files (both
    unpickled on load), pickles, files without this project's marker, and files whose
    features, architecture, tensor names, shapes or dtypes differ from what the header
    rebuilds.
    """
    import torch
    from safetensors import SafetensorError, safe_open
    from stable_baselines3.common.policies import ActorCriticPolicy

    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such sb3-manager model file")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            shapes = {key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()}
            try:
                header = json.loads(metadata.get(MODEL_METADATA_KEY, "null"))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: refused, its {MODEL_METADATA_KEY!r} metadata is not JSON "
                                 f"({_one_line(error)})") from None
            why = _check_header(header)
            if why is not None:
                raise ValueError(f"{path}: refused, {why}")
            with torch.random.fork_rng(devices=[]):  # building inits weights: leave the caller's RNG alone
                policy = ActorCriticPolicy(
                    spaces.Box(0.0, 1.0, shape=(NUM_FEATURES,), dtype=np.float32), spaces.Discrete(len(DECISIONS)),
                    lambda _: 0.0, net_arch=header["net_arch"],
                    activation_fn=getattr(torch.nn, ACTIVATIONS[header["activation"]]), ortho_init=False)
            expected = {key: (tuple(value.shape), "F32") for key, value in policy.state_dict().items()}
            if shapes != expected:
                raise ValueError(f"{path}: refused, its tensors do not fit the architecture in its header "
                                 f"({_shape_difference(shapes, expected)})")
            tensors = {key: f.get_tensor(key) for key in expected}
    except SafetensorError as error:
        raise ValueError(f"{path}: refused, {_not_safetensors(path, error)}") from None
    policy.load_state_dict(tensors, strict=True)
    policy.set_training_mode(False)
    return policy


def _not_safetensors(path: str, error: Exception) -> str:
    """Why a file safetensors could not open is refused, told from its first bytes.

    Only the message depends on these bytes: every file is first opened as safetensors
    (a real one may start with 0x80 or anything else: its first 8 bytes are a length).
    """
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        return ("a zip archive (an SB3 .zip or torch.save file) is unpickled on load and could run code; "
                "re-save a model you trust with agents.sb3_manager.save_manager")
    if head[:1] == bytes([_PICKLE_PROTOCOL_OPCODE]):
        return "a pickle could run code on load; only save_manager's .safetensors files are read"
    return f"not a safetensors file ({_one_line(error)})"


def _shape_difference(found: dict, expected: dict) -> str:
    """The first difference (in ``expected``'s order, input layer first) between two
    ``{tensor name: (shape, dtype)}`` maps, in words."""
    missing = [key for key in expected if key not in found]
    if missing:
        return f"missing {missing[0]!r}"
    extra = sorted(set(found) - set(expected))
    if extra:
        return f"unexpected tensor {_short(extra[0])}"
    key = next(k for k in expected if found[k] != expected[k])
    (shape, dtype), (want_shape, want_dtype) = found[key], expected[key]
    return f"{key!r} is {dtype} {_short(list(shape))}, expected {want_dtype} {list(want_shape)}"
