"""Baseline memory agents that need no model (the leaderboard's strategies), and the scripted answerer.

A *memory strategy* is an agent that acts on the ``extract`` and ``manage`` turns of
``MemorySession-v0``; the leaderboard pairs it with an *answerer*. The strategies here
need no model:

- :class:`FullContextAgent` (``full-context``): no memory management. It records every
  turn of every session (speaker, date, text) and hands the transcript to the answerer
  as its context (:meth:`FullContextAgent.context_records`); the memory bank stays empty.
- :class:`RagTurnsAgent` (``rag-turns``): RAG over raw turns, LoCoMo's retrieval
  baseline. Every turn is ADDed verbatim as the memory ``"[date] Speaker: text"`` (via
  the fact-index shorthand: extract emits the turns as facts, manage ADDs fact i), and
  the environment's BM25 retrieves the top-k per speaker for the answerer.
- :class:`AddOnlyAgent` (``add-only``): a mem0-style ADD-only memory with a rule-based
  extractor. Each first-person sentence of a speaker ("I ...", "my ...", "we ...") becomes
  a third-person fact with relative dates made absolute and the session date appended
  (:func:`first_person_facts`); it only ever ADDs, never UPDATEs or DELETEs.
- :class:`AddOnlyTurnsAgent` (``add-only-turns``): both of the last two, add-only's facts
  then every raw turn, all ADDed (the candidates of a manager that may keep either).

The agent registry knows the four by name (``make_agent("rag-turns")``).

A strategy may hold its own answer context instead of (or besides) the memory bank by
offering ``context_records(conversation_id) -> list[record]``; the leaderboard then puts
those records (truncated to a token budget by :func:`recent_records`) in place of the
answer observation's ``memories``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Sequence

from memenv.memory import count_tokens
from memenv.scripted import ScriptedReader, answer_action, load_observation, observation_role

EXTRACT, MANAGE, ANSWER = "extract", "manage", "answer"
NOOP_ACTION = json.dumps({"operations": [{"op": "NOOP"}]})
EMPTY_FACTS = json.dumps({"facts": []})
TRANSCRIPT_ID_PREFIX = "t"
# An add-only fact needs this many words, so "I see." or "Me too!" are not remembered.
MIN_FACT_WORDS = 4

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMBER_WORDS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10}


# ------------------------------------------------------------------------- observations --
def _turns(obs: dict) -> list[tuple[str, str]]:
    """(speaker, text) of each well-formed turn of an extract observation."""
    turns = obs.get("turns")
    out = []
    for turn in turns if isinstance(turns, list) else ():
        if isinstance(turn, dict) and isinstance(turn.get("text"), str):
            speaker = turn.get("speaker")
            out.append((speaker if isinstance(speaker, str) else "", turn["text"]))
    return out


def _fact_count(obs: dict) -> int:
    facts = obs.get("facts")
    return len(facts) if isinstance(facts, list) else 0


def add_all_facts_action(obs: dict) -> str:
    """The manage action that ADDs every extracted fact by index (NOOP when there are none)."""
    n = _fact_count(obs)
    if n == 0:
        return NOOP_ACTION
    return json.dumps({"operations": [{"op": "ADD", "fact": i} for i in range(n)]})


ScriptedAnswerer = ScriptedReader  # the leaderboard's ``scripted`` answerer


# --------------------------------------------------------------------------- full context --
def recent_records(records: Sequence[dict], max_tokens: int) -> list[dict]:
    """The most recent records (the end of the list) whose text and date fit in
    ``max_tokens`` whitespace tokens, in their original order."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a non-negative int, got {max_tokens!r}")
    kept: list[dict] = []
    used = 0
    for record in reversed(records):
        cost = count_tokens(str(record.get("text", ""))) + count_tokens(str(record.get("date", "")))
        if used + cost > max_tokens:
            break
        kept.append(record)
        used += cost
    kept.reverse()
    return kept


