"""The world builder: two speakers, many sessions, facts that change over time.

Session 0 introduces each speaker's city and job (and maybe one more slot); later
sessions introduce further slots, change scalar ones (moves, new jobs, new partners,
break-ups) and add or retract items, about 2-4 fact events per session. Some slots stay
unmentioned for the whole conversation; unanswerable questions ask about them.

Each event gives a gold fact (ADD for a new value, UPDATE of the current text of a
scalar slot, DELETE of the current text for a retraction), applied in order to the gold
memory (:func:`apply_gold_facts`), and a first-person statement for the dialogue.
"""

from __future__ import annotations

import datetime as dt
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from memenv.constants import MAX_SESSIONS
from memenv.synthetic.dates import (
    MAX_EVENT_OFFSET_DAYS,
    format_date,
    relative_date_phrases,
)
from memenv.synthetic.dialogue import FactEvent, session_turns, statement
from memenv.synthetic.people import Person, draw_people
from memenv.synthetic.questions import make_questions
from memenv.synthetic.sampling import choice, randint
from memenv.synthetic.texts import FACT_TEMPLATES, canonical_fact
from memenv.synthetic.vocabulary import (
    ADD_ONLY_SLOTS,
    ALWAYS_MENTIONED,
    BROTHER_NAMES,
    CITY,
    CLUB,
    CONCERT,
    GLOBALLY_UNIQUE_SLOTS,
    JOB,
    LIST_SLOTS,
    PARTNER,
    PET,
    PET_SPECIES,
    SCALAR_SLOTS,
    SIBLING,
    SISTER_NAMES,
    TRIP,
    VALUE_POOLS,
    VEHICLE,
)
from memenv.types import Conversation, GoldFact, Session

FIRST_YEAR = 2023
# The first session falls in the first FIRST_SESSION_SPREAD_DAYS days of FIRST_YEAR.
FIRST_SESSION_SPREAD_DAYS = 120
MIN_GAP_DAYS, MAX_GAP_DAYS = 3, 20
MIN_EVENTS, MAX_EVENTS = 2, 4          # fact events per session after the first
# Most items a speaker holds at once (None: no limit).
LIST_CAPS: dict[str, int | None] = {CLUB: 4, VEHICLE: 2, PET: 3, TRIP: None, CONCERT: None}
# Relative weights of the events a later session draws: first mentions come early, and
# moves and new jobs are rarer than trips and concerts, so long worlds stay plausible.
INTRO_WEIGHT = 3.0
CHANGE_WEIGHTS = {CITY: 0.5, JOB: 0.5, PARTNER: 0.6, CLUB: 0.8, VEHICLE: 0.5, PET: 0.6,
                  TRIP: 1.0, CONCERT: 1.0}
RETRACT_WEIGHTS = {PARTNER: 0.4, CLUB: 0.6, VEHICLE: 0.5, PET: 0.4}


