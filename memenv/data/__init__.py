"""Loaders for public benchmark data: LoCoMo and LongMemEval.

Each loader reads a JSON file in its benchmark's original format and returns
:class:`~memenv.types.Conversation` values; each has a matching
:class:`~memenv.sources.ConversationSource` for the environment
(``gym.make("MemorySession-v0", source="locomo", data_path=...)``). Files are read and
validated whole when loaded, so a malformed file fails with a :class:`DataFormatError`
naming the file, the record and the key at fault, never midway through an episode.

No benchmark data ships with the project (LoCoMo's licence forbids redistribution);
users download the files themselves.
"""

from __future__ import annotations

import json
import os
from typing import Any


class DataFormatError(ValueError):
    """A data file does not follow its benchmark's format (the message says where)."""


def read_json_file(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a missing file or invalid JSON raises an error naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: invalid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err})") from None


# The loaders import the two names above from this package, so they are defined first.
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
