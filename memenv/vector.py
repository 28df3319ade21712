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

Async mode needs ``vector_kwargs={"shared_memory": False}``: Gymnasium reads a Text
observation buffer out of shared memory once, when the vector env is built, and then
returns that same (empty) tuple after every step (Gymnasium issue #1164, same cause for
Dict spaces); Text's shared-memory encoding also fails on characters outside the space's
sampling charset. Importing this module makes ``shared_memory=True`` with a
:class:`~memenv.spaces.UnicodeText` space fail at construction with Gymnasium's
"disable this feature with ``shared_memory=False``" error instead of returning empty
observations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.error import CustomSpaceError
from gymnasium.vector.utils import create_shared_memory

from memenv.spaces import UnicodeText

NO_SHARED_MEMORY = {"shared_memory": False}
"""``vector_kwargs`` for ``gym.make_vec(..., vectorization_mode="async")``."""


@create_shared_memory.register(UnicodeText)
def _refuse_text_shared_memory(space: UnicodeText, n: int = 1, ctx: Any = None) -> None:
    raise CustomSpaceError(
        "UnicodeText observations cannot travel through shared memory (Gymnasium reads a Text buffer "
        "only once); pass vector_kwargs={'shared_memory': False}"
    )


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
