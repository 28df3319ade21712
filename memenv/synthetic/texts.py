"""Canonical fact and question texts: one template each, written and read back.

A fact's canonical text (``GoldFact.text``) is third person with the absolute date, and
follows exactly one template per event (``FACT_TEMPLATES``), so :func:`parse_fact` reads
it back; questions follow ``QUESTION_TEMPLATES`` and :func:`parse_question` reads them
back. The scripted reader in :mod:`memenv.scripted` is built on these two parsers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from memenv.synthetic.sampling import choice
from memenv.synthetic.vocabulary import (
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
    # Pet species or sibling relation ("sister" / "brother"), else "".
    detail: str = ""


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
                              is_state, groups.get("species") or groups.get("relation") or "")
    return None


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
    return None


def question_text(rng: np.random.Generator, qtype: str, slot: str, speaker: str = "",
                  value: str = "", female: bool = True, detail: str = "") -> str:
    """A question of type ``qtype`` about ``slot``, in one of its paraphrases drawn at random."""
    template = choice(rng, QUESTION_TEMPLATES[(qtype, slot)])
    return template.format(s=speaker, value=value, name=value, article=article(value),
                           pronoun="her" if female else "his", species=detail,
                           relation=detail)
