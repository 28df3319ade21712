"""A text space for JSON observations and free-text actions in any script."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

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


# --- shared memory for AsyncVectorEnv --------------------------------------------------
# Gymnasium's Text handlers decode the shared buffer once, when the vector env is built,
# and return that stale tuple after every step (Gymnasium issue #1164); they also cannot
# encode characters outside the charset. These handlers store UTF-8 bytes with a length
# prefix and return a live view that decodes at access and becomes a plain tuple when
# AsyncVectorEnv deep-copies its observations (its default, ``copy=True``).
_PREFIX = 8  # bytes of the length prefix of each slot


def _slot_bytes(space: UnicodeText) -> int:
    return _PREFIX + 4 * space.max_length  # UTF-8 needs at most 4 bytes per character


class SharedTextView(Sequence[str]):
    """The current strings in an AsyncVectorEnv's shared observation buffer."""

    def __init__(self, space: UnicodeText, shared_memory: Any, n: int) -> None:
        self._space, self._memory, self._n = space, shared_memory, n

    def _bytes(self) -> np.ndarray:
        return np.frombuffer(self._memory.get_obj(), dtype=np.uint8)

    def _decode(self, index: int) -> str:
        size = _slot_bytes(self._space)
        data = self._bytes()[index * size: (index + 1) * size]
        length = int.from_bytes(data[:_PREFIX].tobytes(), "little")
        return data[_PREFIX: _PREFIX + length].tobytes().decode("utf-8", "surrogatepass")

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self._decode(i) for i in range(self._n)[index])
        if not -self._n <= index < self._n:
            raise IndexError(index)
        return self._decode(index % self._n)

    def __eq__(self, other: Any) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list, SharedTextView)) else other)

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"SharedTextView({tuple(self)!r})"


@create_shared_memory.register(UnicodeText)
def _create_unicode_text_shared_memory(space: UnicodeText, n: int = 1, ctx: Any = multiprocessing) -> Any:
    return ctx.Array("B", n * _slot_bytes(space))


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_text_from_shared_memory(space: UnicodeText, shared_memory: Any, n: int = 1) -> SharedTextView:
    return SharedTextView(space, shared_memory, n)


@write_to_shared_memory.register(UnicodeText)
def _write_unicode_text_to_shared_memory(space: UnicodeText, index: int, value: str, shared_memory: Any) -> None:
    data = value.encode("utf-8", "surrogatepass")
    size = _slot_bytes(space)
    if len(data) > size - _PREFIX:
        raise ValueError(f"observation of {len(value)} characters does not fit the space (max_length {space.max_length})")
    buffer = np.frombuffer(shared_memory.get_obj(), dtype=np.uint8)
    start = index * size
    buffer[start: start + _PREFIX] = np.frombuffer(len(data).to_bytes(_PREFIX, "little"), dtype=np.uint8)
    buffer[start + _PREFIX: start + _PREFIX + len(data)] = np.frombuffer(data, dtype=np.uint8)
