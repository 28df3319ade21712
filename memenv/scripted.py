"""Scripted agents: reference policies that need no model.

They act on the environment's JSON observations (see ``memenv.env``) and read the gold
annotations the environment puts in ``info["gold"]`` on synthetic worlds:

- :class:`OracleAgent` extracts the gold facts and applies the gold operations, so its
  memory equals the gold memory; its scores are the ceiling of the scripted reader.
- :class:`AddAllAgent` extracts the gold facts but only ever ADDs, so stale values stay
  in memory and knowledge-update questions get partial credit.
- :class:`NoopAgent` remembers nothing.

All three answer with :func:`scripted_answer`, a rule-based reader of the synthetic
world's canonical fact and question templates (``memenv.synthetic``). Without gold in
``info`` (real data) the oracle and add-all agents extract nothing. No agent ever raises
on a malformed observation: it falls back to the empty action of the role.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Sequence

from memenv.synthetic import UNKNOWN, ParsedFact, parse_date, parse_fact, parse_question

NOOP_OPERATIONS = [{"op": "NOOP"}]
ANSWER_JOINER = " and "


def _dedup(values: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return [v for v in values if not (v in seen or seen.add(v))]


def scripted_answer(question: str, memories: Sequence[str]) -> str:
    """Answer a synthetic-world question from memory texts, by rules.

    Slot questions get every value of that speaker's slot found in "current state" texts
    (intro, change, join, buy, adopt, ...), in the order of their dates (undated first, then
    memory order) without repeats, joined with " and "; a hard world's list or record text
    counts as the texts it merges. Retraction texts (break-ups, quitting, selling, giving
    away) are not read, so a memory that keeps stale entries answers with several values. "When" questions get
    the date of the event's text; multi-hop questions the city of whoever works as the
    job. The hard worlds' history, counting and ordering questions are read from past and
    state texts together (:func:`_timeline_answer`). Nothing found, or a question it does
    not understand: ``"unknown"``. The texts it reads are documented in
    :mod:`memenv.synthetic.texts` (the canonical text contract).
    """
    parsed = parse_question(question)
    if parsed is None:
        return UNKNOWN
    texts = () if isinstance(memories, (str, bytes)) else memories
    parsed_facts = _read_facts(texts)
    if parsed.qtype in _TIMELINE_QUESTIONS:
        return _timeline_answer(parsed, parsed_facts)
    facts = [fact for fact in parsed_facts if fact.is_state]
    # Chronological order (undated intro facts first), so lists read as the world built them.
    facts.sort(key=_chronology)
    if parsed.qtype == "slot":
        values = [f.value for f in facts
                  if f.speaker == parsed.speaker and f.slot == parsed.slot
                  and (not parsed.detail or f.detail == parsed.detail)]
    elif parsed.qtype == "when":
        values = [f.date for f in facts
                  if f.speaker == parsed.speaker and f.slot == parsed.slot and f.date
                  and f.value.lower() == parsed.value.lower()
                  and (not parsed.detail or f.detail == parsed.detail)]
    else:  # multi-hop: the job names the person, then read that person's slot
        holders = {f.speaker for f in facts if f.slot == "job" and f.value.lower() == parsed.value.lower()}
        values = [f.value for f in facts if f.speaker in holders and f.slot == parsed.slot]
    values = _dedup(values)
    return ANSWER_JOINER.join(values) if values else UNKNOWN


_TIMELINE_QUESTIONS = ("previous", "ever", "count", "order")


def _read_facts(texts: Sequence[str]) -> list[ParsedFact]:
    """The canonical facts of memory texts, a list or record text (hard worlds) read as the
    facts it merges; texts that follow no template are skipped."""
    out: list[ParsedFact] = []
    for text in texts:
        fact = parse_fact(text)
        if fact is None:
            continue
        out.extend(fact.items if fact.category in ("list", "record") else (fact,))
    return out


def _date_or_min(text: str) -> dt.date:
    try:
        return parse_date(text) if text else dt.date.min
    except ValueError:
        return dt.date.min


def _timeline(facts: Sequence[ParsedFact], speaker: str, slot: str) -> list[tuple[dt.date, str]]:
    """(start, value) of every value the speaker's slot has held, earliest first, one per value.

    Past values come from history texts, present ones from state texts (their date;
    undated introductions first); retraction and third-party texts are not read.
    """
    starts: dict[str, dt.date] = {}

    def note(value: str, start: dt.date) -> None:
        if value not in starts or start < starts[value]:
            starts[value] = start

    for fact in facts:
        if fact.speaker != speaker or fact.slot != slot:
            continue
        if fact.category == "state":
            note(fact.value, _date_or_min(fact.date))
        elif fact.category == "history":
            for state in fact.past:
                note(state.value, _date_or_min(state.start))
    return sorted(((start, value) for value, start in starts.items()), key=lambda item: item[0])


def _event_dates(facts: Sequence[ParsedFact], speaker: str, slot: str, value: str) -> set[dt.date]:
    """Every date the memory gives for the start of ``value`` in the speaker's slot."""
    out = set()
    for fact in facts:
        if fact.speaker != speaker or fact.slot != slot:
            continue
        if fact.category == "state" and fact.date and fact.value.lower() == value.lower():
            out.add(_date_or_min(fact.date))
        elif fact.category == "history":
            out.update(_date_or_min(p.start) for p in fact.past if p.start and p.value.lower() == value.lower())
    return out


