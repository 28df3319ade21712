"""The memory manager's decision cut to one candidate fact at a time, and its features.

The LLM agents of this project write the whole ``manage`` action as text. Here the same
decision is cut down to what a small MLP policy (stable-baselines3 PPO) can learn: for
each extracted fact, in order, choose

    0 ADD      store the fact as a new memory
    1 UPDATE   replace the text of the fact's *nearest* memory with the fact's text
    2 DELETE   delete the nearest memory (a retraction: "Alice quit the chess club ...")
    3 NOOP     do nothing

from a fixed-size vector of hand-made features of the fact and its nearest memories
(:func:`fact_features`, named by ``FEATURE_NAMES``). :class:`SessionDecisions` takes one
session's decisions and turns them into the ``manage`` action; :func:`rule_decision` and
the other rules in ``HAND_WRITTEN_RULES`` are hand-written reference policies on the same
features.

*Nearest* memory: among the memories the environment lists as related to the fact (its
BM25 top-k), the one that is about the same speaker and the same topic, with the largest
share of the fact's words — ranked by ``(same speaker and topic, same speaker, word
containment, BM25 rank)``. Topics and kinds of change come from small word lists
(:data:`TOPIC_WORDS`, :data:`CHANGE_CUES`) covering the everyday life events of the
synthetic worlds and LoCoMo-like chat ("moved", "started", "quit", "sold", "broke up",
"gave ... to a friend"); a fact about a job change ("Alice started working as a pilot")
shares no value word with the memory it replaces ("Alice works as a nurse"), so plain
BM25 would not find it.

Within one session, decisions are collected fact by fact and sent to the environment as
one ``manage`` action; a memory that an earlier fact of the same session already updated
or deleted is no longer a candidate (so the operation list is always valid), and memories
that earlier facts of the same session add are not visible yet.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

import numpy as np

from memenv.retrieval import tokenize

ADD, UPDATE, DELETE, NOOP = 0, 1, 2, 3
DECISIONS = ("ADD", "UPDATE", "DELETE", "NOOP")
NUM_NEAREST = 3  # nearest memories described in the features

# Kinds of change, checked in this order (a retraction cue wins over a change cue).
CHANGE_CUES: dict[str, frozenset[str]] = {
    "retraction": frozenset("quit sold broke left ended gave split cancelled canceled divorced lost stopped "
                            "rid resigned dropped".split()),
    "change": frozenset("moved relocated started began switched became changed promoted".split()),
    "acquisition": frozenset("joined bought adopted travelled traveled visited saw flew got attended "
                             "purchased".split()),
    "state": frozenset("lives works is plays partner favourite favorite has owns".split()),
}
CUE_KINDS = tuple(CHANGE_CUES)
TOPIC_WORDS: dict[str, frozenset[str]] = {
    "residence": frozenset("live lives living moved relocated city home apartment".split()),
    "work": frozenset("work works working job career occupation hired employed".split()),
    "relationship": frozenset("partner dating couple broke married boyfriend girlfriend engaged "
                              "divorced".split()),
    "membership": frozenset("club joined quit member membership team".split()),
    "ownership": frozenset("bought sold car owns vehicle".split()),
    "pet": frozenset("adopted pet cat dog rabbit parrot hamster turtle puppy kitten".split()),
    "travel": frozenset("travelled traveled trip flew visited holiday vacation".split()),
    "concert": frozenset("concert gig festival".split()),
    "family": frozenset("sister brother mother father son daughter cousin".split()),
    "instrument": frozenset("plays instrument piano guitar violin cello drums flute".split()),
    "food": frozenset("food favourite favorite dish cuisine".split()),
}
_WORDS = re.compile(r"[a-z]+")
_DATE = re.compile(r"\b\d{1,2} (January|February|March|April|May|June|July|August|September|October|November"
                   r"|December) \d{4}\b|\b\d{4}-\d{2}-\d{2}\b")
# Memory size enters the features as n / (n + MEMORY_SIZE_SCALE), in [0, 1).
MEMORY_SIZE_SCALE = 16.0
# Same-speaker same-topic memories counted up to this many (list slots hold several).
MAX_SAME_TOPIC = 4

FACT_FEATURES = ("placeholder", "has_date", *(f"cue_{k}" for k in CUE_KINDS), "has_topic", "memory_size",
                 "session_progress", "fact_progress", "same_topic_count")
NEAREST_FEATURES = ("present", "same_speaker", "same_topic", "containment", "jaccard", "duplicate", "age",
                    "is_retraction", "has_date")
FEATURE_NAMES = FACT_FEATURES + tuple(f"nearest{k}_{name}" for k in range(NUM_NEAREST) for name in NEAREST_FEATURES)
NUM_FEATURES = len(FEATURE_NAMES)
_FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
# Saved managers record it (agents.sb3_model_file) and are refused when it differs: bump it
# when the meaning of a feature changes (names and count are checked as well).
FEATURE_VERSION = 1


# ------------------------------------------------------------------------ text cues --
def change_kind(text: str) -> str | None:
    """The kind of change a fact text reports (``"retraction"``, ``"change"``,
    ``"acquisition"``, ``"state"``), from its words; None when no cue word occurs."""
    words = set(_WORDS.findall(str(text).lower()))
    for kind, cues in CHANGE_CUES.items():
        if words & cues:
            return kind
    return None


def topics(text: str) -> frozenset[str]:
    """The life topics (residence, work, relationship, ...) a text touches."""
    words = set(_WORDS.findall(str(text).lower()))
    return frozenset(t for t, vocab in TOPIC_WORDS.items() if words & vocab)


def has_date(text: str) -> bool:
    """Whether the text holds an absolute date ("8 May 2023" or "2023-05-08")."""
    return _DATE.search(str(text)) is not None


def _normal(text: str) -> str:
    return " ".join(_WORDS.findall(str(text).lower()))


def fact_speaker(fact: dict, speakers: Sequence[str]) -> str | None:
    """The fact's speaker as given, else the first speaker named in its text."""
    given = fact.get("speaker")
    if isinstance(given, str) and given in speakers:
        return given
    text = str(fact.get("text", ""))
    found = [(text.find(s), s) for s in speakers if s and s in text]
    return min(found)[1] if found else None


