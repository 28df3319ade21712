"""Hard worlds (``difficulty="hard"``): history, corrections, third parties, distractor talk.

A hard world is drawn like a default one (same speakers, slots, dates and dialogue style)
with these differences, so that a manager that blindly overwrites, or blindly adds, falls
well short of one that keeps the gold memory:

- **History is kept, merged.** A change of a home, job or partner merges the state it
  ends into the slot's one *record text*, which holds its past and present values
  ("Alice's homes: Paris until 3 May 2023; Lyon since 3 May 2023."); a retraction (a
  break-up, quitting a club, selling a car, giving a pet away) merges the ended state into
  the slot's *history text* ("Alice's past clubs: chess club from 1 May 2023 until 4 July
  2023.", see ``texts.HISTORY_NOUNS``). Trips and concerts, from the second on, merge into
  one *list text* per speaker ("Alice's trips: Peru on 3 May 2023; Chile on 5 June
  2023."). These texts are the manager's own writing, not facts the dialogue states: the
  gold facts of the session (``Conversation.extra["stated_facts"]``, what
  ``info["gold"]["facts"]`` gives) are the new state, item or retraction, and the gold
  operations UPDATE the slot's text to the merged one (see ``HardWorldBuilder._end_state``,
  ``_end_record`` and ``_merge_item``). So one memory entry holds what a manager that
  writes only the facts' own texts needs several for: under the budget it must overwrite
  (losing history) or drop facts. The statement of a change names the value it ends ("I
  left Paris and moved to Lyon yesterday").
- **Corrections** of an earlier session's statement ("I got a date wrong last time: I
  adopted Milo on 5 May 2023, not on 4 May 2023"; "on 3 June 2023 I travelled to Peru,
  not Chile": dates of any dated state, values of list items): gold op UPDATE of the
  text being corrected, or of the entry inside a record or list text.
- **Third parties**: "my cousin moved to Rome last Tuesday" is extracted as a fact about
  the cousin ("Alice's cousin moved to Rome on 2 May 2023.", in ``stated_facts``) but the
  gold manager keeps nothing: the memory is about the two speakers, and the news would
  only take room under the budget. Updating the speaker's city with it is wrong too.
- **Distractor talk** that looks like a fact but is none: hypotheticals and plans that
  fall through ("I thought about moving to Berlin, but we stayed"), negations ("I've
  never been to Peru"). No gold fact; ``Conversation.extra["aside_turns"]`` lists them as
  ``(session, dia_id, kind, speaker, slot, value)``.
- **More questions**: history (``"Where did Alice live before moving to Lyon?"``,
  ``"Which clubs has Alice ever been a member of?"``), counting (``"How many jobs has Bob
  had?"``, ``"How many countries has Bob visited?"``) and ordering (``"Did Alice adopt
  Milo before or after she moved to Lyon?"``: ``"before"`` or ``"after"``), next to the
  default kinds. Their answers come from the generator's own timeline of each slot.
- **A memory budget**: ``Conversation.extra["memory_budget"]`` is the largest gold memory
  of the world plus ``BUDGET_SLACK`` entries (the gold memory merges history and lists, so
  it stays small; a memory that adds every fact outgrows it); ``MemorySessionEnv(memory_budget="world")``
  (the ``MemorySessionHard*`` ids) refuses a manage action that would leave more.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from memenv.synthetic.dates import format_date, parse_date, relative_date_phrases
from memenv.synthetic.dialogue import (
    ASIDE_TEMPLATES,
    CORRECTION_DATE_TEMPLATES,
    CORRECTION_PAST,
    CORRECTION_VALUE_TEMPLATES,
    HARD_CHANGE_TEMPLATES,
    THIRD_PARTY_TEMPLATES,
    Aside,
    FactEvent,
    statement,
)
from memenv.synthetic.people import Person
from memenv.synthetic.sampling import choice, randint
from memenv.synthetic.texts import (
    FACT_TEMPLATES,
    HARD_FACT_TEMPLATES,
    PastState,
    article,
    canonical_fact,
    canonical_hard_fact,
    hard_question_text,
    history_text,
    list_text,
    LIST_NOUNS,
    RECORD_SLOTS,
    record_text,
    order_question_text,
    parse_fact,
)
from memenv.synthetic.vocabulary import (
    CITIES,
    CITY,
    CLUB,
    CONCERT,
    JOB,
    KIN,
    LIST_SLOTS,
    PARTNER,
    PET,
    SCALAR_SLOTS,
    TRIP,
    VALUE_POOLS,
    VEHICLE,
)
from memenv.synthetic.world import _WorldBuilder, apply_gold_facts, register_world_builder
from memenv.types import COUNTING, HISTORY, ORDERING, GoldFact, Question

# Weights of a hard world's events: more changes and retractions than a default world, so
# slots have a history, plus corrections and third-party facts.
HARD_CHANGE_WEIGHTS = {CITY: 1.0, JOB: 1.0, PARTNER: 0.8, CLUB: 0.8, VEHICLE: 0.6, PET: 0.6,
                       TRIP: 0.8, CONCERT: 0.8}
HARD_RETRACT_WEIGHTS = {PARTNER: 0.7, CLUB: 1.0, VEHICLE: 0.8, PET: 0.8}
CORRECTION_WEIGHT = 1.0
# Slots whose corrections may fix the value (else the date): the items of list slots.
VALUE_CORRECTION_SLOTS = (CLUB, VEHICLE, PET, TRIP, CONCERT)
THIRD_PARTY_WEIGHT = 3.0
HARD_MIN_EVENTS, HARD_MAX_EVENTS = 4, 6   # fact events per session after the first
MAX_ASIDES = 2                             # distractor statements per session, at most
ORDER_QUESTIONS_PER_PERSON = 3
# Unanswerable questions per world, at most (every manager answers them, so fewer than in
# default worlds: the score is about what the memory keeps).
HARD_MAX_UNANSWERABLE = 2
# The world's memory budget: its largest gold memory plus this many entries.
BUDGET_SLACK = 0
_THIRD_SLOTS = (CITY, JOB, CLUB, VEHICLE)


@dataclass
class _Stint:
    """One value a speaker's slot held, from the generator's own timeline."""

    value: str
    start: str                       # date it began ("" for an undated introduction)
    stated: list[int]                # sessions that stated or corrected its start
    detail: str = ""
    end: str | None = None           # date it ended (None while it holds)
    ended: int | None = None         # session that ended it
    text: str = ""                   # its current state text (while it holds)
    sessions: list[int] = field(default_factory=list)


class HardWorldBuilder(_WorldBuilder):
    """Draws one hard world; see the module docstring."""

    events_per_session = (HARD_MIN_EVENTS, HARD_MAX_EVENTS)

    def __init__(self, seed: int, num_sessions: int) -> None:
        super().__init__(seed, num_sessions)
        self.conv_id = f"synthetic-hard-{num_sessions}-s{seed}"
        self.change_weights, self.retract_weights = HARD_CHANGE_WEIGHTS, HARD_RETRACT_WEIGHTS
        # dated state text -> (session, session date, max offset): the window a correction
        # may move its date in (never before the previous session, never after its own).
        self.windows: dict[str, tuple[int, dt.date, int]] = {}
        self.corrections: dict[str, tuple[int, ...]] = {}
        self.corrected: set[str] = set()
        self.timeline: dict[tuple[str, str], list[_Stint]] = {}
        self.kin_used: dict[str, set[tuple[str, str]]] = {p.name: set() for p in self.people}
        self.max_memory = 0
        # (speaker, slot) -> (its history text, the past states it lists)
        self.histories: dict[tuple[str, str], tuple[str, list[PastState]]] = {}
        # (speaker, slot) -> (value, date) of each item of an add-only slot (LIST_NOUNS),
        # in the order added: one state text, then one merged list text from the second on.
        self.lists: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._session = 0

    # -- events --
    def _make_event(self, person: Person, event: str, value: str, session: int,
                    date: dt.date, max_offset: int | None, detail: str = "") -> FactEvent:
        slot, _, is_state = FACT_TEMPLATES[event]
        if slot in LIST_SLOTS:
            old = person.items.get(slot, {}).get(value) if not is_state else None
            old_value, old_text, old_detail = (value, old[0], old[1]) if old else (None, "", "")
        else:
            old = person.current.get(slot)
            old_value, old_text, old_detail = old if old else (None, "", "")
        if old_value is None:  # an introduction or an addition: as in default worlds
            fact_event = super()._make_event(person, event, value, session, date, max_offset, detail)
            self._begin(person, slot, value, detail, fact_event.fact.text, session, date, max_offset)
            if slot in LIST_NOUNS:
                return self._merge_item(person, slot, fact_event)
            if slot in RECORD_SLOTS and (person.name, slot) in self.histories:
                # a new partner after a break-up: the history text becomes the record text
                history = self.histories[(person.name, slot)][0]
                self.memory.remove(fact_event.fact.text)
                op = GoldFact(text=self._record_slot_text(person, slot), op="UPDATE", speaker=person.name,
                              key=f"{person.name}/{slot}", old_text=history)
                self.memory = list(self._apply((op,)))
                return FactEvent(op, fact_event.event, fact_event.statement, fact_event.offset,
                                 stated=(fact_event.fact.text,))
            return fact_event
        return self._end_state(person, event, slot, value, detail, old_value, old_text, old_detail,
                               session, date, max_offset)

    def _slot_text(self, person: Person, slot: str) -> str:
        """The memory text of an add-only slot's items: the state text of a single item,
        else the list text that merges them."""
        entries = self.lists[(person.name, slot)]
        if len(entries) == 1:
            value, date_text = entries[0]
            return canonical_fact(f"{slot}_add", person.name, value, female=person.female, date=date_text)
        return list_text(person.name, slot, entries)

    def _merge_item(self, person: Person, slot: str, fact_event: FactEvent) -> FactEvent:
        """A new trip or concert: from the second item on, the gold op UPDATEs the slot's
        text (the first item's state text, or the list text) to the list text with it added;
        the statement still states the item's own state text."""
        added = parse_fact(fact_event.fact.text)
        entries = self.lists.setdefault((person.name, slot), [])
        if not entries:
            entries.append((added.value, added.date))
            return fact_event
        old_text = self._slot_text(person, slot)
        self.memory.remove(fact_event.fact.text)  # the ADD the default world would make
        entries.append((added.value, added.date))
        merge = GoldFact(text=self._slot_text(person, slot), op="UPDATE", speaker=person.name,
                         key=f"{person.name}/{slot}", old_text=old_text)
        self.memory = list(self._apply((merge,)))
        return FactEvent(merge, fact_event.event, fact_event.statement, fact_event.offset,
                         stated=(fact_event.fact.text,))

    def _expanded_memory(self) -> list[str]:
        """The gold memory with each list text replaced by its items' state texts, and each
        record text by its history and state texts (what the question drafts read)."""
        items = {}
        for person in self.people:
            for slot in LIST_NOUNS:
                entries = self.lists.get((person.name, slot), [])
                if len(entries) > 1:
                    items[self._slot_text(person, slot)] = [
                        canonical_fact(f"{slot}_add", person.name, v, female=person.female, date=d)
                        for v, d in entries]
        for person in self.people:
            for slot in RECORD_SLOTS:
                text = self._record_slot_text(person, slot)
                if text is not None and (person.name, slot) in self.histories and slot in person.current:
                    items[text] = [self.histories[(person.name, slot)][0], person.current[slot][1]]
        return [t for text in self.memory for t in items.get(text, [text])]

    def _begin(self, person: Person, slot: str, value: str, detail: str, text: str, session: int,
               date: dt.date, max_offset: int | None) -> None:
        start = parse_fact(text).date
        if start and max_offset is not None:
            self.windows[text] = (session, date, max_offset)
        self.timeline.setdefault((person.name, slot), []).append(
            _Stint(value, start, [session], detail, text=text, sessions=[session]))

    def _stint(self, person: Person, slot: str, value: str) -> _Stint:
        return next(s for s in self.timeline[(person.name, slot)] if s.value == value and s.end is None)

    def _end_state(self, person: Person, event: str, slot: str, value: str, detail: str, old_value: str,
                   old_text: str, old_detail: str, session: int, date: dt.date,
                   max_offset: int) -> FactEvent:
        """A change or a retraction: the old state is merged into the slot's history text.

        A change UPDATEs the old state's text to the new state's, then ADDs the history
        text (first past state) or UPDATEs it (the merge). A retraction UPDATEs the old
        state's text to the history text when there is none yet, else UPDATEs the history
        text and DELETEs the old state's text.
        """
        rng = self.rng
        is_state = FACT_TEMPLATES[event][2]
        before = self._record_slot_text(person, slot) if slot in RECORD_SLOTS else None
        offset = self._draw_offset(max_offset)
        when = choice(rng, relative_date_phrases(offset, date))
        date_text = format_date(date - dt.timedelta(days=offset))
        start = parse_fact(old_text).date
        old_history, states = self.histories.get((person.name, slot), ("", []))
        states = states + [PastState(old_value, start, date_text, old_detail if slot == PET else "")]
        new_history = history_text(person.name, slot, states)
        self.histories[(person.name, slot)] = (new_history, states)
        state_key = f"{person.name}/{slot}" + (f"/{old_value}" if slot in LIST_SLOTS else "")
        history_key = f"{person.name}/{slot}/past"
        if old_history:
            merge = GoldFact(text=new_history, op="UPDATE", speaker=person.name, key=history_key,
                             old_text=old_history)
        else:
            merge = GoldFact(text=new_history, op="ADD", speaker=person.name, key=history_key)
        stint = self._stint(person, slot, old_value)
        stint.end, stint.ended, stint.text = date_text, session, ""
        stint.sessions.append(session)
        person.changed.add(slot)
        person.touches.setdefault(slot, []).append(session)
        if before is not None:  # home, job, partner: one text holds the slot's past and present
            return self._end_record(person, event, slot, value, detail, old_value, old_detail, before,
                                    new_history, session, date, max_offset, offset, when, date_text)
        if not is_state:  # a retraction
            said = canonical_fact(event, person.name, old_value, female=person.female, date=date_text,
                                  detail=old_detail)
            if old_history:
                ops = (merge, GoldFact(text=said, op="DELETE", speaker=person.name, key=state_key,
                                       old_text=old_text))
            else:
                ops = (GoldFact(text=new_history, op="UPDATE", speaker=person.name, key=history_key,
                                old_text=old_text),)
            self.memory = list(self._apply(ops))
            if slot in LIST_SLOTS:
                del person.items[slot][old_value]
            else:
                del person.current[slot]
            return FactEvent(ops[0], event, statement(rng, event, old_value, when, old_detail), offset,
                             extra_facts=ops[1:], before=False, stated=(said,))
        text = canonical_fact(event, person.name, value, female=person.female, date=date_text, detail=detail)
        new = GoldFact(text=text, op="UPDATE", speaker=person.name, key=state_key, old_text=old_text)
        self.memory = list(self._apply((new, merge)))
        person.current[slot] = (value, text, detail)
        self._use(person, slot, value)
        self.dated[text] = (session, person.name, slot, value, detail, date_text)
        self._begin(person, slot, value, detail, text, session, date, max_offset)
        said = choice(rng, HARD_CHANGE_TEMPLATES[event]).format(
            value=value, old=old_value, when=when, a_value=f"{article(value)} {value}",
            a_old=f"{article(old_value)} {old_value}")
        return FactEvent(new, event, said, offset, extra_facts=(merge,), before=False, stated=(text,))

    def _end_record(self, person: Person, event: str, slot: str, value: str, detail: str, old_value: str,
                    old_detail: str, before: str, new_history: str, session: int, date: dt.date,
                    max_offset: int, offset: int, when: str, date_text: str) -> FactEvent:
        """A change or a retraction of a home, job or partner: one UPDATE of the slot's text
        (its state or record text) to the record text with the new value, or to the history
        text when the value ends (a break-up)."""
        rng = self.rng
        if not FACT_TEMPLATES[event][2]:
            said = canonical_fact(event, person.name, old_value, female=person.female, date=date_text,
                                  detail=old_detail)
            op = GoldFact(text=new_history, op="UPDATE", speaker=person.name, key=f"{person.name}/{slot}/past",
                          old_text=before)
            self.memory = list(self._apply((op,)))
            del person.current[slot]
            return FactEvent(op, event, statement(rng, event, old_value, when, old_detail), offset,
                             stated=(said,))
        text = canonical_fact(event, person.name, value, female=person.female, date=date_text, detail=detail)
        person.current[slot] = (value, text, detail)
        self._use(person, slot, value)
        self.dated[text] = (session, person.name, slot, value, detail, date_text)
        self._begin(person, slot, value, detail, text, session, date, max_offset)
        op = GoldFact(text=self._record_slot_text(person, slot), op="UPDATE", speaker=person.name,
                      key=f"{person.name}/{slot}", old_text=before)
        self.memory = list(self._apply((op,)))
        said = choice(rng, HARD_CHANGE_TEMPLATES[event]).format(
            value=value, old=old_value, when=when, a_value=f"{article(value)} {value}",
            a_old=f"{article(old_value)} {old_value}")
        return FactEvent(op, event, said, offset, stated=(text,))

    def _record_slot_text(self, person: Person, slot: str) -> str | None:
        """The memory text of a home, job or partner: its state text, its history text (no
        current value), the record text of both, or None (never mentioned)."""
        history = self.histories.get((person.name, slot))
        current = person.current.get(slot)
        if history is None:
            return current[1] if current else None
        if current is None:
            return history[0]
        return record_text(person.name, slot, history[1], current[0], parse_fact(current[1]).date)

    def _apply(self, facts: Sequence[GoldFact]) -> tuple[str, ...]:
        return apply_gold_facts(self.memory, facts)

    def _correctable(self, person: Person, touched: set[str], session: int) -> list[tuple[str, str]]:
        """(slot, text) of the speaker's dated state texts an earlier session stated, never corrected."""
        texts = [(slot, held[1]) for slot, held in person.current.items()]
        texts += [(slot, text) for slot, items in person.items.items() for text, _ in items.values()]
        out = []
        for slot, text in texts:
            window = self.windows.get(text)
            if slot in touched or window is None or window[0] >= session or text in self.corrected:
                continue
            value_ok = slot in VALUE_CORRECTION_SLOTS and self._free_values(person, slot)
            if window[2] >= 1 or value_ok:
                out.append((slot, text))
        return out

    def _possible(self, person: Person, touched: set[str]) -> list[tuple[float, str, str]]:
        out = super()._possible(person, touched)
        if self._correctable(person, touched, self._session):
            out.append((CORRECTION_WEIGHT, "correct", ""))
        for slot in _THIRD_SLOTS:
            if slot == JOB and not self._free_values(person, JOB):
                continue
            if slot in (CLUB, VEHICLE) and not person.items.get(slot):
                continue  # a third party leaves a club, or sells a car, the speaker has too
            free_kin = any((kin, slot) not in self.kin_used[person.name] for kin in KIN)
            if free_kin and f"third-{slot}" not in touched:
                out.append((THIRD_PARTY_WEIGHT / len(_THIRD_SLOTS), "third", slot))
        return out

    def _session_events(self, session: int, date: dt.date, max_offset: int) -> list[FactEvent]:
        self._session = session
        return super()._session_events(session, date, max_offset)

    def _event_slot(self, event: FactEvent) -> str:
        if event.event.startswith("third_"):
            return f"third-{HARD_FACT_TEMPLATES[event.event][0]}"
        if event.event == "correction":
            return parse_fact(event.fact.text).slot
        return FACT_TEMPLATES[event.event][0]

    def _do(self, action: str, slot: str, person: Person, touched: set[str], session: int,
            date: dt.date, max_offset: int) -> FactEvent | None:
        if action == "correct":
            return self._correction(person, touched, session)
        if action == "third":
            return self._third_party(person, slot, date, max_offset)
        return super()._do(action, slot, person, touched, session, date, max_offset)

    def _correction(self, person: Person, touched: set[str], session: int) -> FactEvent:
        """An earlier session's dated statement corrected: its date, or (trips, concerts) its value."""
        rng = self.rng
        slot, old_text = choice(rng, self._correctable(person, touched, session))
        parsed = parse_fact(old_text)
        first_session, session_date, max_offset = self.windows[old_text]
        value_ok = slot in VALUE_CORRECTION_SLOTS and self._free_values(person, slot)
        by_value = bool(value_ok) and (max_offset < 1 or rng.random() < 0.5)
        value, date_text = parsed.value, parsed.date
        if by_value:
            value = choice(rng, self._free_values(person, slot))
            said = choice(rng, CORRECTION_VALUE_TEMPLATES[slot]).format(
                date=date_text, new=value, old=parsed.value, species=parsed.detail,
                a_new=f"{article(value)} {value}", a_old=f"{article(parsed.value)} {parsed.value}")
        else:
            old_offset = (session_date - parse_date(parsed.date)).days
            offset = choice(rng, [o for o in range(max_offset + 1) if o != old_offset])
            date_text = format_date(session_date - dt.timedelta(days=offset))
            past = CORRECTION_PAST[slot].format(value=value, a_value=f"{article(value)} {value}")
            said = choice(rng, CORRECTION_DATE_TEMPLATES).format(past=past, new=date_text, old=parsed.date)
        text = canonical_fact(parsed.event, person.name, value, female=person.female, date=date_text,
                              detail=parsed.detail)
        key = f"{person.name}/{slot}" + (f"/{value}" if slot in LIST_SLOTS else "")
        fact = GoldFact(text=text, op="UPDATE", speaker=person.name, key=key, old_text=old_text)
        stated = None
        if slot in LIST_NOUNS:  # the item's entry is rewritten (in the list text, if any)
            entries = self.lists[(person.name, slot)]
            before = self._slot_text(person, slot)
            entries[entries.index((parsed.value, parsed.date))] = (value, date_text)
            if len(entries) > 1:
                fact = GoldFact(text=self._slot_text(person, slot), op="UPDATE", speaker=person.name,
                                key=f"{person.name}/{slot}", old_text=before)
                stated = (text,)
        record = self._record_slot_text(person, slot) if slot in RECORD_SLOTS else None
        if record is None or record == old_text:
            self.memory = list(self._apply((fact,)))
        stint = self._stint(person, slot, parsed.value)
        stint.value, stint.start, stint.text = value, date_text, text
        stint.stated.append(session)
        stint.sessions.append(session)
        if slot in LIST_SLOTS:
            del person.items[slot][parsed.value]
            person.items[slot][value] = (text, parsed.detail)
        else:
            person.current[slot] = (value, text, parsed.detail)
        if record is not None and record != old_text:  # the current entry of a record text
            history, states = self.histories[(person.name, slot)]
            if states[-1].end == parsed.date:  # the change ended the previous value that day
                states = states[:-1] + [dataclasses.replace(states[-1], end=date_text)]
                self.histories[(person.name, slot)] = (history_text(person.name, slot, states), states)
            fact = GoldFact(text=self._record_slot_text(person, slot), op="UPDATE", speaker=person.name,
                            key=key, old_text=record)
            self.memory = list(self._apply((fact,)))
            stated = (text,)
        self._use(person, slot, value)
        person.changed.add(slot)
        person.touches.setdefault(slot, []).append(session)
        self.windows[text] = (first_session, session_date, max_offset)
        self.corrections[text] = self.corrections.get(old_text, ()) + (session,)
        self.corrected.add(text)
        self.dated[text] = (first_session, person.name, slot, value, parsed.detail, date_text)
        return FactEvent(fact, "correction", said, None, stated=stated)

    def _third_party(self, person: Person, slot: str, date: dt.date, max_offset: int) -> FactEvent:
        """A fact about someone the speaker knows: a move, a new job, quitting a club, selling a car."""
        rng = self.rng
        kin = choice(rng, [k for k in KIN if (k, slot) not in self.kin_used[person.name]])
        self.kin_used[person.name].add((kin, slot))
        if slot == CITY:
            here = person.current.get(CITY, ("",))[0]
            value = choice(rng, [c for c in CITIES if c != here])
        elif slot == JOB:
            value = choice(rng, self._free_values(person, JOB))
            self.global_used[JOB].add(value)  # jobs name their holder in multi-hop questions
        else:  # "my cousin quit the chess club" (the speaker stays)
            value = choice(rng, list(person.items[slot]))
        offset = self._draw_offset(max_offset)
        when = choice(rng, relative_date_phrases(offset, date))
        date_text = format_date(date - dt.timedelta(days=offset))
        event = f"third_{slot}"
        text = canonical_hard_fact(event, person.name, value, date=date_text, detail=kin)
        fact = GoldFact(text=text, op="ADD", speaker=person.name, key=f"{person.name}/{kin}/{slot}")
        said = choice(rng, THIRD_PARTY_TEMPLATES[event]).format(kin=kin, value=value, when=when,
                                                                a_value=f"{article(value)} {value}")
        # extracted, never stored: the memory is about the two speakers
        return FactEvent(fact, event, said, offset, stated=(text,), stored=False)

    # -- hooks --
    def _asides(self, session: int, events: Sequence[FactEvent]) -> tuple[Aside, ...]:
        self.max_memory = max(self.max_memory, len(self.memory))
        if session == 0:
            return ()
        rng, asides = self.rng, []
        for _ in range(randint(self.rng, 0, MAX_ASIDES + 1)):
            person = self.people[randint(rng, 0, 2)]
            kind, slot = choice(rng, list(ASIDE_TEMPLATES))
            pool = [v for v in VALUE_POOLS[slot] if v not in person.used.get(slot, set())
                    and v not in self.global_used.get(slot, set())]
            if not pool:
                continue
            value = choice(rng, pool)
            text = choice(rng, ASIDE_TEMPLATES[(kind, slot)]).format(value=value,
                                                                    a_value=f"{article(value)} {value}")
            asides.append(Aside(person.name, text, kind, slot, value))
        return tuple(asides)

    def _extra(self) -> dict:
        stated: list[list[tuple[str, str]]] = [[] for _ in range(self.num_sessions)]
        for session, _, text, _ in self.fact_turns:
            stated[session].append((text, parse_fact(text).speaker))
        return {"difficulty": "hard", "aside_turns": tuple(self.aside_turns),
                "stated_facts": tuple(tuple(s) for s in stated),
                "memory_budget": max(self.max_memory, len(self.memory)) + BUDGET_SLACK}

    def _questions(self) -> tuple:
        final = self.memory
        self.memory = self._expanded_memory()
        try:
            return super()._questions()
        finally:
            self.memory = final

    def _extra_questions(self) -> tuple[list[Question], dict[str, tuple[int, ...]], dict]:
        return (hard_drafts(self.rng, self.people, self.timeline), dict(self.corrections),
                {"max_unanswerable": HARD_MAX_UNANSWERABLE})


def _sessions(*stints: _Stint, ends: bool = True) -> tuple[int, ...]:
    """Evidence sessions of stints: where each was stated or corrected (and ended)."""
    out = set()
    for stint in stints:
        out.update(stint.stated)
        if ends and stint.ended is not None:
            out.add(stint.ended)
    return tuple(sorted(out))


def hard_drafts(rng, people: Sequence[Person], timeline: dict[tuple[str, str], list[_Stint]]) -> list[Question]:
    """History, counting and ordering questions of a hard world, from its final timeline."""
    drafts: list[Question] = []
    for person in people:
        who = ("speaker", person.name)
        for slot in SCALAR_SLOTS + LIST_SLOTS:
            stints = timeline.get((person.name, slot), [])
            if len(stints) < 2:
                continue
            stints = sorted(stints, key=lambda s: parse_date(s.start) if s.start else dt.date.min)
            meta = (who, ("slot", slot))
            if slot in SCALAR_SLOTS:
                i = randint(rng, 1, len(stints))
                text = hard_question_text(rng, "previous", slot, person.name, stints[i].value)
                drafts.append(Question("", text, stints[i - 1].value, HISTORY,
                                       _sessions(stints[i - 1], stints[i], ends=False), meta))
            if slot not in (TRIP, CONCERT):
                text = hard_question_text(rng, "ever", slot, person.name)
                drafts.append(Question("", text, " and ".join(s.value for s in stints), HISTORY,
                                       _sessions(*stints), meta))
            text = hard_question_text(rng, "count", slot, person.name)
            drafts.append(Question("", text, str(len(stints)), COUNTING, _sessions(*stints), meta))
        events = [(slot, s) for slot in SCALAR_SLOTS + LIST_SLOTS
                  for s in timeline.get((person.name, slot), []) if s.start]
        pairs = [(a, b) for i, a in enumerate(events) for b in events[i + 1:]
                 if a[1].start != b[1].start and a[1].stated[0] != b[1].stated[0]]
        if not pairs:
            continue
        picks = rng.choice(len(pairs), size=min(ORDER_QUESTIONS_PER_PERSON, len(pairs)), replace=False)
        for k in sorted(int(p) for p in picks):
            first, second = pairs[k] if rng.random() < 0.5 else pairs[k][::-1]
            text = order_question_text(rng, person.name, person.female, (first[0], first[1].value),
                                       (second[0], second[1].value))
            answer = "before" if parse_date(first[1].start) < parse_date(second[1].start) else "after"
            drafts.append(Question("", text, answer, ORDERING, _sessions(first[1], second[1], ends=False),
                                   (who, ("slot", first[0]), ("value", first[1].value),
                                    ("other_slot", second[0]), ("other_value", second[1].value))))
    return drafts


register_world_builder("hard", HardWorldBuilder)