class _WorldBuilder:
    """Draws one world; used once by :func:`generate_world`."""

    events_per_session = (MIN_EVENTS, MAX_EVENTS)  # fact events per session after the first

    def __init__(self, seed: int, num_sessions: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.num_sessions = num_sessions
        self.conv_id = f"synthetic-{num_sessions}-s{seed}"
        self.memory: list[str] = []
        self.global_used: dict[str, set[str]] = {slot: set() for slot in GLOBALLY_UNIQUE_SLOTS}
        # canonical text of a dated state fact -> (session, speaker, slot, value, detail, date)
        self.dated: dict[str, tuple[int, str, str, str, str, str]] = {}
        self.fact_turns: list[tuple[int, str, str, int | None]] = []
        self.aside_turns: list[tuple[int, str, str, str, str, str]] = []
        self.people = draw_people(self.rng)
        self.change_weights, self.retract_weights = CHANGE_WEIGHTS, RETRACT_WEIGHTS

    # -- values --
    def _free_values(self, person: Person, slot: str,
                     pool: Sequence[str] | None = None) -> list[str]:
        """Values this speaker never had for the slot (nor anybody, where unique).

        Values never come back, so a "when" question names exactly one event.
        """
        used = person.used.get(slot, set()) | self.global_used.get(slot, set())
        return [v for v in (VALUE_POOLS[slot] if pool is None else pool) if v not in used]

    def _pick_value(self, person: Person, slot: str, pool: Sequence[str] | None = None) -> str | None:
        free = self._free_values(person, slot, pool)
        return choice(self.rng, free) if free else None

    def _use(self, person: Person, slot: str, value: str) -> None:
        person.used.setdefault(slot, set()).add(value)
        if slot in self.global_used:
            self.global_used[slot].add(value)

    # -- events --
    def _possible(self, person: Person, touched: set[str]) -> list[tuple[float, str, str]]:
        """(weight, action, slot) for every event this speaker may have now."""
        out: list[tuple[float, str, str]] = []
        free = [s for s in person.pending if s not in touched]
        if free:
            out.append((INTRO_WEIGHT, "intro", ""))
        for slot in SCALAR_SLOTS:
            if slot in touched or slot in person.hidden or slot in person.pending:
                continue
            if self._free_values(person, slot):
                out.append((self.change_weights[slot], "change", slot))
            if slot == PARTNER and PARTNER in person.current:
                out.append((self.retract_weights[slot], "end", slot))
        for slot in LIST_SLOTS:
            if slot in touched or slot in person.hidden or slot in person.pending:
                continue
            held = person.items.get(slot, {})
            cap = LIST_CAPS[slot]
            if (cap is None or len(held) < cap) and self._free_values(person, slot):
                out.append((self.change_weights[slot], "add", slot))
            if held and slot not in ADD_ONLY_SLOTS:
                out.append((self.retract_weights[slot], "remove", slot))
        return out

    def _draw_offset(self, max_offset: int) -> int:
        return randint(self.rng, 0, max_offset + 1)

    def _make_event(self, person: Person, event: str, value: str, session: int,
                    date: dt.date, max_offset: int | None, detail: str = "") -> FactEvent:
        """Turn an event into its gold fact (applied to the gold memory) and statement."""
        rng = self.rng
        slot, _, is_state = FACT_TEMPLATES[event]
        offset = self._draw_offset(max_offset) if max_offset is not None else None
        when = choice(rng, relative_date_phrases(offset, date)) if offset is not None else ""
        date_text = format_date(date - dt.timedelta(days=offset)) if offset is not None else ""
        text = canonical_fact(event, person.name, value, female=person.female, date=date_text,
                              detail=detail)
        key = f"{person.name}/{slot}" + (f"/{value}" if slot in LIST_SLOTS else "")
        if slot in LIST_SLOTS:
            old = person.items.get(slot, {}).get(value)
            op, old_text = ("DELETE", old[0]) if not is_state else ("ADD", "")
        else:
            old = person.current.get(slot)
            if not is_state:
                op, old_text = "DELETE", old[1]
            elif old is not None:
                op, old_text = "UPDATE", old[1]
            else:
                op, old_text = "ADD", ""
        fact = GoldFact(text=text, op=op, speaker=person.name, key=key, old_text=old_text)
        self.memory = list(apply_gold_facts(self.memory, (fact,)))
        # Bookkeeping of the speaker's state.
        if slot in LIST_SLOTS:
            held = person.items.setdefault(slot, {})
            if is_state:
                held[value] = (text, detail)
            else:
                del held[value]
        elif is_state:
            person.current[slot] = (value, text, detail)
        else:
            del person.current[slot]
        if op != "ADD":
            person.changed.add(slot)
        person.touches.setdefault(slot, []).append(session)
        if is_state:
            self._use(person, slot, value)
            if date_text:
                self.dated[text] = (session, person.name, slot, value, detail, date_text)
        return FactEvent(fact, event, statement(rng, event, value, when, detail), offset)

    def _intro(self, person: Person, slot: str, session: int, date: dt.date,
               max_offset: int) -> FactEvent | None:
        """The first mention of a slot (dated only for list items)."""
        if slot in person.pending:
            person.pending.remove(slot)
        if slot == SIBLING:
            relation = "sister" if self.rng.random() < 0.5 else "brother"
            pool = SISTER_NAMES if relation == "sister" else BROTHER_NAMES
            name = self._pick_value(person, SIBLING, pool)
            if name is None:
                return None
            return self._make_event(person, SIBLING, name, session, date, None, relation)
        value = self._pick_value(person, slot)
        if value is None:
            return None
        if slot in (CITY, JOB, PARTNER):
            return self._make_event(person, f"{slot}_intro", value, session, date, None)
        if slot in LIST_SLOTS:
            return self._add_item(person, slot, value, session, date, max_offset)
        return self._make_event(person, slot, value, session, date, None)

    def _add_item(self, person: Person, slot: str, value: str, session: int, date: dt.date,
                  max_offset: int) -> FactEvent:
        detail = choice(self.rng, PET_SPECIES) if slot == PET else ""
        return self._make_event(person, f"{slot}_add", value, session, date, max_offset, detail)

    def _random_event(self, person: Person, touched: set[str], session: int, date: dt.date,
                      max_offset: int) -> FactEvent | None:
        options = self._possible(person, touched)
        if not options:
            return None
        draw = self.rng.random() * sum(w for w, _, _ in options)
        for weight, action, slot in options:
            draw -= weight
            if draw < 0:
                break
        return self._do(action, slot, person, touched, session, date, max_offset)

    def _do(self, action: str, slot: str, person: Person, touched: set[str], session: int,
            date: dt.date, max_offset: int) -> FactEvent | None:
        """The event of a drawn (action, slot)."""
        if action == "intro":
            slot = choice(self.rng, [s for s in person.pending if s not in touched])
            return self._intro(person, slot, session, date, max_offset)
        if action == "change":
            value = self._pick_value(person, slot)
            return self._make_event(person, f"{slot}_change", value, session, date, max_offset)
        if action == "end":
            value = person.current[PARTNER][0]
            return self._make_event(person, "partner_end", value, session, date, max_offset)
        if action == "add":
            return self._add_item(person, slot, self._pick_value(person, slot), session, date,
                                  max_offset)
        held = person.items[slot]
        value = choice(self.rng, list(held))
        return self._make_event(person, f"{slot}_remove", value, session, date, max_offset,
                                held[value][1])

    def _session_events(self, session: int, date: dt.date, max_offset: int) -> list[FactEvent]:
        rng, events = self.rng, []
        if session == 0:
            for person in self.people:
                slots = list(ALWAYS_MENTIONED)
                if person.pending and rng.random() < 0.5:
                    slots.append(choice(rng, person.pending))
                for slot in slots:
                    event = self._intro(person, slot, session, date, max_offset)
                    if event is not None:
                        events.append(event)
            return events
        touched: dict[str, set[str]] = {p.name: set() for p in self.people}
        first = randint(rng, 0, 2)
        for i in range(randint(rng, self.events_per_session[0], self.events_per_session[1] + 1)):
            # Alternate speakers; fall back to the other one when a speaker has no event.
            for person in (self.people[(first + i) % 2], self.people[(first + i + 1) % 2]):
                event = self._random_event(person, touched[person.name], session, date, max_offset)
                if event is not None:
                    touched[person.name].add(self._event_slot(event))
                    events.append(event)
                    break
        return events

    def _event_slot(self, event: FactEvent) -> str:
        """The slot an event touches (a speaker touches a slot at most once per session)."""
        return FACT_TEMPLATES[event.event][0]

    # -- hooks of the hard worlds (memenv.synthetic.hard); nothing in default worlds --
    def _asides(self, session: int, events: Sequence[FactEvent]) -> tuple:
        """Distractor statements of a session (none in default worlds)."""
        return ()

    def _extra_questions(self) -> tuple[list, dict, dict]:
        """Further question drafts, correction sessions per fact text and options of
        :func:`make_questions` (none by default)."""
        return [], {}, {}

    def _extra(self) -> dict:
        """Further entries of ``Conversation.extra`` (none by default)."""
        return {}

    # -- the whole world --
    def build(self) -> Conversation:
        rng = self.rng
        date = dt.date(FIRST_YEAR, 1, 1) + dt.timedelta(days=int(rng.integers(FIRST_SESSION_SPREAD_DAYS)))
        sessions = []
        for i in range(self.num_sessions):
            if i == 0:
                max_offset = MAX_EVENT_OFFSET_DAYS
            else:
                gap = randint(rng, MIN_GAP_DAYS, MAX_GAP_DAYS + 1)
                date += dt.timedelta(days=gap)
                max_offset = min(MAX_EVENT_OFFSET_DAYS, gap - 1)
            events = self._session_events(i, date, max_offset)
            turns, fact_turns = session_turns(rng, i, [p.name for p in self.people], events,
                                              self._asides(i, events), self.aside_turns)
            self.fact_turns += fact_turns
            sessions.append(Session(index=i, date=format_date(date), turns=turns,
                                    gold_facts=tuple(f for e in events for f in e.facts),
                                    gold_memory=tuple(self.memory)))
        return Conversation(
            conv_id=self.conv_id,
            speakers=(self.people[0].name, self.people[1].name),
            sessions=tuple(sessions),
            questions=self._questions(),
            source="synthetic",
            extra={"fact_turns": tuple(self.fact_turns), **self._extra()},
        )

    def _questions(self) -> tuple:
        extra_drafts, corrections, options = self._extra_questions()
        return make_questions(self.rng, self.conv_id, self.num_sessions, self.people, self.memory,
                              self.dated, extra_drafts=extra_drafts, corrections=corrections, **options)


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; ``TypeError`` or ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


DIFFICULTIES = ("default", "hard")

# The builder of each difficulty. Builders register themselves
# (:func:`register_world_builder`): :mod:`memenv.synthetic.hard` registers ``"hard"`` when it
# is imported, and the package ``memenv.synthetic`` imports it, so this module never
# imports the hard builder that subclasses its own.
WORLD_BUILDERS: dict[str, type[_WorldBuilder]] = {"default": _WorldBuilder}


def register_world_builder(difficulty: str, builder: type[_WorldBuilder]) -> None:
    """Make ``generate_world(..., difficulty=difficulty)`` draw its worlds with ``builder``
    (a :class:`_WorldBuilder` subclass, built as ``builder(seed, num_sessions)``)."""
    check_difficulty(difficulty)
    WORLD_BUILDERS[difficulty] = builder


def check_difficulty(difficulty: Any) -> str:
    """``difficulty`` if it is one of ``DIFFICULTIES``; ``ValueError`` naming it otherwise."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    return difficulty


def generate_world(seed: int, num_sessions: int = 8, difficulty: str = "default") -> Conversation:
    """The synthetic world of this seed: a deterministic, pure function of its arguments.

    ``Conversation.extra["fact_turns"]`` lists ``(session, dia_id, canonical fact text,
    offset in days or None)`` for every gold fact a turn states. ``difficulty="hard"``
    draws a hard world (:mod:`memenv.synthetic.hard`); default worlds never change with it.
    """
    seed = check_int("seed", seed, 0)
    num_sessions = check_int("num_sessions", num_sessions, 1, MAX_SESSIONS)
    builder = WORLD_BUILDERS.get(check_difficulty(difficulty))
    if builder is None:  # only when this module was loaded without its package
        raise RuntimeError(f"no world builder is registered for difficulty {difficulty!r}: import memenv.synthetic")
    return builder(seed, num_sessions).build()


def apply_gold_facts(memory: Sequence[str], facts: Sequence[GoldFact]) -> tuple[str, ...]:
    """The memory texts after applying gold facts in order.

    ADD appends the text, UPDATE replaces ``old_text`` in place, DELETE removes
    ``old_text``; ``ValueError`` when an UPDATE or DELETE names a text not in memory.
    """
    bank = list(memory)
    for fact in facts:
        if fact.op == "ADD":
            bank.append(fact.text)
        elif fact.op in ("UPDATE", "DELETE"):
            if fact.old_text not in bank:
                raise ValueError(f"{fact.op} of a text not in memory: {fact.old_text!r}")
            i = bank.index(fact.old_text)
            if fact.op == "UPDATE":
                bank[i] = fact.text
            else:
                del bank[i]
        else:
            raise ValueError(f"unknown gold op {fact.op!r}; expected ADD, UPDATE or DELETE")
    return tuple(bank)