class FullContextAgent:
    """No memory management: keeps the whole transcript as the answerer's context.

    At each extract turn it records the session's turns as memory-like records
    ``{"id": "t<n>", "text": "Speaker: text", "speaker", "session", "date"}`` under the
    conversation named by ``info["conversation"]`` (reset at session 0); it extracts no
    facts and only NOOPs, so the environment's memory bank stays empty.
    """

    name = "full-context"

    def __init__(self) -> None:
        self._transcripts: dict[Any, list[dict]] = {}

    def context_records(self, conversation: Any) -> list[dict]:
        """Every turn recorded so far for ``conversation``, oldest first."""
        return list(self._transcripts.get(conversation, ()))

    def _record(self, obs: dict, conversation: Any) -> None:
        session = obs.get("session") if isinstance(obs.get("session"), int) else 0
        if session == 0 or conversation not in self._transcripts:
            self._transcripts[conversation] = []
        transcript = self._transcripts[conversation]
        date = obs.get("date") if isinstance(obs.get("date"), str) else ""
        for speaker, text in _turns(obs):
            transcript.append({"id": f"{TRANSCRIPT_ID_PREFIX}{len(transcript)}", "text": f"{speaker}: {text}",
                               "speaker": speaker or None, "session": session, "date": date})

    def act(self, obs: str, info: dict) -> str:
        """Record the turns (extract), NOOP (manage), scripted answer over the context (answer)."""
        data = load_observation(obs)
        role = observation_role(data, info)
        if role == EXTRACT:
            self._record(data, info.get("conversation") if isinstance(info, dict) else None)
            return EMPTY_FACTS
        if role == ANSWER:
            return answer_action(data)
        return NOOP_ACTION


# ------------------------------------------------------------------------------ rag-turns --
def turn_memory_text(speaker: str, text: str, date: str) -> str:
    """A raw turn as a RAG memory, LoCoMo style: ``"[date] Speaker: text"``."""
    return f"[{date}] {speaker}: {text}"


class AddEveryFactAgent:
    """Base of the heuristic strategies: its own facts (extract), ADD every fact (manage),
    scripted answer (answer). Subclasses give :meth:`facts`."""

    name = "add-every-fact"

    def facts(self, data: dict, date: str) -> list[dict]:
        """The extract turn's facts (``{"text", "speaker"}`` records) of one observation."""
        raise NotImplementedError

    def act(self, obs: str, info: dict) -> str:
        """The action for this observation's role (JSON text)."""
        data = load_observation(obs)
        role = observation_role(data, info)
        if role == EXTRACT:
            date = data.get("date") if isinstance(data.get("date"), str) else ""
            return json.dumps({"facts": self.facts(data, date)})
        if role == MANAGE:
            return add_all_facts_action(data)
        if role == ANSWER:
            return answer_action(data)
        return NOOP_ACTION


class RagTurnsAgent(AddEveryFactAgent):
    """RAG over raw turns: every turn is ADDed verbatim as ``"[date] Speaker: text"``."""

    name = "rag-turns"

    def facts(self, data: dict, date: str) -> list[dict]:
        """Every non-empty turn, verbatim."""
        return [{"text": turn_memory_text(speaker, text, date), "speaker": speaker}
                for speaker, text in _turns(data) if text.strip()]


# ------------------------------------------------------------------------------- add-only --
_DATE_IN_TEXT = re.compile(r"(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]+),?\s+(\d{4})")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PHOTO = re.compile(r"\[shares a photo:[^\]]*\]")
_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'll|i'd|me|my|mine|myself|we|we're|we've|we'll|our|ours|us)\b",
                           re.IGNORECASE)
_WEEKDAY_GROUP = "|".join(WEEKDAYS)
_NUMBER_GROUP = "|".join(list(NUMBER_WORDS) + [r"\d+"])
_RELATIVE = re.compile(
    r"\b(this morning|earlier today|today|tonight|the day before yesterday|yesterday"
    rf"|(?:{_NUMBER_GROUP}) days? ago|(?:{_NUMBER_GROUP}) weeks? ago|last week|last month|last year"
    rf"|(?:last|on|this past) (?:{_WEEKDAY_GROUP}))\b",
    re.IGNORECASE,
)
# First-person words -> third person ({s} is the speaker). Longest forms first.
_PRONOUNS: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(rf"\b{pattern}\b", re.IGNORECASE), replacement)
    for pattern, replacement in (
        (r"i['’]m", "{s} is"),
        (r"i['’]ve", "{s} has"),
        (r"i['’]ll", "{s} will"),
        (r"i['’]d", "{s} would"),
        (r"i am", "{s} is"),
        (r"i have", "{s} has"),
        (r"i was", "{s} was"),
        (r"myself", "{s}"),
        (r"mine", "{s}'s"),
        (r"my", "{s}'s"),
        (r"me", "{s}"),
        (r"i", "{s}"),
    )
)


def parse_session_date(text: str) -> dt.date | None:
    """The date in a session date string (``"8 May 2023"``, LoCoMo's ``"7:48 pm on 21
    May, 2023"``), or None when there is none."""
    match = _DATE_IN_TEXT.search(str(text))
    if match is None or match.group(2).lower() not in MONTHS:
        return None
    try:
        return dt.date(int(match.group(3)), MONTHS.index(match.group(2).lower()) + 1, int(match.group(1)))
    except ValueError:
        return None


def format_date(day: dt.date) -> str:
    """``"8 May 2023"``."""
    return f"{day.day} {MONTHS[day.month - 1].capitalize()} {day.year}"


