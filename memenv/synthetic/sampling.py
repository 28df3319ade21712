"""The single random draws world generation makes, always from the world's own RNG."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One element drawn uniformly (Python objects, not numpy scalars)."""
    # rng.random() is several times faster than rng.integers() for single draws.
    return options[int(rng.random() * len(options))]


def randint(rng: np.random.Generator, low: int, high: int) -> int:
    """An int drawn uniformly from [low, high)."""
    return low + int(rng.random() * (high - low))