# ------------------------------------------------------------------------ features --
def _nearest_block(fact_text: str, fact_tokens: set[str], fact_topics: frozenset[str], speaker: str | None,
                   record: dict, session: int, num_sessions: int) -> list[float]:
    mem_tokens = set(tokenize(record.get("text", "")))
    shared = fact_tokens & mem_tokens
    union = fact_tokens | mem_tokens
    written = record.get("session")
    age = (session - written) / max(1, num_sessions - 1) if isinstance(written, int) else 0.0
    return [
        1.0,
        float(speaker is not None and record.get("speaker") == speaker),
        float(bool(fact_topics & topics(record.get("text", "")))),
        len(shared) / len(fact_tokens) if fact_tokens else 0.0,
        len(shared) / len(union) if union else 0.0,
        float(_normal(fact_text) == _normal(record.get("text", ""))),
        min(1.0, max(0.0, age)),
        float(change_kind(record.get("text", "")) == "retraction"),
        float(has_date(record.get("text", ""))),
    ]


def rank_nearest(fact: dict, memories: dict[str, dict], speakers: Sequence[str],
                 excluded: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Ids of the fact's related memories, nearest first (see the module docstring)."""
    text = str(fact.get("text", ""))
    speaker = fact_speaker(fact, speakers)
    fact_tokens = set(tokenize(text))
    fact_topics = topics(text)
    keyed = []
    for rank, memory_id in enumerate(fact.get("related") or ()):
        record = memories.get(memory_id)
        if record is None or memory_id in excluded:
            continue
        same_speaker = speaker is not None and record.get("speaker") == speaker
        same_topic = bool(fact_topics & topics(record.get("text", "")))
        containment = len(fact_tokens & set(tokenize(record.get("text", "")))) / max(1, len(fact_tokens))
        keyed.append(((same_speaker and same_topic, same_speaker, containment, -rank), memory_id))
    keyed.sort(key=lambda item: item[0], reverse=True)
    return [memory_id for _, memory_id in keyed]


def fact_features(fact: dict, nearest: Sequence[str], memories: dict[str, dict], *, speakers: Sequence[str],
                  session: int, num_sessions: int, memory_size: int, fact_index: int, num_facts: int) -> np.ndarray:
    """The float32 feature vector (``FEATURE_NAMES``, all in [0, 1]) of one candidate fact."""
    text = str(fact.get("text", ""))
    speaker = fact_speaker(fact, speakers)
    fact_tokens = set(tokenize(text))
    fact_topics = topics(text)
    kind = change_kind(text)
    same_topic = sum(1 for m in nearest if speaker is not None and memories[m].get("speaker") == speaker
                     and fact_topics & topics(memories[m].get("text", "")))
    values = [
        0.0,
        float(has_date(text)),
        *(float(kind == k) for k in CUE_KINDS),
        float(bool(fact_topics)),
        memory_size / (memory_size + MEMORY_SIZE_SCALE),
        session / max(1, num_sessions - 1),
        fact_index / max(1, num_facts),
        min(same_topic, MAX_SAME_TOPIC) / MAX_SAME_TOPIC,
    ]
    for k in range(NUM_NEAREST):
        if k < len(nearest):
            values += _nearest_block(text, fact_tokens, fact_topics, speaker, memories[nearest[k]], session, num_sessions)
        else:
            values += [0.0] * len(NEAREST_FEATURES)
    return np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)


