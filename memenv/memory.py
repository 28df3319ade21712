"""The memory bank: a persistent (immutable) map of memory entries with an audit trail.

Every edit returns a *new* bank that shares almost all of its structure with the old
one (hash array mapped tries from the ``immutables`` package), so copying a bank — and
therefore forking an environment — costs the same at 10 or 10,000 memories.

Entries have short stable ids (``m0``, ``m1``, ...) that are never reused, even after a
DELETE, so an id in an agent's output always means one entry. Every change is recorded
as an :class:`OpRecord` (op, id, text before, text after, session, turn).
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import tempfile
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator

import immutables

from memenv.parsing import replace_lone_surrogates

FORMAT_VERSION = 1
# Ids and next_id in a loaded bank stay below this (adding a memory every microsecond
# takes 30,000 years to reach it); it keeps int() of an id cheap and within Python's
# limit on digits.
MAX_ID = 10**18
_MAX_ID_TEXT = "10**18"  # MAX_ID as messages write it


@dataclass(frozen=True, slots=True)
class MemoryEntry:
    """One memory: its text, who it is about, and when it was last written."""

    id: str
    text: str
    speaker: str | None
    session: int
    date: str
    created_turn: int
    updated_turn: int

    def record(self) -> dict:
        """The entry as it appears in observations."""
        return {"id": self.id, "text": self.text, "speaker": self.speaker, "session": self.session, "date": self.date}


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One applied change: ``before`` is None for ADD, ``after`` is None for DELETE."""

    op: str
    id: str
    before: str | None
    after: str | None
    session: int
    turn: int


def count_tokens(text: str) -> int:
    """Whitespace tokens, the unit of the compression penalty."""
    return len(text.split())


