"""Loaders for public benchmark data: LoCoMo and LongMemEval.

Each loader reads a JSON file in its benchmark's original format and returns
:class:`~memenv.types.Conversation` values; each has a matching
:class:`~memenv.sources.ConversationSource` for the environment
(``gym.make("MemorySession-v0", source="locomo", data_path=...)``). Files are read and
validated whole when loaded, so a malformed file fails with a :class:`DataFormatError`
naming the file, the record and the key at fault, never midway through an episode.

Texts are checked at this boundary: a lone surrogate (JSON's ``"\\ud800"`` escape makes
one; UTF-8 cannot encode it, so a tokenizer or ``MemoryBank.save`` would fail on it
later) is replaced by U+FFFD in every string a loader keeps
(:func:`memenv.parsing.replace_lone_surrogates`).

No benchmark data ships with the project (LoCoMo's licence forbids redistribution);
users download the files themselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from memenv.parsing import replace_lone_surrogates
from memenv.sources import ConversationSource
from memenv.types import Conversation


def first_sessions(conversation: Conversation, num_sessions: int | None) -> Conversation:
    """``conversation`` cut to its first ``num_sessions`` sessions, keeping the questions whose
    evidence lies wholly within them (a session curriculum over real dialogue: the first 4,
    then 8, then 16 sessions). None, or a number at least the conversation's length, returns
    it unchanged."""
    if num_sessions is None or num_sessions >= conversation.num_sessions:
        return conversation
    if isinstance(num_sessions, bool) or not isinstance(num_sessions, int) or num_sessions < 1:
        raise ValueError(f"num_sessions must be None or an int >= 1, got {num_sessions!r}")
    questions = tuple(q for q in conversation.questions if q.evidence and max(q.evidence) < num_sessions)
    return dataclasses.replace(conversation, sessions=conversation.sessions[:num_sessions], questions=questions)


class DataFormatError(ValueError):
    """A data file does not follow its benchmark's format (the message says where)."""


def read_json_file(path: str | os.PathLike, error: type[ValueError] = DataFormatError) -> Any:
    """Parse a JSON file; a missing file raises ``FileNotFoundError``, anything else that is not
    valid UTF-8 JSON (bad syntax, nesting too deep for Python's parser, an integer over
    Python's digit limit) one line of ``error`` naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply for Python's parser") from None
    except ValueError as err:  # e.g. an integer over Python's limit on digits
        raise error(f"{path}: not valid JSON ({err})") from None


def fail(where: str, message: str) -> DataFormatError:
    """A DataFormatError whose message starts with where it happened (file, record, key)."""
    return DataFormatError(f"{where}: {message}")


def get_key(mapping: dict, key: str, kinds: type | tuple[type, ...], where: str) -> Any:
    """``mapping[key]`` checked against ``kinds``; a missing or mistyped key fails loudly.

    A string comes back with its lone surrogates replaced (see the module docstring).
    """
    if key not in mapping:
        raise fail(where, f"missing key {key!r}")
    value = mapping[key]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    # JSON true/false must not pass for a number (bool is a subclass of int).
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = "/".join(k.__name__ for k in kinds)
        raise fail(where, f"key {key!r} should be {expected}, got {type(value).__name__}")
    return replace_lone_surrogates(value) if isinstance(value, str) else value


class FileSource(ConversationSource):
    """A source over conversations loaded from one file, keyed by their ``conv_id``."""

    label = "conversation"

    def __init__(self, data_path: str, conversations: list[Conversation]) -> None:
        self.data_path = data_path
        self._conversations = {conv.conv_id: conv for conv in conversations}

    def keys(self) -> list[str]:
        """The ids of the loaded conversations."""
        return list(self._conversations)

    def get(self, key: str) -> Conversation:
        """The conversation with this id; ValueError listing the valid ids when unknown."""
        try:
            return self._conversations[key]
        except (KeyError, TypeError):
            raise ValueError(
                f"no {self.label} {key!r} loaded from {self.data_path}; valid ids: {self.keys()}"
            ) from None


# The loaders import the names above from this package, so they are defined first.
from memenv.data.locomo import (  # noqa: E402
    LOCOMO_KINDS,
    SPLITS,
    LoCoMoSource,
    load_locomo,
    question_counts,
)
from memenv.data.longmemeval import LongMemEvalSource, load_longmemeval  # noqa: E402

__all__ = [
    "DataFormatError",
    "LOCOMO_KINDS",
    "LoCoMoSource",
    "LongMemEvalSource",
    "SPLITS",
    "load_locomo",
    "load_longmemeval",
    "question_counts",
    "read_json_file",
]
