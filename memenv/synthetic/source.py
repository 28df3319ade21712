"""The ``"synthetic"`` data source: worlds by seed, built once and cached."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from memenv.constants import MAX_SESSIONS
from memenv.sources import ConversationSource
from memenv.synthetic.world import check_difficulty, check_int, generate_world
from memenv.types import Conversation

WORLD_CACHE_SIZE = 256


@functools.lru_cache(maxsize=WORLD_CACHE_SIZE)
def _cached_world(seed: int, num_sessions: int, difficulty: str) -> Conversation:
    return generate_world(seed, num_sessions, difficulty)


class SyntheticSource(ConversationSource):
    """Synthetic worlds by seed: a fixed list of seeds, or any seed (unbounded).

    ``num_sessions`` is an int from 1 to ``constants.MAX_SESSIONS``; ``difficulty`` is
    ``"default"`` or ``"hard"`` (history, corrections, third parties, distractor talk and a
    memory budget: :mod:`memenv.synthetic.hard`). ``get(seed)`` returns the same (cached)
    conversation object for the same seed.
    """

    def __init__(self, num_sessions: int = 8, world_seeds: Sequence[int] | None = None,
                 difficulty: str = "default") -> None:
        self.num_sessions = check_int("num_sessions", num_sessions, 1, MAX_SESSIONS)
        self.difficulty = check_difficulty(difficulty)
        if world_seeds is None:
            self.world_seeds: tuple[int, ...] | None = None
        else:
            if isinstance(world_seeds, (str, bytes)) or not isinstance(world_seeds, Sequence):
                raise TypeError(f"world_seeds must be a sequence of ints, got {world_seeds!r}")
            seeds = tuple(check_int("world seed", s, 0) for s in world_seeds)
            if not seeds:
                raise ValueError("world_seeds must not be empty (use None for any seed)")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"world_seeds has duplicates: {list(world_seeds)}")
            self.world_seeds = seeds

    def keys(self) -> list[int] | None:
        """The world seeds, or None when any seed may be drawn."""
        return None if self.world_seeds is None else list(self.world_seeds)

    def get(self, key: Any) -> Conversation:
        """The world of seed ``key``; ``ValueError`` when it is not one of ``world_seeds``."""
        try:
            if isinstance(key, bool):
                raise TypeError(key)
            seed = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"synthetic world key must be an int seed, got {key!r}") from None
        if isinstance(key, float) and key != seed:
            raise ValueError(f"synthetic world key must be an int seed, got {key!r}")
        if seed < 0:
            raise ValueError(f"synthetic world seed must be >= 0, got {key!r}")
        if self.world_seeds is not None and seed not in self.world_seeds:
            raise ValueError(f"seed {key!r} is not one of this source's world_seeds")
        return _cached_world(seed, self.num_sessions, self.difficulty)

    def sample(self, rng: np.random.Generator) -> Conversation:
        """A world drawn with the environment's RNG (any seed below 2**31 - 1 if unbounded)."""
        if self.world_seeds is None:
            return self.get(int(rng.integers(2**31 - 1)))
        return super().sample(rng)
