"""LoCoMo loader (Maharana et al., ACL 2024, "Evaluating Very Long-Term Conversational
Memory of LLM Agents"; data under CC BY-NC 4.0, never committed to this project).

The file is a JSON list of conversations::

    {"sample_id": "conv-43",
     "conversation": {"speaker_a": "Tim", "speaker_b": "John",
                      "session_1_date_time": "7:48 pm on 21 May, 2023",
                      "session_1": [{"speaker": "Tim", "dia_id": "D1:1", "text": "...",
                                     "blip_caption": "a photo of ..."}, ...], ...},
     "qa": [{"question": "...", "answer": "...", "evidence": ["D1:3"], "category": 4},
            {"question": "...", "adversarial_answer": "...", "evidence": [...],
             "category": 5}, ...],
     ...}

Question kinds follow LoCoMo's own numbering of ``category`` (see ``LOCOMO_KINDS``):
1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial. Some projects
label the categories differently; this project uses the numbering of LoCoMo's release
and evaluation code. Category 5 is excluded unless ``include_adversarial=True``.

The real file has quirks the loader absorbs:

- sessions are ordered by their number (``session_10`` after ``session_9``), and a
  session with no turns is skipped while the others keep their dates;
- a ``session_N_date_time`` key without turns is ignored;
- evidence ids are sometimes malformed (``"D:11:26"``, ``"D30:05"``,
  ``"D8:6; D9:17"``): the session number is recovered where possible, otherwise the item
  is dropped and counted in ``Conversation.extra["dropped_evidence"]``; a question with
  no recoverable evidence gets ``evidence=()`` and ``("evidence", "unknown")`` in its
  ``meta``, and is due at the end of the conversation;
- answers are sometimes numbers (stored as text);
- category 5 items carry ``adversarial_answer`` instead of ``answer``: their gold
  answer becomes ``ADVERSARIAL_GOLD`` (the information is not in the conversation, which
  is what LoCoMo's evaluation rewards) and the bait answer goes into ``meta``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any, Iterable, Sequence

from memenv.data import DataFormatError, FileSource, fail, first_sessions, get_key, read_json_file
from memenv.parsing import replace_lone_surrogates
from memenv.types import MULTI_HOP, SINGLE_HOP, TEMPORAL, Conversation, Question, Session, Turn

OPEN_DOMAIN = "open-domain"
ADVERSARIAL = "adversarial"
ADVERSARIAL_CATEGORY = 5
# LoCoMo's category numbers -> question kinds.
LOCOMO_KINDS: dict[int, str] = {
    1: MULTI_HOP,
    2: TEMPORAL,
    3: OPEN_DOMAIN,
    4: SINGLE_HOP,
    ADVERSARIAL_CATEGORY: ADVERSARIAL,
}
# LoCoMo's evaluation counts an adversarial answer correct when it says the information
# is missing ("not mentioned" / "no information available").
ADVERSARIAL_GOLD = "Not mentioned in the conversation"
PHOTO_TEMPLATE = "[shares a photo: {caption}]"
SOURCE_NAME = "locomo"

SPLITS: dict[str, dict[str, list[str]]] = {
    "memory-r2": {
        "train": ["conv-43", "conv-47"],
        "val": ["conv-44"],
        "test": ["conv-41", "conv-42", "conv-48", "conv-49", "conv-50", "conv-30", "conv-26"],
    },
    "memory-r1": {
        "train": ["conv-26"],
        "val": ["conv-30"],
        "test": ["conv-41", "conv-42", "conv-43", "conv-44", "conv-47", "conv-48", "conv-49", "conv-50"],
    },
}

DOWNLOAD_HINT = (
    "download locomo10.json from the LoCoMo release "
    "(https://github.com/snap-research/locomo, data/locomo10.json) and pass its path as "
    "data_path; on the project's development machines "
    "../shared/data/locomo/locomo_dev.json holds conv-43, conv-44 and conv-47"
)

_SESSION_KEY = re.compile(r"session_(\d+)")
_EVIDENCE_SEPARATORS = re.compile(r"[;,\s]+")
# "D3:5", and the malformed "D:11:26" / "D30:05": the session number follows the D.
_EVIDENCE_SESSION = re.compile(r"D\s*:?\s*(\d+)", re.IGNORECASE)


def parse_evidence(item: Any) -> tuple[list[int], int]:
    """Session numbers named by one raw evidence item, and how many parts were unreadable.

    ``"D3:5"`` gives ``([3], 0)``; ``"D8:6; D9:17"`` gives ``([8, 9], 0)``;
    ``"D:11:26"`` gives ``([11], 0)``; ``"see above"`` gives ``([], 1)``.
    """
    if not isinstance(item, str):
        return [], 1
    numbers, dropped = [], 0
    for part in _EVIDENCE_SEPARATORS.split(item.strip()):
        if not part:
            continue
        match = _EVIDENCE_SESSION.match(part)
        if match:
            numbers.append(int(match.group(1)))
        else:
            dropped += 1
    return numbers, dropped


def select_ids(
    split: str | None, part: str | None, conversations: Sequence[str] | None
) -> list[str] | None:
    """The sample_ids to load (None: all), from explicit ids or a split preset."""
    if conversations is not None and (split is not None or part is not None):
        raise ValueError("give either conversations or split/part, not both")
    if conversations is not None:
        if isinstance(conversations, str):
            raise TypeError(f"conversations must be a list of sample_ids, got the string {conversations!r}")
        return list(conversations)
    if split is None and part is None:
        return None
    if split is None or part is None:
        raise ValueError(f"split and part go together (got split={split!r}, part={part!r})")
    if split not in SPLITS:
        raise ValueError(f"unknown LoCoMo split {split!r}; choose one of {sorted(SPLITS)}")
    if part not in SPLITS[split]:
        raise ValueError(f"unknown part {part!r} of split {split!r}; choose one of {sorted(SPLITS[split])}")
    return list(SPLITS[split][part])


def load_locomo(
    path: str | os.PathLike,
    *,
    conversations: Sequence[str] | None = None,
    split: str | None = None,
    part: str | None = None,
    include_adversarial: bool = False,
) -> list[Conversation]:
    """Load LoCoMo conversations from ``path`` (e.g. ``locomo10.json``).

    Select with explicit ``conversations`` (sample_ids) or a preset ``split`` and
    ``part`` (``SPLITS``, e.g. ``split="memory-r2", part="train"``); the result follows
    the requested order, or the file's order when nothing is selected. Every conversation
    in the file is validated, selected or not. Raises :class:`DataFormatError` for a
    malformed file and ``ValueError`` for selected ids the file lacks.
    """
    wanted = select_ids(split, part, conversations)
    where = os.fspath(path)
    raw = read_json_file(path)
    if not isinstance(raw, list):
        raise DataFormatError(f"{where}: expected a JSON list of conversations, got {type(raw).__name__}")
    loaded: dict[str, Conversation] = {}
    for position, record in enumerate(raw):
        conversation = _parse_conversation(record, position, where, include_adversarial)
        if conversation.conv_id in loaded:
            raise DataFormatError(f"{where}: sample_id {conversation.conv_id!r} appears twice")
        loaded[conversation.conv_id] = conversation
    if wanted is None:
        return list(loaded.values())
    missing = [cid for cid in wanted if cid not in loaded]
    if missing:
        raise ValueError(f"{where} lacks the conversations {missing}; it holds {sorted(loaded)}")
    return [loaded[cid] for cid in wanted]


def question_counts(conversations: Iterable[Conversation]) -> dict[str, int]:
    """Number of questions per kind over ``conversations`` (LoCoMo kinds first, in
    category order; kinds with no question are left out)."""
    counts = Counter(q.kind for conv in conversations for q in conv.questions)
    order = list(LOCOMO_KINDS.values()) + sorted(set(counts) - set(LOCOMO_KINDS.values()))
    return {kind: counts[kind] for kind in order if counts[kind]}


# Read when no data_path is given, so registered ids work without arguments.
LOCOMO_PATH_VARIABLE = "MEMENV_LOCOMO_PATH"


class LoCoMoSource(FileSource):
    """LoCoMo conversations for ``MemorySession-v0``, keyed by sample_id.

    ``gym.make("MemorySession-v0", source="locomo", data_path="locomo10.json",
    split="memory-r2", part="train")``. The options are those of :func:`load_locomo`, and
    ``num_sessions``: keep only each conversation's first sessions and the questions whose
    evidence lies within them (:func:`memenv.data.first_sessions`; the trainers' session
    curriculum on LoCoMo).
    """

    label = "LoCoMo conversation"

    def __init__(
        self,
        data_path: str | os.PathLike | None = None,
        conversations: Sequence[str] | None = None,
        split: str | None = None,
        part: str | None = None,
        include_adversarial: bool = False,
        num_sessions: int | None = None,
    ) -> None:
        if num_sessions is not None and (isinstance(num_sessions, bool) or not isinstance(num_sessions, int)
                                         or num_sessions < 1):
            raise ValueError(f"num_sessions must be None or an int >= 1, got {num_sessions!r}")
        if data_path is None:
            data_path = os.environ.get(LOCOMO_PATH_VARIABLE) or None
        if data_path is None:
            raise ValueError(f"the LoCoMo source needs data_path (or ${LOCOMO_PATH_VARIABLE}): {DOWNLOAD_HINT}")
        loaded = load_locomo(data_path, conversations=conversations, split=split, part=part,
                             include_adversarial=include_adversarial)
        super().__init__(os.fspath(data_path), [first_sessions(conv, num_sessions) for conv in loaded])


# --- parsing ----------------------------------------------------------------------------




def _parse_conversation(record: Any, position: int, path: str, include_adversarial: bool) -> Conversation:
    if not isinstance(record, dict):
        raise fail(path, f"item {position} should be a JSON object, got {type(record).__name__}")
    sample_id = get_key(record, "sample_id", str, f"{path}: item {position}")
    where = f"{path}: conversation {sample_id!r}"
    body = get_key(record, "conversation", dict, where)
    speakers = (
        get_key(body, "speaker_a", str, f"{where}: conversation"),
        get_key(body, "speaker_b", str, f"{where}: conversation"),
    )
    sessions, numbers = _parse_sessions(body, where)
    index_of = {number: index for index, number in enumerate(numbers)}
    qa = get_key(record, "qa", list, where)
    questions, dropped = [], 0
    for q_index, item in enumerate(qa):
        question, q_dropped = _parse_question(item, q_index, sample_id, index_of, where)
        if question.kind == ADVERSARIAL and not include_adversarial:
            continue
        questions.append(question)
        dropped += q_dropped
    return Conversation(
        conv_id=sample_id,
        speakers=speakers,
        sessions=tuple(sessions),
        questions=tuple(questions),
        source=SOURCE_NAME,
        extra={"session_numbers": tuple(numbers), "dropped_evidence": dropped, "path": path},
    )


def _parse_sessions(body: dict, where: str) -> tuple[list[Session], list[int]]:
    numbered = sorted(
        (int(match.group(1)), key) for key in body if (match := _SESSION_KEY.fullmatch(key))
    )
    sessions, numbers = [], []
    for number, key in numbered:
        raw_turns = get_key(body, key, list, f"{where}: conversation")
        if not raw_turns:
            continue
        date = get_key(body, f"{key}_date_time", str, f"{where}: conversation")
        turns = tuple(
            _parse_turn(turn, number, t_index, f"{where}: {key}[{t_index}]")
            for t_index, turn in enumerate(raw_turns)
        )
        sessions.append(Session(index=len(sessions), date=date, turns=turns))
        numbers.append(number)
    if not sessions:
        raise fail(where, "no session_N key holds any turn")
    return sessions, numbers


def _parse_turn(turn: Any, number: int, t_index: int, where: str) -> Turn:
    if not isinstance(turn, dict):
        raise fail(where, f"a turn should be a JSON object, got {type(turn).__name__}")
    speaker = get_key(turn, "speaker", str, where)
    if "blip_caption" in turn:
        caption = get_key(turn, "blip_caption", str, where)
        # A turn that only shares a photo may have no text of its own.
        text = get_key(turn, "text", str, where) if "text" in turn else ""
        photo = PHOTO_TEMPLATE.format(caption=caption.strip())
        text = f"{text} {photo}" if text else photo
    else:
        text = get_key(turn, "text", str, where)
    dia_id = turn.get("dia_id", f"D{number}:{t_index + 1}")
    if not isinstance(dia_id, str):
        raise fail(where, f"key 'dia_id' should be str, got {type(dia_id).__name__}")
    return Turn(speaker=speaker, text=text, dia_id=replace_lone_surrogates(dia_id))


def _answer_text(item: dict, key: str, where: str) -> str | None:
    """The answer under ``key`` as text (numbers are common in LoCoMo), None if absent."""
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise fail(where, f"key {key!r} should be text or a number, got {type(value).__name__}")
    return replace_lone_surrogates(str(value))


def _parse_question(
    item: Any, q_index: int, sample_id: str, index_of: dict[int, int], conv_where: str
) -> tuple[Question, int]:
    where = f"{conv_where}: qa[{q_index}]"
    if not isinstance(item, dict):
        raise fail(where, f"should be a JSON object, got {type(item).__name__}")
    text = get_key(item, "question", str, where)
    category = get_key(item, "category", int, where)
    if category not in LOCOMO_KINDS:
        raise fail(where, f"key 'category' is {category}; LoCoMo categories are {sorted(LOCOMO_KINDS)}")
    kind = LOCOMO_KINDS[category]
    meta = [("category", str(category))]
    answer = _answer_text(item, "answer", where)
    if category == ADVERSARIAL_CATEGORY:
        bait = _answer_text(item, "adversarial_answer", where)
        if bait is not None:
            meta.append(("adversarial_answer", bait))
        answer = ADVERSARIAL_GOLD
    elif answer is None:
        raise fail(where, "missing key 'answer'")
    raw_evidence = get_key(item, "evidence", (list, str), where)
    if isinstance(raw_evidence, str):
        raw_evidence = [raw_evidence]
    indices, dropped = set(), 0
    for entry in raw_evidence:
        numbers, unreadable = parse_evidence(entry)
        dropped += unreadable
        for number in numbers:
            if number in index_of:
                indices.add(index_of[number])
            else:
                dropped += 1
    if not indices:
        meta.append(("evidence", "unknown"))
    question = Question(
        qid=f"{sample_id}/q{q_index}",
        question=text,
        answer=answer,
        kind=kind,
        evidence=tuple(sorted(indices)),
        meta=tuple(meta),
    )
    return question, dropped
