"""Helpers for running MemorySession-v0 in Gymnasium vector environments.

``gym.make_vec("MemorySession-v0", num_envs=N, vectorization_mode="sync" | "async")``
works as is: observations come back as a tuple of N JSON strings, rewards and
terminations as arrays, and ``infos`` as one dict of arrays. Gymnasium batches each
info key into an array of length N plus a boolean mask ``infos["_key"]`` saying which
sub-environments set it, recursively for nested dicts such as ``info["gold"]``; a
sub-environment that did not set a key leaves ``None`` (object arrays) or ``0``
(numeric arrays) in its slot. Agents written for one environment (``act(obs, info)``)
need that sub-environment's own info back: :func:`unbatch_info` rebuilds it.

Autoreset: Gymnasium 1.x vector environments default to ``AutoresetMode.NEXT_STEP``.
The step on which sub-environment ``i`` terminates returns its last observation (``""``
for MemorySession-v0) with the final reward and info (``episode``, ``session_credit``);
the *next* call to ``step`` ignores action ``i``, resets that sub-environment and
returns its first observation with reward 0 and ``terminated = truncated = False``.
Loops that store transitions must therefore drop the transition that follows a
termination (or read the first observation of the new episode from it).

Async mode works with Gymnasium's defaults: :mod:`memenv.spaces` registers shared-memory
handlers for :class:`~memenv.spaces.UnicodeText` (UTF-8 with a length prefix; Gymnasium's
own Text handlers return stale observations, Gymnasium issue #1164).
"""

from __future__ import annotations

from typing import Any

import numpy as np




def _mask(infos: dict, key: str, index: int) -> bool:
    mask = infos.get(f"_{key}")
    return mask is None or bool(mask[index])


def _item(value: Any) -> Any:
    """A numpy scalar as the Python scalar a single environment would have given."""
    return value.item() if isinstance(value, np.generic) else value


def unbatch_info(infos: dict, index: int) -> dict:
    """The info dict sub-environment ``index`` returned, rebuilt from a vector env's infos.

    Keys whose mask ``infos["_key"][index]`` is False are left out (that sub-environment
    did not set them), nested dicts are rebuilt recursively, and numpy scalars become
    Python scalars, so the result equals the single environment's info for JSON-like
    values.
    """
    if not isinstance(infos, dict):
        raise TypeError(f"infos must be the dict a vector env returns, got {type(infos).__name__}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    out: dict = {}
    for key, value in infos.items():
        if key.startswith("_") and key[1:] in infos:
            continue
        if not _mask(infos, key, index):
            continue
        if isinstance(value, dict):
            out[key] = unbatch_info(value, index)
        elif isinstance(value, np.ndarray):
            if index >= len(value):
                raise ValueError(f"index {index} out of range for info {key!r} of {len(value)} environments")
            out[key] = _item(value[index])
        else:
            raise TypeError(f"info {key!r} is a {type(value).__name__}, not a batched array or dict")
    return out


def unbatch_infos(infos: dict, num_envs: int) -> list[dict]:
    """Every sub-environment's info, in order (see :func:`unbatch_info`)."""
    return [unbatch_info(infos, i) for i in range(num_envs)]
