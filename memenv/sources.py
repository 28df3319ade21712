"""Data sources: where an environment's conversations come from.

A source hands the environment one :class:`~memenv.types.Conversation` per episode.
``MemorySessionEnv(source=...)`` takes a source name registered here (``"synthetic"``,
``"locomo"``, ``"longmemeval"``) plus that source's own options, or a ready
:class:`ConversationSource` instance. Sources load and validate all their data when they
are built, so a malformed file fails at ``gym.make`` time, never midway through an
episode.
"""

from __future__ import annotations

import abc
import importlib
import inspect
from typing import Any

import numpy as np

from memenv.types import Conversation


class ConversationSource(abc.ABC):
    """Hands out conversations by key, or by a draw from the environment's RNG."""

    @abc.abstractmethod
    def keys(self) -> list[Any] | None:
        """The keys of all conversations, or None when the source is unbounded."""

    @abc.abstractmethod
    def get(self, key: Any) -> Conversation:
        """The conversation with this key; ``ValueError`` naming the key when unknown."""

    def sample(self, rng: np.random.Generator) -> Conversation:
        """A conversation drawn with the environment's RNG (default: uniform over keys)."""
        keys = self.keys()
        if not keys:
            raise ValueError(f"{type(self).__name__} holds no conversations")
        return self.get(keys[int(rng.integers(len(keys)))])


# name -> "module:factory"; factories take the source's keyword options.
SOURCES: dict[str, str] = {
    "synthetic": "memenv.synthetic:SyntheticSource",
    "locomo": "memenv.data.locomo:LoCoMoSource",
    "longmemeval": "memenv.data.longmemeval:LongMemEvalSource",
}


def make_source(source: str | ConversationSource, **options: Any) -> ConversationSource:
    """Build a source from its registered name and options (or return an instance as is)."""
    if isinstance(source, ConversationSource):
        if options:
            raise TypeError(
                f"options {sorted(options)} were given with a ready source instance; "
                "pass them to the source's constructor instead"
            )
        return source
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {sorted(SOURCES)}")
    module_name, _, attr = SOURCES[source].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"the {source!r} source does not take {unknown}; its options are {accepted}")
    return factory(**options)
