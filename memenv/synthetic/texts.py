"""Canonical fact and question texts: one template each, written and read back.

A fact's canonical text (``GoldFact.text``) is third person with the absolute date, and
follows exactly one template per event (``FACT_TEMPLATES``), so :func:`parse_fact` reads
it back; questions follow ``QUESTION_TEMPLATES`` and :func:`parse_question` reads them
back. The scripted reader in :mod:`memenv.scripted` is built on these two parsers.

The contract the reader relies on (every template here is one): *state* texts say what
holds now (``FACT_TEMPLATES`` entries marked as state); *retraction* texts report an end
and are never read; hard worlds add one *history* text per speaker and slot
("Alice's past homes: Paris until 3 May 2023; Lyon from 3 May 2023 until 4 July 2023.",
nouns in ``HISTORY_NOUNS``, entries "<value>[ from <date>] until <date>" joined by "; ",
pets "<species> <name> ..."), one *record* text per home, job or partner with a past and a
present value (history entries, then "<value> since <date>": "Alice's homes: Paris until 3
May 2023; Lyon since 3 May 2023.", read as the history text plus the state text of the
change), one *list* text per speaker's trips or concerts once there are two ("Alice's
trips: Peru on 3 May 2023; Chile on 5 June 2023.", each entry read as its item's state
text), and *third-party* texts ("Alice's cousin moved to Rome on 2
May 2023.", ``HARD_FACT_TEMPLATES``) that are never read as the speaker's. Dates are
absolute, "8 May 2023". :func:`parse_fact` returns the category of each. Questions follow
``QUESTION_TEMPLATES`` (slot, when, multi-hop) and ``HARD_QUESTION_TEMPLATES`` (previous,
ever, count, order).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memenv.synthetic.sampling import choice
from memenv.synthetic.vocabulary import (
    KIN,
    CITY,
    CLUB,
    CONCERT,
    FOOD,
    INSTRUMENT,
    JOB,
    PARTNER,
    PET,
    PET_SPECIES,
    SIBLING,
    TRIP,
    VEHICLE,
)

# ------------------------------------------------------------------- fact texts --
# event -> (slot, template, is_state). A "state" text says what holds now (an intro, a
# change, an addition); the others report a retraction. The scripted reader reads only
# state texts, so a memory that keeps stale entries answers with several values.
FACT_TEMPLATES: dict[str, tuple[str, str, bool]] = {
    "city_intro": (CITY, "{s} lives in {value}.", True),
    "city_change": (CITY, "{s} moved to {value} on {date}.", True),
    "job_intro": (JOB, "{s} works as {article} {value}.", True),
    "job_change": (JOB, "{s} started working as {article} {value} on {date}.", True),
    "partner_intro": (PARTNER, "{s}'s partner is {value}.", True),
    "partner_change": (PARTNER, "{s} started dating {value} on {date}.", True),
    "partner_end": (PARTNER, "{s} broke up with {value} on {date}.", False),
    "club_add": (CLUB, "{s} joined the {value} on {date}.", True),
    "club_remove": (CLUB, "{s} quit the {value} on {date}.", False),
    "vehicle_add": (VEHICLE, "{s} bought {article} {value} on {date}.", True),
    "vehicle_remove": (VEHICLE, "{s} sold {pronoun} {value} on {date}.", False),
    "pet_add": (PET, "{s} adopted {article} {species} named {value} on {date}.", True),
    "pet_remove": (PET, "{s} gave {pronoun} {species} {value} to a friend on {date}.", False),
    "trip_add": (TRIP, "{s} travelled to {value} on {date}.", True),
    "concert_add": (CONCERT, "{s} saw {value} in concert on {date}.", True),
    "sibling": (SIBLING, "{s}'s {relation} is {value}.", True),
    "instrument": (INSTRUMENT, "{s} plays the {value}.", True),
    "food": (FOOD, "{s}'s favourite food is {value}.", True),
}

_PLACEHOLDER_RE = {
    "s": r"(?P<s>[A-Z][a-z]+)",
    "value": r"(?P<value>.+?)",
    "name": r"(?P<value>[A-Z][a-z]+)",
    "date": r"(?P<date>\d{1,2} [A-Z][a-z]+ \d{4})",
    "article": r"(?:a|an)",
    "pronoun": r"(?:her|his)",
    "species": r"(?P<species>" + "|".join(PET_SPECIES) + r")",
    "relation": r"(?P<relation>sister|brother)",
    "start": r"(?P<start>\d{1,2} [A-Z][a-z]+ \d{4})",
    "kin": r"(?P<kin>" + "|".join(KIN) + r")",
}


def _template_regex(template: str) -> re.Pattern:
    """A full-match regex for a template; the final punctuation mark is optional."""
    body = template[:-1] if template[-1] in ".?" else template
    parts = re.split(r"(\{\w+\})", body)
    regex = "".join(_PLACEHOLDER_RE[p[1:-1]] if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(regex + r"[.?]?")


_FACT_RES = tuple((event, _template_regex(template)) for event, (_, template, _) in FACT_TEMPLATES.items())


@dataclass(frozen=True)
class ParsedFact:
    """A canonical fact text read back: who, which slot, which value, when."""

    event: str
    slot: str
    speaker: str
    value: str
    date: str
    is_state: bool
    # Pet species or sibling relation ("sister" / "brother"), third party's relation to
    # the speaker ("cousin", ...), else "".
    detail: str = ""
    # "state" (holds now), "retraction", "history" (the past states of a slot, hard
    # worlds), "record" (past and current values of a scalar slot, hard worlds), "list"
    # (the items of an add-only slot, hard worlds) or "third-party" (about someone the
    # speaker knows, hard worlds).
    category: str = "state"
    # History texts: the past states, in the order they ended (``value`` is then "").
    past: tuple["PastState", ...] = ()
    # List texts (hard worlds: "Alice's trips: Peru on 3 May 2023; ..."): one state fact
    # per item, as its own canonical text would read; record texts: their history fact,
    # then the state fact of the current value (``value`` is then "").
    items: tuple["ParsedFact", ...] = ()


PARSE_CACHE_SIZE = 1 << 16


def parse_fact(text: str) -> ParsedFact | None:
    """Read a canonical fact text (``FACT_TEMPLATES``); None when it follows no template."""
    if not isinstance(text, str):
        return None
    return _parse_fact(text)


# Readers parse the same memory texts for question after question.
@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_fact(text: str) -> ParsedFact | None:
    stripped = text.strip()
    for event, regex in _FACT_RES:
        match = regex.fullmatch(stripped)
        if match:
            groups = match.groupdict()
            slot, _, is_state = FACT_TEMPLATES[event]
            return ParsedFact(event, slot, groups["s"], groups["value"], groups.get("date") or "",
                              is_state, groups.get("species") or groups.get("relation") or "",
                              category="state" if is_state else "retraction")
    for event, regex in _HARD_FACT_RES:
        match = regex.fullmatch(stripped)
        if match:
            groups = match.groupdict()
            slot, _, category = HARD_FACT_TEMPLATES[event]
            return ParsedFact(event, slot, groups["s"], groups["value"], groups.get("date") or "",
                              False, groups.get("kin") or "", category=category)
    return _parse_history(stripped) or _parse_record(stripped) or _parse_list(stripped)


def article(word: str) -> str:
    """The indefinite article before ``word``: ``"an"`` before a vowel, else ``"a"``."""
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def canonical_fact(event: str, speaker: str, value: str, *, female: bool, date: str = "",
                   detail: str = "") -> str:
    """The canonical text of an event (see ``FACT_TEMPLATES``)."""
    if event not in FACT_TEMPLATES:
        raise ValueError(f"unknown fact event {event!r}; choose one of {sorted(FACT_TEMPLATES)}")
    template = FACT_TEMPLATES[event][1]
    first_noun = detail if event == "pet_add" else value
    return template.format(s=speaker, value=value, date=date, article=article(first_noun),
                           pronoun="her" if female else "his", species=detail, relation=detail)


# ------------------------------------------------------------ hard-world fact texts --
# Hard worlds (``difficulty="hard"``) keep history in one *history text* per speaker and
# slot, which the manager merges each ended state into:
#     "Alice's past homes: Paris until 3 May 2023; Lyon from 3 May 2023 until 4 July 2023."
# Entries are "<value>[ from <start>] until <end>", pets "<species> <name> from ... until
# ...", separated by "; ", in the order the states ended. Facts about third parties are
# kept apart from the speaker's own. event -> (slot, template, category).
HISTORY_NOUNS: dict[str, str] = {CITY: "homes", JOB: "jobs", PARTNER: "partners", CLUB: "clubs",
                                 VEHICLE: "cars", PET: "pets"}
_NOUN_SLOTS = {noun: slot for slot, noun in HISTORY_NOUNS.items()}
HARD_FACT_TEMPLATES: dict[str, tuple[str, str, str]] = {
    "third_city": (CITY, "{s}'s {kin} moved to {value} on {date}.", "third-party"),
    "third_job": (JOB, "{s}'s {kin} started working as {article} {value} on {date}.", "third-party"),
    "third_club": (CLUB, "{s}'s {kin} quit the {value} on {date}.", "third-party"),
    "third_vehicle": (VEHICLE, "{s}'s {kin} sold {article} {value} on {date}.", "third-party"),
}
_HARD_FACT_RES = tuple((event, _template_regex(template))
                       for event, (_, template, _) in HARD_FACT_TEMPLATES.items())
_DATE_RE_TEXT = r"\d{1,2} [A-Z][a-z]+ \d{4}"
_HISTORY_RE = re.compile(r"(?P<s>[A-Z][a-z]+)'s past (?P<noun>" + "|".join(HISTORY_NOUNS.values())
                         + r"): (?P<entries>.+?)\.?")
_ENTRY_RE = re.compile(r"(?:(?P<species>" + "|".join(PET_SPECIES) + r") )?(?P<value>.+?)"
                       r"(?: from (?P<start>" + _DATE_RE_TEXT + r"))? until (?P<end>" + _DATE_RE_TEXT + r")")


@dataclass(frozen=True)
class PastState:
    """One entry of a history text: a value a slot held, and when."""

    value: str
    start: str      # "" when unknown (an undated introduction)
    end: str
    detail: str = ""  # pet species


def history_entry(state: PastState) -> str:
    """An entry of a history text (see ``HISTORY_NOUNS``)."""
    name = f"{state.detail} {state.value}" if state.detail else state.value
    return name + (f" from {state.start}" if state.start else "") + f" until {state.end}"


def history_text(speaker: str, slot: str, states: Sequence[PastState]) -> str:
    """The history text of a speaker's slot: every past state, in the order they ended."""
    if slot not in HISTORY_NOUNS:
        raise ValueError(f"slot {slot!r} has no history text; choose one of {sorted(HISTORY_NOUNS)}")
    if not states:
        raise ValueError("a history text needs at least one past state")
    return f"{speaker}'s past {HISTORY_NOUNS[slot]}: " + "; ".join(map(history_entry, states)) + "."