def placeholder_features() -> np.ndarray:
    """The features of a session without any candidate fact (one step whose action is ignored)."""
    values = np.zeros(NUM_FEATURES, dtype=np.float32)
    values[FEATURE_NAMES.index("placeholder")] = 1.0
    return values


class SessionDecisions:
    """The manager's decisions for one ``manage`` observation, taken one fact at a time.

    ``features()`` describes the current fact, ``decide(d)`` records the decision for it
    and moves on, ``operations()`` is the ``manage`` action once every fact is decided.
    A session without facts has one placeholder step whose decision is ignored.
    """

    def __init__(self, obs: dict) -> None:
        if not isinstance(obs, dict) or obs.get("role") != "manage":
            raise ValueError(f"SessionDecisions needs a parsed manage observation, got {str(obs)[:80]!r}")
        facts = obs.get("facts")
        self.facts = [f for f in facts if isinstance(f, dict) and isinstance(f.get("text"), str) and f["text"].strip()] \
            if isinstance(facts, list) else []
        records = obs.get("memories")
        self.memories = {r["id"]: r for r in records if isinstance(r, dict) and isinstance(r.get("id"), str)} \
            if isinstance(records, list) else {}
        speakers = obs.get("speakers")
        self.speakers = tuple(s for s in speakers if isinstance(s, str)) if isinstance(speakers, list) else ()
        self.session = int(obs.get("session") or 0)
        self.num_sessions = int(obs.get("num_sessions") or 1)
        self.memory_size = int(obs.get("memory_size") or len(self.memories))
        self.index = 0
        self.excluded: set[str] = set()
        self.ops: list[dict] = []
        self._nearest: list[str] | None = None

    @property
    def num_steps(self) -> int:
        """Decisions this session takes: one per fact, or one placeholder."""
        return max(1, len(self.facts))

    @property
    def done(self) -> bool:
        return self.index >= self.num_steps

    def _current_nearest(self) -> list[str]:
        if self._nearest is None:
            self._nearest = rank_nearest(self.facts[self.index], self.memories, self.speakers, self.excluded)
        return self._nearest

    def features(self) -> np.ndarray:
        """Features of the fact awaiting a decision."""
        if self.done:
            raise RuntimeError("every fact of this session has been decided")
        if not self.facts:
            return placeholder_features()
        return fact_features(self.facts[self.index], self._current_nearest(), self.memories,
                             speakers=self.speakers, session=self.session, num_sessions=self.num_sessions,
                             memory_size=self.memory_size, fact_index=self.index, num_facts=len(self.facts))

    def decide(self, decision: int) -> dict:
        """Record the decision for the current fact; returns what it did."""
        if self.done:
            raise RuntimeError("every fact of this session has been decided")
        if decision not in (ADD, UPDATE, DELETE, NOOP):
            raise ValueError(f"decision must be one of 0..3 ({', '.join(DECISIONS)}), got {decision!r}")
        if not self.facts:
            self.index += 1
            return {"fact": None, "decision": "NOOP", "target": None}
        fact = self.facts[self.index]
        nearest = self._current_nearest()
        target = nearest[0] if nearest else None
        op: dict | None = None
        if decision == ADD:
            op = {"op": "ADD", "text": fact["text"]}
            speaker = fact_speaker(fact, self.speakers)
            if speaker is not None:
                op["speaker"] = speaker
        elif decision in (UPDATE, DELETE) and target is not None:
            # UPDATE / DELETE without any nearest memory does nothing (the fact is dropped)
            op = {"op": "UPDATE", "id": target, "text": fact["text"]} if decision == UPDATE else {"op": "DELETE", "id": target}
            self.excluded.add(target)
        if op is not None:
            self.ops.append(op)
        self.index += 1
        self._nearest = None
        return {"fact": fact["text"], "decision": DECISIONS[decision], "target": target if op and "id" in op else None}

    def operations(self) -> list[dict]:
        """The ``operations`` of the manage action (``[{"op": "NOOP"}]`` when empty)."""
        return list(self.ops) or [{"op": "NOOP"}]

    def action(self) -> str:
        """The manage action text."""
        return json.dumps({"operations": self.operations()}, ensure_ascii=False)


