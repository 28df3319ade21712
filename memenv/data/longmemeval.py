"""LongMemEval loader (Wu et al., "LongMemEval: Benchmarking Chat Assistants on
Long-Term Interactive Memory", ICLR 2025).

The file is a JSON list of items, one question each::

    {"question_id": "e47becba", "question_type": "single-session-user",
     "question": "...", "answer": "...", "question_date": "2023/05/30 (Tue) 23:40",
     "haystack_session_ids": ["sharegpt_yywfdnx_0", "answer_280352e9", ...],
     "haystack_dates": ["2023/05/20 (Sat) 02:21", ...],
     "haystack_sessions": [[{"role": "user", "content": "...", "has_answer": true},
                            {"role": "assistant", "content": "..."}], ...],
     "answer_session_ids": ["answer_280352e9"]}

Each item becomes one :class:`~memenv.types.Conversation` (``conv_id`` = question_id)
between ``"user"`` and ``"assistant"``, with its sessions sorted by date (stable for
equal dates; sessions without turns are skipped) and one question whose ``kind`` is the
item's ``question_type`` and whose evidence is the sessions listed in
``answer_session_ids`` or holding a turn marked ``has_answer``. Abstention items
(question_id ending in ``_abs``) carry ``("abstention", "true")`` in the question's
``meta``.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Any, Sequence

from memenv.data import DataFormatError, FileSource, fail, get_key, read_json_file
from memenv.parsing import replace_lone_surrogates
from memenv.types import Conversation, Question, Session, Turn

SOURCE_NAME = "longmemeval"
DEFAULT_SPEAKERS = ("user", "assistant")
ABSTENTION_SUFFIX = "_abs"
DOWNLOAD_HINT = (
    "download a LongMemEval file (longmemeval_s.json, longmemeval_m.json or "
    "longmemeval_oracle.json) from the LongMemEval release "
    "(https://github.com/xiaowu0162/LongMemEval) and pass its path as data_path"
)

# "2023/05/20 (Sat) 02:21" as LongMemEval writes dates; the weekday is redundant. Matched
# against the stripped text, with each blank run inside an optional group: adjacent \s*
# (as in r"\s*(?:\(\w+\))?\s*") backtrack polynomially over a long run of blanks.
_LME_DATE = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})(?:\s*\(\w+\))?(?:\s*(\d{1,2}):(\d{2}))?")


def parse_date(text: str) -> datetime:
    """A LongMemEval date (``"2023/05/20 (Sat) 02:21"``) or an ISO date as a datetime.

    Raises ``ValueError`` naming the text when it is neither.
    """
    match = _LME_DATE.fullmatch(text.strip())
    if match:
        year, month, day, hour, minute = match.groups()
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0))
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"unreadable date {text!r}; expected e.g. '2023/05/20 (Sat) 02:21'") from None


def load_longmemeval(
    path: str | os.PathLike, *, question_ids: Sequence[str] | None = None
) -> list[Conversation]:
    """Load LongMemEval items from ``path`` as conversations of one question each.

    ``question_ids`` selects items (in that order; default: all, in file order). Every
    item is validated, selected or not. Raises :class:`DataFormatError` for a malformed
    file and ``ValueError`` for selected ids the file lacks.
    """
    if isinstance(question_ids, str):
        raise TypeError(f"question_ids must be a list of ids, got the string {question_ids!r}")
    where = os.fspath(path)
    raw = read_json_file(path)
    if not isinstance(raw, list):
        raise DataFormatError(f"{where}: expected a JSON list of items, got {type(raw).__name__}")
    loaded: dict[str, Conversation] = {}
    for position, item in enumerate(raw):
        conversation = _parse_item(item, position, where)
        if conversation.conv_id in loaded:
            raise DataFormatError(f"{where}: question_id {conversation.conv_id!r} appears twice")
        loaded[conversation.conv_id] = conversation
    if question_ids is None:
        return list(loaded.values())
    missing = [qid for qid in question_ids if qid not in loaded]
    if missing:
        raise ValueError(f"{where} lacks the question_ids {missing}; it holds {sorted(loaded)}")
    return [loaded[qid] for qid in question_ids]


class LongMemEvalSource(FileSource):
    """LongMemEval items for ``MemorySession-v0``, keyed by question_id.

    ``gym.make("MemorySession-v0", source="longmemeval", data_path="longmemeval_s.json")``.
    """

    label = "LongMemEval item"

    def __init__(
        self, data_path: str | os.PathLike | None = None, question_ids: Sequence[str] | None = None
    ) -> None:
        if data_path is None:
            raise ValueError(f"the LongMemEval source needs data_path: {DOWNLOAD_HINT}")
        super().__init__(os.fspath(data_path), load_longmemeval(data_path, question_ids=question_ids))


# --- parsing ----------------------------------------------------------------------------




def _get_str_list(mapping: dict, key: str, where: str) -> list[str]:
    values = get_key(mapping, key, list, where)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise fail(where, f"{key}[{index}] should be str, got {type(value).__name__}")
    return [replace_lone_surrogates(value) for value in values]


def _parse_item(item: Any, position: int, path: str) -> Conversation:
    if not isinstance(item, dict):
        raise fail(path, f"item {position} should be a JSON object, got {type(item).__name__}")
    qid = get_key(item, "question_id", str, f"{path}: item {position}")
    where = f"{path}: item {qid!r}"
    kind = get_key(item, "question_type", str, where)
    question_text = get_key(item, "question", str, where)
    answer = get_key(item, "answer", (str, int, float), where)
    question_date = get_key(item, "question_date", str, where)
    _checked_date(question_date, "question_date", where)
    raw_sessions = get_key(item, "haystack_sessions", list, where)
    dates = _get_str_list(item, "haystack_dates", where)
    session_ids = _get_str_list(item, "haystack_session_ids", where)
    answer_ids = set(_get_str_list(item, "answer_session_ids", where))
    if not len(raw_sessions) == len(dates) == len(session_ids):
        raise fail(
            where,
            f"haystack_sessions ({len(raw_sessions)}), haystack_dates ({len(dates)}) and "
            f"haystack_session_ids ({len(session_ids)}) differ in length",
        )

    parsed = []  # (date, original position, session id, date text, turns, has_answer)
    for s_index, (raw_turns, date, sid) in enumerate(zip(raw_sessions, dates, session_ids)):
        s_where = f"{where}: haystack_sessions[{s_index}]"
        if not isinstance(raw_turns, list):
            raise fail(s_where, f"should be a list of turns, got {type(raw_turns).__name__}")
        when = _checked_date(date, f"haystack_dates[{s_index}]", where)
        turns, marked = [], False
        for t_index, turn in enumerate(raw_turns):
            t_where = f"{s_where}[{t_index}]"
            if not isinstance(turn, dict):
                raise fail(t_where, f"a turn should be a JSON object, got {type(turn).__name__}")
            role = get_key(turn, "role", str, t_where)
            content = get_key(turn, "content", str, t_where)
            if "has_answer" in turn:
                marked = get_key(turn, "has_answer", bool, t_where) or marked
            turns.append(Turn(speaker=role, text=content, dia_id=f"{sid}:{t_index}"))
        if turns:
            parsed.append((when, s_index, sid, date, tuple(turns), marked))
    if not parsed:
        raise fail(where, "haystack_sessions holds no turn")
    parsed.sort(key=lambda entry: (entry[0], entry[1]))

    sessions = tuple(
        Session(index=index, date=date, turns=turns)
        for index, (_, _, _, date, turns, _) in enumerate(parsed)
    )
    evidence = tuple(
        index for index, (_, _, sid, _, _, marked) in enumerate(parsed) if sid in answer_ids or marked
    )
    meta = [("question_date", question_date)]
    if qid.endswith(ABSTENTION_SUFFIX):
        meta.append(("abstention", "true"))
    if not evidence:
        meta.append(("evidence", "unknown"))
    question = Question(
        qid=qid, question=question_text, answer=str(answer), kind=kind, evidence=evidence, meta=tuple(meta)
    )
    return Conversation(
        conv_id=qid,
        speakers=_speakers(sessions, where),
        sessions=sessions,
        questions=(question,),
        source=SOURCE_NAME,
        extra={
            "question_date": question_date,
            "session_ids": tuple(entry[2] for entry in parsed),
            "path": path,
        },
    )


def _checked_date(text: str, key: str, where: str) -> datetime:
    try:
        return parse_date(text)
    except ValueError as err:
        raise fail(where, f"key {key!r}: {err}") from None


def _speakers(sessions: Sequence[Session], where: str) -> tuple[str, str]:
    """("user", "assistant"), or the two roles the item uses when they differ."""
    roles: list[str] = []
    for session in sessions:
        for turn in session.turns:
            if turn.speaker not in roles:
                roles.append(turn.speaker)
    if set(roles) <= set(DEFAULT_SPEAKERS):
        return DEFAULT_SPEAKERS
    if len(roles) > 2:
        raise fail(where, f"turns use more than two roles: {roles}")
    if len(roles) == 1:
        roles.append("assistant" if roles[0] != "assistant" else "user")
    return roles[0], roles[1]