def _parse_history(text: str) -> ParsedFact | None:
    match = _HISTORY_RE.fullmatch(text)
    if match is None:
        return None
    states = []
    for entry in match.group("entries").split("; "):
        part = _ENTRY_RE.fullmatch(entry)
        if part is None:
            return None
        states.append(PastState(part.group("value"), part.group("start") or "", part.group("end"),
                                part.group("species") or ""))
    return ParsedFact("history", _NOUN_SLOTS[match.group("noun")], match.group("s"), "", "", False,
                      category="history", past=tuple(states))


def canonical_hard_fact(event: str, speaker: str, value: str, *, date: str, detail: str = "") -> str:
    """The canonical text of a third-party event (see ``HARD_FACT_TEMPLATES``)."""
    if event not in HARD_FACT_TEMPLATES:
        raise ValueError(f"unknown hard fact event {event!r}; choose one of {sorted(HARD_FACT_TEMPLATES)}")
    template = HARD_FACT_TEMPLATES[event][1]
    return template.format(s=speaker, value=value, date=date, article=article(value), kin=detail)


# A scalar slot (home, job, partner) with a past and a present value keeps both in one
# *record text*, its history entries followed by "<value> since <date>":
#     "Alice's homes: Paris until 3 May 2023; Lyon since 3 May 2023."
# The last entry reads as the state text of the change that began it ("Alice moved to
# Lyon on 3 May 2023."), the others as the history text of the slot.
RECORD_SLOTS = (CITY, JOB, PARTNER)
_RECORD_RE = re.compile(r"(?P<s>[A-Z][a-z]+)'s (?P<noun>" + "|".join(HISTORY_NOUNS[s] for s in RECORD_SLOTS)
                        + r"): (?P<entries>.+?)\.?")
