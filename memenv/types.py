"""The data model shared by every data source of :mod:`memenv`.

A data source (the synthetic world generator, the LoCoMo loader, the LongMemEval
loader, ...) turns its input into a :class:`Conversation`: sessions in time order, each
with a date and turns, plus the questions asked about the conversation. Everything here
is an immutable value, so environments and their forks share one conversation object.

Gold annotations (``Session.gold_facts``, ``Session.gold_memory``) exist only for
sources that know them (synthetic worlds). They reach the agent through ``info`` for
diagnostics, never through the observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Question kinds. Default synthetic worlds use the first five; LoCoMo categories are mapped by
# the loader to LoCoMo's own numbering names (see ``memenv.data.locomo``).
SINGLE_HOP = "single-hop"
MULTI_HOP = "multi-hop"
TEMPORAL = "temporal"
KNOWLEDGE_UPDATE = "knowledge-update"
UNANSWERABLE = "unanswerable"
SYNTHETIC_KINDS = (SINGLE_HOP, MULTI_HOP, TEMPORAL, KNOWLEDGE_UPDATE, UNANSWERABLE)
# Hard synthetic worlds (``difficulty="hard"``) add these three.
HISTORY = "history"
ORDERING = "ordering"
COUNTING = "counting"
HARD_SYNTHETIC_KINDS = SYNTHETIC_KINDS + (HISTORY, ORDERING, COUNTING)


@dataclass(frozen=True)
class Turn:
    """One utterance of a session."""

    speaker: str
    text: str
    dia_id: str = ""


@dataclass(frozen=True)
class GoldFact:
    """A fact worth remembering from one session, with the memory operation it calls for.

    ``op`` is ``"ADD"``, ``"UPDATE"`` or ``"DELETE"``. For UPDATE and DELETE,
    ``old_text`` is the text of the memory entry the operation applies to (as the gold
    memory holds it). ``key`` names the slot the fact is about (e.g. ``"Alice/city"``).
    """

    text: str
    op: str
    speaker: str
    key: str = ""
    old_text: str = ""


@dataclass(frozen=True)
class Session:
    """One dialogue session: a date and the turns spoken on it."""

    index: int
    date: str
    turns: tuple[Turn, ...]
    gold_facts: tuple[GoldFact, ...] = ()
    # Texts of the gold memory bank after this session (None when unknown).
    gold_memory: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Question:
    """A question about the conversation.

    ``evidence`` holds the indices of the sessions that contain the evidence; the
    question is due (``qa_schedule="after_evidence"``) right after the last of them.
    ``answer`` is valid from that session to the end of the conversation.
    """

    qid: str
    question: str
    answer: str
    kind: str
    evidence: tuple[int, ...]
    # Optional diagnostic annotations (e.g. the slot a synthetic question is about).
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def due_after(self) -> int:
        """Index of the session after which the question is asked in training."""
        return max(self.evidence) if self.evidence else 0


@dataclass(frozen=True)
class Conversation:
    """A whole multi-session conversation between two speakers, with its questions."""

    conv_id: str
    speakers: tuple[str, str]
    sessions: tuple[Session, ...]
    questions: tuple[Question, ...]
    source: str = "synthetic"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def num_sessions(self) -> int:
        return len(self.sessions)