def rule_decision(features: np.ndarray) -> int:
    """A hand-written reference policy on the same features (not learned).

    NOOP for a placeholder or an exact duplicate of the nearest memory; DELETE the
    nearest for a retraction and UPDATE it for a change, when the nearest memory is
    about the same speaker and topic; ADD otherwise. On synthetic worlds with gold
    extraction it reproduces the gold operations, so it shows what the features allow.
    """
    x = np.asarray(features).reshape(-1)
    if x.shape != (NUM_FEATURES,):
        raise ValueError(f"features must have {NUM_FEATURES} values, got shape {np.asarray(features).shape}")
    f = _FEATURE_INDEX
    if x[f["placeholder"]] or x[f["nearest0_duplicate"]]:
        return NOOP
    match = x[f["nearest0_same_speaker"]] and x[f["nearest0_same_topic"]]
    if match and x[f["cue_retraction"]]:
        return DELETE
    if match and x[f["cue_change"]]:
        return UPDATE
    return ADD


def _checked(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features).reshape(-1)
    if x.shape != (NUM_FEATURES,):
        raise ValueError(f"features must have {NUM_FEATURES} values, got shape {np.asarray(features).shape}")
    return x


def keep_history_decision(features: np.ndarray) -> int:
    """A hand-written rule that keeps past values as their own state texts (not learned).

    NOOP for a placeholder; UPDATE the nearest memory when the fact repeats it up to dates
    and numbers (a corrected date); DELETE the nearest for a retraction about the same
    speaker and topic; ADD otherwise, changes included, so past values stay in memory for
    history, counting and ordering questions, at the cost of stale values in the answers
    about the current one. It cannot write a merged text, so under a memory budget it
    outgrows what a merging manager needs.
    """
    x = _checked(features)
    f = _FEATURE_INDEX
    if x[f["placeholder"]]:
        return NOOP
    if x[f["nearest0_duplicate"]]:
        return UPDATE
    if x[f["nearest0_same_speaker"]] and x[f["nearest0_same_topic"]] and x[f["cue_retraction"]]:
        return DELETE
    return ADD


# The budget-aware rule keeps history while the memory holds fewer entries than this.
BUDGET_RULE_MEMORIES = 4


def budget_keep_history_decision(features: np.ndarray) -> int:
    """:func:`keep_history_decision` that stops growing once the memory is large (not learned).

    Like the keep-history rule while the memory holds fewer than ``BUDGET_RULE_MEMORIES``
    entries (the ``memory_size`` feature); from there on, a change or an acquisition about
    the nearest memory's speaker and topic UPDATEs that memory instead of adding, so the
    memory stops growing before a budget refuses a whole session (it cannot see the
    budget itself, nor merge texts).
    """
    x = _checked(features)
    f = _FEATURE_INDEX
    decision = keep_history_decision(x)
    full = x[f["memory_size"]] >= BUDGET_RULE_MEMORIES / (BUDGET_RULE_MEMORIES + MEMORY_SIZE_SCALE)
    match = x[f["nearest0_same_speaker"]] and x[f["nearest0_same_topic"]]
    if decision == ADD and full and match and (x[f["cue_change"]] or x[f["cue_acquisition"]]):
        return UPDATE
    return decision


# Hand-written policies on the decision features, by name (the first is the original
# reference rule); benchmarks.sb3_manager reports each as "<name> (hand-written)".
HAND_WRITTEN_RULES = {
    "feature rule": rule_decision,
    "keep-history rule": keep_history_decision,
    "budget-aware keep-history rule": budget_keep_history_decision,
}