_CURRENT_RE = re.compile(r"(?P<value>.+?) since (?P<date>" + _DATE_RE_TEXT + r")")


def record_text(speaker: str, slot: str, states: Sequence[PastState], value: str, since: str) -> str:
    """The record text of a scalar slot: its past ``states`` (in the order they ended), then
    its current ``value``, held since ``since``."""
    if slot not in RECORD_SLOTS:
        raise ValueError(f"slot {slot!r} has no record text; choose one of {sorted(RECORD_SLOTS)}")
    if not states:
        raise ValueError("a record text needs at least one past state (else it is a state text)")
    return (f"{speaker}'s {HISTORY_NOUNS[slot]}: " + "; ".join(map(history_entry, states))
            + f"; {value} since {since}.")


def _parse_record(text: str) -> ParsedFact | None:
    match = _RECORD_RE.fullmatch(text)
    if match is None:
        return None
    *entries, last = match.group("entries").split("; ")
    current = _CURRENT_RE.fullmatch(last)
    if current is None or not entries:
        return None
    slot, speaker = _NOUN_SLOTS[match.group("noun")], match.group("s")
    states = []
    for entry in entries:
        part = _ENTRY_RE.fullmatch(entry)
        if part is None:
            return None
        states.append(PastState(part.group("value"), part.group("start") or "", part.group("end")))
    history = ParsedFact("history", slot, speaker, "", "", False, category="history", past=tuple(states))
    state = ParsedFact(f"{slot}_change", slot, speaker, current.group("value"), current.group("date"), True)
    return ParsedFact("record", slot, speaker, "", "", False, category="record", items=(history, state))