class MemoryBank:
    """An immutable memory bank; ``add``, ``update`` and ``delete`` return new banks.

    Supports ``len(bank)``, iteration over :class:`MemoryEntry` in id order,
    ``bank["m3"]``, ``"m3" in bank``, :attr:`history`, :meth:`save` and :meth:`load`.
    """

    __slots__ = ("_entries", "_by_text", "_history", "_next_id", "_tokens")

    def __init__(self) -> None:
        self._entries: immutables.Map = immutables.Map()  # id -> MemoryEntry
        self._by_text: immutables.Map = immutables.Map()  # text -> tuple of ids
        # position -> OpRecord; a map rather than a linked list keeps pickling and
        # deepcopy shallow at any history length
        self._history: immutables.Map = immutables.Map()
        self._next_id = 0
        self._tokens = 0

    # -- reading ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._entries

    def __getitem__(self, memory_id: str) -> MemoryEntry:
        try:
            return self._entries[memory_id]
        except KeyError:
            raise KeyError(f"no memory with id {memory_id!r}") from None

    def get(self, memory_id: str) -> MemoryEntry | None:
        return self._entries.get(memory_id)

    def __iter__(self) -> Iterator[MemoryEntry]:
        return iter(sorted(self._entries.values(), key=_id_order))

    def __repr__(self) -> str:
        return f"MemoryBank({len(self)} entries, {self._tokens} tokens, {len(self._history)} ops)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemoryBank):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @property
    def tokens(self) -> int:
        """Total whitespace tokens over all entry texts."""
        return self._tokens

    @property
    def next_id(self) -> str:
        """The id the next ADD will receive."""
        return f"m{self._next_id}"

    def ids_with_text(self, text: str) -> tuple[str, ...]:
        """Ids of the live entries whose text is exactly ``text`` (oldest first)."""
        return self._by_text.get(text, ())

    @property
    def history(self) -> list[OpRecord]:
        """Every change ever applied, oldest first."""
        return [self._history[i] for i in range(len(self._history))]

    def texts(self) -> list[str]:
        return [e.text for e in self]

    # -- writing (each returns a new bank) -------------------------------------------
    def _evolve(self, entries, by_text, record: OpRecord, tokens: int, next_id: int) -> "MemoryBank":
        new = MemoryBank.__new__(MemoryBank)
        new._entries = entries
        new._by_text = by_text
        new._history = self._history.set(len(self._history), record)
        new._next_id = next_id
        new._tokens = tokens
        return new

    def add(
        self, text: str, *, speaker: str | None = None, session: int = 0, date: str = "", turn: int = 0
    ) -> tuple["MemoryBank", str]:
        """A new bank with one more entry, and the new entry's id (lone surrogates in ``text``
        and ``speaker`` replaced, as the environment's parsers do, so the bank always saves)."""
        text, speaker = _clean(text), _clean(speaker)
        memory_id = f"m{self._next_id}"
        entry = MemoryEntry(memory_id, text, speaker, session, date, turn, turn)
        record = OpRecord("ADD", memory_id, None, text, session, turn)
        bank = self._evolve(
            self._entries.set(memory_id, entry),
            _index_text(self._by_text, text, memory_id),
            record,
            self._tokens + count_tokens(text),
            self._next_id + 1,
        )
        return bank, memory_id

    def update(
        self, memory_id: str, text: str, *, session: int = 0, date: str = "", turn: int = 0, speaker: str | None = None
    ) -> "MemoryBank":
        """A new bank where entry ``memory_id`` holds ``text`` (KeyError if absent; lone
        surrogates replaced as in :meth:`add`)."""
        text, speaker = _clean(text), _clean(speaker)
        old = self[memory_id]
        entry = MemoryEntry(memory_id, text, speaker or old.speaker, session, date, old.created_turn, turn)
        by_text = _index_text(_unindex_text(self._by_text, old.text, memory_id), text, memory_id)
        record = OpRecord("UPDATE", memory_id, old.text, text, session, turn)
        tokens = self._tokens - count_tokens(old.text) + count_tokens(text)
        return self._evolve(self._entries.set(memory_id, entry), by_text, record, tokens, self._next_id)

    def delete(self, memory_id: str, *, session: int = 0, turn: int = 0) -> "MemoryBank":
        """A new bank without entry ``memory_id`` (KeyError if absent)."""
        old = self[memory_id]
        record = OpRecord("DELETE", memory_id, old.text, None, session, turn)
        return self._evolve(
            self._entries.delete(memory_id),
            _unindex_text(self._by_text, old.text, memory_id),
            record,
            self._tokens - count_tokens(old.text),
            self._next_id,
        )

    # -- persistence -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything the bank holds, as JSON-ready data."""
        return {
            "format_version": FORMAT_VERSION,
            "next_id": self._next_id,
            "entries": [asdict(e) for e in self],
            "history": [asdict(r) for r in self.history],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "MemoryBank":
        """Rebuild a bank written by :meth:`to_dict`.

        Everything is checked before anything is built: keys and types of the bank, of
        every entry and every history record; ids of the form ``m<k>``, none twice among
        the entries, all below ``next_id`` (otherwise the next ADD would reuse one).
        Raises ``ValueError`` with a one-line message naming the first problem. Lone
        surrogates in texts are replaced (see :func:`memenv.parsing.replace_lone_surrogates`)
        so the bank can always be saved again.
        """
        entries, history, next_id = _checked_bank(data)
        bank = cls()
        by_text: immutables.Map = immutables.Map()
        with bank._entries.mutate() as m:
            for e in entries:
                m[e.id] = e
            bank._entries = m.finish()
        for e in entries:
            by_text = _index_text(by_text, e.text, e.id)
        bank._by_text = by_text
        bank._history = immutables.Map(enumerate(history))
        bank._next_id = next_id
        bank._tokens = sum(count_tokens(e.text) for e in entries)
        return bank

    def save(self, path: str | os.PathLike) -> None:
        """Write the bank to a JSON file atomically (a crash never leaves half a file)."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".memory-", suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MemoryBank":
        """Read a bank written by :meth:`save`.

        A file that is not a valid bank raises ``ValueError`` with a one-line message
        naming the file and the problem (see :meth:`from_dict`); a missing file raises
        ``FileNotFoundError``.
        """
        from memenv.data import read_json_file

        where = os.fspath(path)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"no memory bank file {where!r}")
        data = read_json_file(where, error=ValueError)
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


# -- checking loaded data --------------------------------------------------------------
_TOP_KEYS = ("format_version", "next_id", "entries", "history")
_ENTRY_KEYS = tuple(f.name for f in fields(MemoryEntry))
_RECORD_KEYS = tuple(f.name for f in fields(OpRecord))
_ID = re.compile(r"m(0|[1-9][0-9]*)")  # the ids add() writes, with no leading zeros
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def _show(value: Any) -> str:
    """A short one-line repr of a value from a file, whatever its size or depth."""
    return f"{type(value).__name__} {_SHORT.repr(value)}"


def _checked_keys(value: Any, keys: tuple[str, ...], where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, got {_show(value)}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"{where} lacks the key {missing[0]!r}")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise ValueError(f"{where} has the unknown key {_SHORT.repr(unknown[0])}; expected {list(keys)}")
    return value


def _checked_count(value: Any, where: str) -> int:
    # JSON true/false must not pass for a number (bool is a subclass of int)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_ID:
        raise ValueError(f"{where} must be a non-negative integer below {_MAX_ID_TEXT}, got {_show(value)}")
    return value


def _clean(value: Any) -> Any:
    """A text with lone surrogates replaced (:func:`memenv.parsing.replace_lone_surrogates`); other values as given."""
    return replace_lone_surrogates(value) if isinstance(value, str) else value


def _checked_text(value: Any, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        expected = "a string or null" if optional else "a string"
        raise ValueError(f"{where} must be {expected}, got {_show(value)}")
    return replace_lone_surrogates(value)


def _checked_id(value: Any, where: str, next_id: int) -> str:
    match = _ID.fullmatch(value) if isinstance(value, str) and len(value) <= 19 else None
    if match is None:
        raise ValueError(f"{where} must be an id like 'm3', got {_show(value)}")
    if int(match.group(1)) >= next_id:
        raise ValueError(f"{where} is {value!r} but next_id is {next_id}; it must exceed every id, or ADD reuses one")
    return value


def _checked_bank(data: Any) -> tuple[list[MemoryEntry], list[OpRecord], int]:
    """Entries, history and next_id of bank data; ValueError naming the first problem."""
    if not isinstance(data, dict) or "format_version" not in data:
        raise ValueError(f"not a memory bank (no format_version): {_show(data)}")
    version = data["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        raise ValueError(f"format_version is {_show(version)}; this version reads {FORMAT_VERSION}")
    _checked_keys(data, _TOP_KEYS, "the bank")
    next_id = _checked_count(data["next_id"], "next_id")
    for key in ("entries", "history"):
        if not isinstance(data[key], list):
            raise ValueError(f"{key} must be a list, got {_show(data[key])}")
    entries, seen = [], set()
    for i, raw in enumerate(data["entries"]):
        where = f"entries[{i}]"
        _checked_keys(raw, _ENTRY_KEYS, where)
        memory_id = _checked_id(raw["id"], f"{where}.id", next_id)
        if memory_id in seen:
            raise ValueError(f"{where}.id {memory_id!r} appears twice")
        seen.add(memory_id)
        entries.append(MemoryEntry(
            id=memory_id,
            text=_checked_text(raw["text"], f"{where}.text"),
            speaker=_checked_text(raw["speaker"], f"{where}.speaker", optional=True),
            session=_checked_count(raw["session"], f"{where}.session"),
            date=_checked_text(raw["date"], f"{where}.date"),
            created_turn=_checked_count(raw["created_turn"], f"{where}.created_turn"),
            updated_turn=_checked_count(raw["updated_turn"], f"{where}.updated_turn"),
        ))
    history = []
    for i, raw in enumerate(data["history"]):
        where = f"history[{i}]"
        _checked_keys(raw, _RECORD_KEYS, where)
        op = raw["op"]
        if op not in ("ADD", "UPDATE", "DELETE") or not isinstance(op, str):
            raise ValueError(f"{where}.op must be 'ADD', 'UPDATE' or 'DELETE', got {_show(op)}")
        # ADD has no text before, DELETE none after; every other text is a string
        before = None if op == "ADD" and raw["before"] is None else _checked_text(raw["before"], f"{where}.before")
        after = None if op == "DELETE" and raw["after"] is None else _checked_text(raw["after"], f"{where}.after")
        if op == "ADD" and before is not None or op == "DELETE" and after is not None:
            raise ValueError(f"{where}: {op} must have {'before' if op == 'ADD' else 'after'} null")
        history.append(OpRecord(
            op=op,
            id=_checked_id(raw["id"], f"{where}.id", next_id),
            before=before,
            after=after,
            session=_checked_count(raw["session"], f"{where}.session"),
            turn=_checked_count(raw["turn"], f"{where}.turn"),
        ))
    return entries, history, next_id


def _id_order(entry: MemoryEntry) -> tuple[int, str]:
    digits = entry.id[1:]
    return (int(digits), entry.id) if digits.isdigit() else (1 << 62, entry.id)


def _index_text(by_text: immutables.Map, text: str, memory_id: str) -> immutables.Map:
    return by_text.set(text, by_text.get(text, ()) + (memory_id,))


def _unindex_text(by_text: immutables.Map, text: str, memory_id: str) -> immutables.Map:
    ids = tuple(i for i in by_text.get(text, ()) if i != memory_id)
    return by_text.set(text, ids) if ids else by_text.delete(text)
