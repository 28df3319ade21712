"""A text space for JSON observations and free-text actions in any script."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

# What ``sample`` draws from: printable ASCII, JSON punctuation and a few non-ASCII letters,
# enough to exercise an agent's parser; ``contains`` accepts any character.
_SAMPLE_CHARSET = "".join(chr(c) for c in range(32, 127)) + "éüßçñ€中日한😀\n\t"
MAX_SAMPLE_LENGTH = 256


class UnicodeText(spaces.Text):
    """Any Python string of at most ``max_length`` characters, in any script.

    Gymnasium's ``Text`` only contains strings over a fixed charset (alphanumeric by
    default); dialogue and LLM output contain any Unicode character, so ``contains``
    here checks only the type and the length. ``sample`` draws strings of up to
    ``MAX_SAMPLE_LENGTH`` characters (not ``max_length``: a million-character sample
    would be useless and slow). Subclassing ``Text`` keeps Gymnasium's vector-env
    batching (a tuple of strings) working.
    """

    def __init__(self, max_length: int, seed: int | np.random.Generator | None = None):
        super().__init__(max_length=max_length, min_length=0, charset=_SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        length = int(self.np_random.integers(0, min(self.max_length, MAX_SAMPLE_LENGTH) + 1))
        chars = self.np_random.choice(len(_SAMPLE_CHARSET), size=length)
        return "".join(_SAMPLE_CHARSET[i] for i in chars)

    def __repr__(self) -> str:
        return f"UnicodeText(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, UnicodeText) and other.max_length == self.max_length