def _days_back(phrase: str, session_date: dt.date) -> tuple[int, str] | None:
    """(days before the session, precision) for a relative phrase; None if not understood."""
    words = phrase.lower().split()
    if phrase.lower() in ("this morning", "earlier today", "today", "tonight"):
        return 0, "day"
    if words == ["yesterday"]:
        return 1, "day"
    if words == ["the", "day", "before", "yesterday"]:
        return 2, "day"
    if len(words) == 3 and words[2] == "ago":
        count = int(words[0]) if words[0].isdigit() else NUMBER_WORDS.get(words[0])
        if count is None:
            return None
        return (count, "day") if words[1].startswith("day") else (7 * count, "week")
    if words in (["last", "week"], ["last", "month"], ["last", "year"]):
        return {"week": 7, "month": 30, "year": 365}[words[1]], words[1]
    if words[-1] in WEEKDAYS:
        # the most recent such weekday strictly before the session date
        return (session_date.weekday() - WEEKDAYS.index(words[-1]) - 1) % 7 + 1, "day"
    return None


def resolve_relative_dates(sentence: str, session_date: dt.date | None) -> str:
    """``sentence`` with relative dates made absolute: "yesterday" -> "on 7 May 2023",
    "last week" -> "in the week before 8 May 2023", "last month" -> "in April 2023"."""
    if session_date is None:
        return sentence

    def absolute(match: re.Match) -> str:
        found = _days_back(match.group(1), session_date)
        if found is None:
            return match.group(0)
        days, precision = found
        day = session_date - dt.timedelta(days=days)
        if precision == "day":
            return f"on {format_date(day)}"
        if precision == "week":
            return f"in the week before {format_date(day + dt.timedelta(days=7))}"
        if precision == "month":
            return f"in {MONTHS[day.month - 1].capitalize()} {day.year}"
        return f"in {day.year}"

    return _RELATIVE.sub(absolute, sentence)


def to_third_person(sentence: str, speaker: str) -> str:
    """First-person singular words replaced by the speaker ("I've" -> "Alice has",
    "my" -> "Alice's"); when the speaker is still not named ("we ..."), ``"Speaker: "``
    is put in front."""
    out = sentence
    for pattern, replacement in _PRONOUNS:
        out = pattern.sub(replacement.replace("{s}", speaker), out)
    if speaker and speaker.lower() not in out.lower():
        out = f"{speaker}: {out}"
    return out


def first_person_facts(text: str, speaker: str, date: str) -> list[str]:
    """The add-only extractor: facts from one turn.

    Each sentence of the turn (photo captions removed) that is a statement (not a
    question), has at least ``MIN_FACT_WORDS`` words and speaks in the first person
    (I / my / me / we / our / us ...) becomes ``"<third-person sentence> [<date>]"``, with
    relative dates resolved against the session date when it can be read.
    """
    session_date = parse_session_date(date)
    facts = []
    for sentence in _SENTENCE_END.split(_PHOTO.sub(" ", text)):
        sentence = " ".join(sentence.split())
        if (not sentence or sentence.endswith("?") or len(sentence.split()) < MIN_FACT_WORDS
                or not _FIRST_PERSON.search(sentence)):
            continue
        fact = to_third_person(resolve_relative_dates(sentence, session_date), speaker)
        facts.append(f"{fact} [{date}]" if date else fact)
    return facts


class AddOnlyAgent(AddEveryFactAgent):
    """mem0-style ADD-only memory: rule-based first-person facts, never UPDATE or DELETE."""

    name = "add-only"

    def facts(self, data: dict, date: str) -> list[dict]:
        """First-person facts of the turns, each once."""
        facts, seen = [], set()
        for speaker, text in _turns(data):
            for fact in first_person_facts(text, speaker, date):
                if fact not in seen:
                    seen.add(fact)
                    facts.append({"text": fact, "speaker": speaker})
        return facts


class AddOnlyTurnsAgent(AddEveryFactAgent):
    """``add-only`` and ``rag-turns`` together: add-only's first-person facts, then every
    turn verbatim (``"[date] Speaker: text"``), all ADDed. The candidate set a memory
    manager can choose from when both rewritten facts and raw turns may be kept."""

    name = "add-only-turns"

    def facts(self, data: dict, date: str) -> list[dict]:
        """add-only's facts of the observation, then its turns (each text once)."""
        by_text: dict[str, dict] = {}
        for fact in AddOnlyAgent().facts(data, date) + RagTurnsAgent().facts(data, date):
            by_text.setdefault(fact["text"], fact)
        return list(by_text.values())


# --------------------------------------------------------------------------- registration --