# Hard worlds also keep the items of an add-only list slot (trips, concerts) in one *list
# text* per speaker once there are two or more, which the manager merges each new item
# into: "Alice's trips: Peru on 3 May 2023; Chile on 5 June 2023." Entries are
# "<value> on <date>", separated by "; ", in the order they were added; each reads as the
# state text of its item ("Alice travelled to Peru on 3 May 2023.").
LIST_NOUNS: dict[str, str] = {TRIP: "trips", CONCERT: "concerts"}
_LIST_NOUN_SLOTS = {noun: slot for slot, noun in LIST_NOUNS.items()}
_LIST_RE = re.compile(r"(?P<s>[A-Z][a-z]+)'s (?P<noun>" + "|".join(LIST_NOUNS.values())
                      + r"): (?P<entries>.+?)\.?")
_LIST_ENTRY_RE = re.compile(r"(?P<value>.+?) on (?P<date>" + _DATE_RE_TEXT + r")")


def list_text(speaker: str, slot: str, entries: Sequence[tuple[str, str]]) -> str:
    """The list text of a speaker's add-only slot: ``(value, date)`` entries in the order added."""
    if slot not in LIST_NOUNS:
        raise ValueError(f"slot {slot!r} has no list text; choose one of {sorted(LIST_NOUNS)}")
    if not entries:
        raise ValueError("a list text needs at least one entry")
    return f"{speaker}'s {LIST_NOUNS[slot]}: " + "; ".join(f"{v} on {d}" for v, d in entries) + "."


