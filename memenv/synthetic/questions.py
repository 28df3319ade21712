"""Questions about a world, made from its final state.

Each answer holds from its last evidence session to the end of the conversation:
single-hop (a slot set and never changed), knowledge-update (a slot that was updated or
retracted: its final value), temporal (the date of an event whose text is still in the
final gold memory), multi-hop (the city of the person working as a given job) and
unanswerable (a slot never mentioned: ``UNKNOWN``). Lists are answered as items joined
with " and ". ``Question.meta`` names speaker and slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memenv.synthetic.people import Person
from memenv.synthetic.sampling import randint
from memenv.synthetic.texts import question_text
from memenv.synthetic.vocabulary import ALL_SLOTS, CITY, JOB, LIST_SLOTS, SIBLING
from memenv.types import (
    KNOWLEDGE_UPDATE,
    MULTI_HOP,
    SINGLE_HOP,
    TEMPORAL,
    UNANSWERABLE,
    Question,
)

MAX_UNANSWERABLE = 4                   # unanswerable questions per world, at most
# Short worlds have more questions than sessions can use: keep at most this many per
# session (but never fewer than MIN_QUESTION_CAP per world), every kind still present.
MAX_QUESTIONS_PER_SESSION = 3
MIN_QUESTION_CAP = 12
UNKNOWN = "unknown"                    # the answer to an unanswerable question


def _final_values(person: Person, slot: str, memory: Sequence[str]) -> tuple[list[str], str]:
    """Final values of a slot (in gold memory order) and their detail."""
    if slot in LIST_SLOTS:
        held = person.items.get(slot, {})
        order = {text: i for i, text in enumerate(memory)}
        values = sorted(held, key=lambda v: order[held[v][0]])
        return values, ""
    if slot in person.current:
        value, _, detail = person.current[slot]
        return [value], detail
    return [], ""


def make_questions(rng: np.random.Generator, conv_id: str, num_sessions: int,
                   people: Sequence[Person], memory: Sequence[str],
                   dated: dict[str, tuple[int, str, str, str, str, str]], *,
                   extra_drafts: Sequence[Question] = (),
                   corrections: dict[str, tuple[int, ...]] | None = None,
                   max_unanswerable: int = MAX_UNANSWERABLE) -> tuple[Question, ...]:
    """The questions of a world, in the order they fall due, ids ``<conv_id>-q<n>``.

    ``people`` and ``memory`` are the final speakers and gold memory; ``dated`` maps the
    canonical text of each dated state fact to ``(session, speaker, slot, value, detail,
    date)``. Hard worlds add ``extra_drafts`` (history, counting and ordering questions)
    and ``corrections``: the sessions that corrected a dated text, evidence of its date;
    they keep at most ``max_unanswerable`` unanswerable questions.
    """
    corrections = corrections or {}
    drafts = []
    unanswerable = []
    for person in people:
        meta_who = ("speaker", person.name)
        for slot in ALL_SLOTS:
            touches = person.touches.get(slot, [])
            if not touches:
                relation = ("sister" if rng.random() < 0.5 else "brother") if slot == SIBLING else ""
                text = question_text(rng, "slot", slot, person.name, detail=relation)
                unanswerable.append(Question("", text, UNKNOWN, UNANSWERABLE,
                                             (randint(rng, 0, num_sessions),),
                                             (meta_who, ("slot", slot))))
                continue
            values, detail = _final_values(person, slot, memory)
            if not values:
                continue
            kind = KNOWLEDGE_UPDATE if slot in person.changed else SINGLE_HOP
            text = question_text(rng, "slot", slot, person.name, detail=detail)
            drafts.append(Question("", text, " and ".join(values), kind,
                                   tuple(sorted(set(touches))), (meta_who, ("slot", slot))))
    for text in memory:
        if text not in dated:
            continue
        session, speaker, slot, value, detail, date_text = dated[text]
        female = next(p.female for p in people if p.name == speaker)
        question = question_text(rng, "when", slot, speaker, value, female, detail)
        evidence = tuple(sorted({session, *corrections.get(text, ())}))
        drafts.append(Question("", question, date_text, TEMPORAL, evidence,
                               (("speaker", speaker), ("slot", slot), ("value", value))))
    for person in people:
        if JOB in person.current and CITY in person.current:
            job = person.current[JOB][0]
            evidence = tuple(sorted({person.touches[JOB][-1], person.touches[CITY][-1]}))
            drafts.append(Question("", question_text(rng, "multi", CITY, value=job),
                                   person.current[CITY][0], MULTI_HOP, evidence,
                                   (("speaker", person.name), ("slot", CITY), ("job", job))))
    if len(unanswerable) > max_unanswerable:
        keep = sorted(int(i) for i in rng.choice(len(unanswerable), max_unanswerable, replace=False))
        unanswerable = [unanswerable[i] for i in keep]
    drafts = _cap(rng, drafts + list(extra_drafts) + unanswerable, num_sessions)
    order = sorted(range(len(drafts)), key=lambda i: (drafts[i].due_after, i))
    return tuple(
        Question(f"{conv_id}-q{n}", drafts[i].question, drafts[i].answer, drafts[i].kind,
                 drafts[i].evidence, drafts[i].meta)
        for n, i in enumerate(order)
    )


def _cap(rng: np.random.Generator, drafts: list[Question], num_sessions: int) -> list[Question]:
    """A random subset of at most the question cap, keeping one question of each kind."""
    cap = max(MAX_QUESTIONS_PER_SESSION * num_sessions, MIN_QUESTION_CAP)
    if len(drafts) <= cap:
        return drafts
    shuffled = [int(i) for i in rng.permutation(len(drafts))]
    first_of_kind = {}
    for i in shuffled:
        first_of_kind.setdefault(drafts[i].kind, i)
    keep = set(first_of_kind.values())
    for i in shuffled:
        if len(keep) >= cap:
            break
        keep.add(i)
    return [d for i, d in enumerate(drafts) if i in keep]