def _timeline_answer(parsed, facts: Sequence[ParsedFact]) -> str:
    """Answers of the hard worlds' history, counting and ordering questions.

    ``previous``: the value that started last before ``value`` started; ``ever``: every
    value, earliest first; ``count``: how many values; ``order``: ``"before"`` or
    ``"after"`` when every date the memory gives for the two events agrees, else unknown.
    """
    if parsed.qtype == "order":
        first = _event_dates(facts, parsed.speaker, parsed.slot, parsed.value)
        second = _event_dates(facts, parsed.speaker, parsed.other_slot, parsed.other_value)
        if not first or not second:
            return UNKNOWN
        if max(first) < min(second):
            return "before"
        if min(first) > max(second):
            return "after"
        return UNKNOWN
    timeline = _timeline(facts, parsed.speaker, parsed.slot)
    if not timeline:
        return UNKNOWN
    if parsed.qtype == "count":
        return str(len(timeline))
    if parsed.qtype == "ever":
        return ANSWER_JOINER.join(value for _, value in timeline)
    starts = [start for start, value in timeline if value.lower() == parsed.value.lower()]
    if not starts:
        return UNKNOWN
    before = [value for start, value in timeline if start < starts[0]]
    return before[-1] if before else UNKNOWN


def _chronology(fact: ParsedFact) -> tuple:
    try:
        return (parse_date(fact.date),) if fact.date else (dt.date.min,)
    except ValueError:
        return (dt.date.min,)


def load_observation(obs: Any) -> dict:
    """The observation as a dict ({} when it is not JSON text of an object); never raises."""
    if isinstance(obs, dict):
        return obs
    try:
        data = json.loads(obs)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def observation_role(obs: dict, info: Any) -> str:
    """The role an observation asks for (from the observation, else from info; "" if neither says)."""
    role = obs.get("role")
    if not isinstance(role, str) and isinstance(info, dict):
        role = info.get("role")
    return role if isinstance(role, str) else ""


def _gold(info: Any) -> dict:
    gold = info.get("gold") if isinstance(info, dict) else None
    return gold if isinstance(gold, dict) else {}


def _gold_facts(info: Any) -> list:
    facts = _gold(info).get("facts")
    return [f for f in facts if isinstance(f, (str, dict))] if isinstance(facts, list) else []


def answer_action(obs: str | dict) -> str:
    """``{"answer": ...}``: :func:`scripted_answer` over an answer observation's memories."""
    obs = load_observation(obs) if isinstance(obs, str) else obs
    question = obs.get("question")
    records = obs.get("memories")
    texts = [r.get("text") for r in records if isinstance(r, dict) and isinstance(r.get("text"), str)] \
        if isinstance(records, list) else []
    answer = scripted_answer(question, texts) if isinstance(question, str) else UNKNOWN
    return json.dumps({"answer": answer})


class ScriptedReader:
    """The answerer ``scripted``: the rule-based reader of the synthetic worlds' canonical
    fact texts (:func:`scripted_answer`). It cannot read raw dialogue or LoCoMo, so with
    other memories it mostly answers ``unknown``."""

    name = "scripted"

    def act(self, obs: str, info: dict) -> str:
        """The answer action for one answer observation."""
        return answer_action(obs)

    def act_batch(self, observations: list[str], infos: list[dict]) -> list[str]:
        """One answer action per observation."""
        return [answer_action(obs) for obs in observations]


def _empty_action(role: str) -> str:
    """The do-nothing action of a role."""
    if role == "extract":
        return json.dumps({"facts": []})
    if role == "manage":
        return json.dumps({"operations": NOOP_OPERATIONS})
    return json.dumps({"answer": UNKNOWN})


class NoopAgent:
    """Extracts nothing, never edits memory, answers from its (empty) memory."""

    name = "noop"

    def act(self, obs: str, info: dict) -> str:
        """The action for this observation (JSON text)."""
        data = load_observation(obs)
        role = observation_role(data, info)
        return answer_action(data) if role == "answer" else _empty_action(role)


class OracleAgent:
    """Extracts the gold facts and applies the gold operations (needs ``info["gold"]``)."""

    name = "oracle"

    def act(self, obs: str, info: dict) -> str:
        """The action for this observation (JSON text)."""
        data = load_observation(obs)
        role = observation_role(data, info)
        if role == "extract":
            return json.dumps({"facts": _gold_facts(info)})
        if role == "manage":
            ops = _gold(info).get("operations")
            ops = [op for op in ops if isinstance(op, dict)] if isinstance(ops, list) else []
            return json.dumps({"operations": ops or NOOP_OPERATIONS})
        if role == "answer":
            return answer_action(data)
        return _empty_action(role)


class AddAllAgent:
    """Extracts the gold facts (when ``info`` has them) and ADDs every fact, never
    updating or deleting: the memory keeps stale values."""

    name = "add-all"

    def act(self, obs: str, info: dict) -> str:
        """The action for this observation (JSON text)."""
        data = load_observation(obs)
        role = observation_role(data, info)
        if role == "extract":
            return json.dumps({"facts": _gold_facts(info)})
        if role == "manage":
            ops = []
            facts = data.get("facts")
            for fact in facts if isinstance(facts, list) else ():
                if not isinstance(fact, dict) or not isinstance(fact.get("text"), str):
                    continue
                op = {"op": "ADD", "text": fact["text"]}
                if isinstance(fact.get("speaker"), str):
                    op["speaker"] = fact["speaker"]
                ops.append(op)
            return json.dumps({"operations": ops or NOOP_OPERATIONS})
        if role == "answer":
            return answer_action(data)
        return _empty_action(role)


SCRIPTED_AGENTS = {"oracle": OracleAgent, "noop": NoopAgent, "add-all": AddAllAgent}