def _parse_list(text: str) -> ParsedFact | None:
    match = _LIST_RE.fullmatch(text)
    if match is None:
        return None
    slot, speaker = _LIST_NOUN_SLOTS[match.group("noun")], match.group("s")
    event = f"{slot}_add"
    items = []
    for entry in match.group("entries").split("; "):
        part = _LIST_ENTRY_RE.fullmatch(entry)
        if part is None:
            return None
        items.append(ParsedFact(event, slot, speaker, part.group("value"), part.group("date"), True))
    return ParsedFact("list", slot, speaker, "", "", False, category="list", items=tuple(items))


# ------------------------------------------------------------------- question texts --
# (question type, slot) -> paraphrases. Slot questions ask the current value(s); "when"
# questions the date of an event still true; "multi" the city of a job's holder.
QUESTION_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("slot", CITY): ("Where does {s} live?", "Which city does {s} live in?",
                     "In which city does {s} live?"),
    ("slot", JOB): ("What does {s} do for work?", "What is {s}'s job?",
                    "What is {s}'s occupation?"),
    ("slot", PARTNER): ("Who is {s}'s partner?", "Who is {s} dating?",
                        "What is the name of {s}'s partner?"),
    ("slot", CLUB): ("Which clubs is {s} a member of?", "What clubs does {s} belong to?"),
    ("slot", VEHICLE): ("Which cars does {s} own?", "What cars does {s} have?"),
    ("slot", PET): ("What are the names of {s}'s pets?", "What are {s}'s pets called?"),
    ("slot", TRIP): ("Which countries has {s} visited?", "What countries has {s} travelled to?"),
    ("slot", CONCERT): ("Which artists has {s} seen in concert?",
                        "Who has {s} seen perform live?"),
    ("slot", SIBLING): ("What is the name of {s}'s {relation}?", "Who is {s}'s {relation}?",
                        "What is {s}'s {relation} called?"),
    ("slot", INSTRUMENT): ("What instrument does {s} play?",
                           "Which musical instrument does {s} play?"),
    ("slot", FOOD): ("What is {s}'s favourite food?", "Which food does {s} like the most?"),
    ("when", CITY): ("When did {s} move to {value}?", "On what date did {s} relocate to {value}?"),
    ("when", JOB): ("When did {s} start working as {article} {value}?",
                    "When did {s} become {article} {value}?"),
    ("when", PARTNER): ("When did {s} start dating {value}?",
                        "When did {s} get together with {value}?"),
    ("when", CLUB): ("When did {s} join the {value}?",
                     "On what date did {s} become a member of the {value}?"),
    ("when", VEHICLE): ("When did {s} buy {pronoun} {value}?",
                        "On what date did {s} get {pronoun} {value}?"),
    ("when", PET): ("When did {s} adopt {pronoun} {species} {value}?", "When did {s} adopt {name}?"),
    ("when", TRIP): ("When did {s} travel to {value}?", "On what date did {s} fly to {value}?"),
    ("when", CONCERT): ("When did {s} see {value} in concert?",
                        "On what date did {s} go to the {value} concert?"),
    ("multi", CITY): ("Which city does the person who works as {article} {value} live in?",
                      "In which city does the {value} live?",
                      "Where does the person working as {article} {value} live?"),
}

_QUESTION_RES = tuple(
    (qtype, slot, _template_regex(t))
    for (qtype, slot), templates in QUESTION_TEMPLATES.items() for t in templates
)


