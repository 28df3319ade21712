"""Forking through Gymnasium's wrapper stack."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
from gymnasium.utils import RecordConstructorArgs


def fork_env(env: gym.Env) -> gym.Env:
    """Fork an environment together with every wrapper around it.

    The innermost environment is forked with its own ``fork()`` (constant time); each
    wrapper is deep-copied with the memo pointing the copy at the forked environment, so
    wrapper state (elapsed steps, reset flags, statistics) is copied too and the two
    stacks never share anything mutable.
    """
    base = env.unwrapped
    fork = getattr(base, "fork", None)
    if not callable(fork):
        raise TypeError(f"{type(base).__name__} has no fork() method; LoGo-GRPO rerollouts need one")
    if base is env:
        return fork()
    return copy.deepcopy(env, memo={id(base): fork()})


class ForkableWrapper(gym.Wrapper, RecordConstructorArgs):
    """Makes ``env.fork()`` callable on the object ``gym.make`` returns.

    Gymnasium 1.x wrappers no longer forward attribute access to the inner environment;
    the registration adds this wrapper outermost so that ``fork()`` forks the whole stack.
    """

    def __init__(self, env: gym.Env) -> None:
        RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def fork(self) -> "ForkableWrapper":
        """An independent copy of this environment and all its wrappers."""
        return fork_env(self)

    @property
    def memory(self) -> Any:
        """The inner environment's memory bank."""
        return self.env.unwrapped.memory