@dataclass(frozen=True)
class ParsedQuestion:
    """A synthetic question read back.

    ``qtype`` is ``"slot"`` (current values of a speaker's slot), ``"when"`` (date of an
    event: ``speaker``'s ``slot`` got ``value``) or ``"multi"`` (``slot`` of the person
    whose job is ``value``; ``speaker`` is empty).
    """

    qtype: str
    slot: str
    speaker: str
    value: str = ""
    # Sibling relation or pet species named by the question, else "".
    detail: str = ""
    # "order" questions: the event compared with (slot, value): did ``speaker``'s
    # ``slot`` get ``value`` before or after ``other_slot`` got ``other_value``?
    other_slot: str = ""
    other_value: str = ""


def parse_question(text: str) -> ParsedQuestion | None:
    """Read a question written from ``QUESTION_TEMPLATES``; None for any other text."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    for qtype, slot, regex in _QUESTION_RES:
        match = regex.fullmatch(stripped)
        if match:
            groups = match.groupdict()
            return ParsedQuestion(qtype, slot, groups.get("s") or "", groups.get("value") or "",
                                  groups.get("species") or groups.get("relation") or "")
    return _parse_hard_question(stripped)


# ------------------------------------------------------- hard-world question texts --
# "previous": the value a scalar slot had right before ``value``; "ever": every value a
# slot has had, in order; "count": how many values it has had; "order": whether one dated
# event came before or after another (slot "": the events are in the text).
HARD_QUESTION_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    # Every template shares a word with the texts it is answered from ("home" with the
    # history text "<s>'s past homes: ...", "travelled" with the trips...), so BM25 brings
    # them into the answer observation even from a long memory.
    ("previous", CITY): ("Where was {s}'s home before {value}?",
                         "Which city was {s}'s home before {value}?"),
    ("previous", JOB): ("What was {s}'s job before becoming {article} {value}?",
                        "What job did {s} have before becoming {article} {value}?"),
    ("previous", PARTNER): ("Who was {s}'s partner before {value}?",
                            "Which partner did {s} have before {value}?"),
    ("ever", CITY): ("Which cities has {s} called home?", "Which cities have been {s}'s homes?"),
    ("ever", JOB): ("Which jobs has {s} had?", "What jobs has {s} ever worked as?"),
    ("ever", PARTNER): ("Which partners has {s} had?", "Who are all the partners {s} has had?"),
    ("ever", CLUB): ("Which clubs has {s} ever been a member of?", "Which clubs has {s} ever joined?"),
    ("ever", VEHICLE): ("Which cars has {s} ever owned?", "What cars has {s} owned over the years?"),
    ("ever", PET): ("What are the names of all the pets {s} has had?", "Which pets has {s} ever had?"),
    ("count", CITY): ("How many homes has {s} had?", "In how many cities has {s} had a home?"),
    ("count", JOB): ("How many jobs has {s} had?", "How many different jobs has {s} worked?"),
    ("count", PARTNER): ("How many partners has {s} had?", "How many partners has {s} dated?"),
    ("count", CLUB): ("How many clubs has {s} ever joined?", "How many clubs has {s} been a member of?"),
    ("count", VEHICLE): ("How many cars has {s} owned?", "How many cars has {s} ever had?"),
    ("count", PET): ("How many pets has {s} had?", "How many pets has {s} ever adopted?"),
    ("count", TRIP): ("How many countries has {s} travelled to?", "To how many countries has {s} travelled?"),
    ("count", CONCERT): ("How many artists has {s} seen in concert?",
                         "How many artists has {s} seen at a concert?"),
    ("order", ""): ("Did {s} {first} before or after {subject} {second}?",
                    "Did {s} {first} earlier or later than {subject} {second}?"),
}
# slot -> (infinitive, past tense) of the event that starts a state, as ordering
# questions name it; {pronoun} is the speaker's possessive.
EVENT_PHRASES: dict[str, tuple[str, str]] = {
    CITY: ("move to {value}", "moved to {value}"),
    JOB: ("start working as {article} {value}", "started working as {article} {value}"),
    PARTNER: ("start dating {value}", "started dating {value}"),
    CLUB: ("join the {value}", "joined the {value}"),
    VEHICLE: ("buy {pronoun} {value}", "bought {pronoun} {value}"),
    PET: ("adopt {value}", "adopted {value}"),
    TRIP: ("travel to {value}", "travelled to {value}"),
    CONCERT: ("see {value} in concert", "saw {value} in concert"),
}
_HARD_QUESTION_RES = tuple(
    (qtype, slot, _template_regex(t))
    for (qtype, slot), templates in HARD_QUESTION_TEMPLATES.items() if qtype != "order" for t in templates
)
_ORDER_RES = tuple(
    re.compile(re.escape(t[:-1]).replace(re.escape("{s}"), _PLACEHOLDER_RE["s"])
               .replace(re.escape("{first}"), r"(?P<first>.+?)")
               .replace(re.escape("{subject}"), r"(?:she|he)")
               .replace(re.escape("{second}"), r"(?P<second>.+?)") + r"\??")
    for t in HARD_QUESTION_TEMPLATES[("order", "")]
)
_PHRASE_RES = tuple(
    tuple((slot, _template_regex(phrases[tense])) for slot, phrases in EVENT_PHRASES.items())
    for tense in (0, 1)
)


def _parse_event_phrase(text: str, tense: int) -> tuple[str, str] | None:
    for slot, regex in _PHRASE_RES[tense]:
        match = regex.fullmatch(text)
        if match:
            return slot, match.group("value")
    return None


def _parse_hard_question(text: str) -> ParsedQuestion | None:
    for qtype, slot, regex in _HARD_QUESTION_RES:
        match = regex.fullmatch(text)
        if match:
            groups = match.groupdict()
            return ParsedQuestion(qtype, slot, groups.get("s") or "", groups.get("value") or "")
    for regex in _ORDER_RES:
        match = regex.fullmatch(text)
        if match:
            first = _parse_event_phrase(match.group("first"), 0)
            second = _parse_event_phrase(match.group("second"), 1)
            if first and second:
                return ParsedQuestion("order", first[0], match.group("s"), first[1],
                                      other_slot=second[0], other_value=second[1])
    return None


def order_question_text(rng: np.random.Generator, speaker: str, female: bool, first: tuple[str, str],
                        second: tuple[str, str]) -> str:
    """"Did <speaker> <first event> before or after <she|he> <second event>?" for two
    ``(slot, value)`` events, in one of its paraphrases drawn at random."""
    pronoun = "her" if female else "his"
    phrases = [EVENT_PHRASES[slot][tense].format(value=value, article=article(value), pronoun=pronoun)
               for tense, (slot, value) in enumerate((first, second))]
    template = choice(rng, HARD_QUESTION_TEMPLATES[("order", "")])
    return template.format(s=speaker, first=phrases[0], second=phrases[1], subject="she" if female else "he")


def hard_question_text(rng: np.random.Generator, qtype: str, slot: str, speaker: str, value: str = "") -> str:
    """A hard-world "previous", "ever" or "count" question, in one of its paraphrases."""
    template = choice(rng, HARD_QUESTION_TEMPLATES[(qtype, slot)])
    return template.format(s=speaker, value=value, article=article(value))


def question_text(rng: np.random.Generator, qtype: str, slot: str, speaker: str = "",
                  value: str = "", female: bool = True, detail: str = "") -> str:
    """A question of type ``qtype`` about ``slot``, in one of its paraphrases drawn at random."""
    template = choice(rng, QUESTION_TEMPLATES[(qtype, slot)])
    return template.format(s=speaker, value=value, name=value, article=article(value),
                           pronoun="her" if female else "his", species=detail,
                           relation=detail)
