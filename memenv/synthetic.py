"""Seeded synthetic worlds: two speakers, many sessions, facts that change over time.

``generate_world(seed, num_sessions)`` builds a :class:`~memenv.types.Conversation` from a
seed alone (``numpy.random.default_rng(seed)``, never global random state), so the same
seed always gives the same world. Each speaker has slots:

- scalar, changeable: ``city``, ``job``, ``partner`` (a partner can also be retracted);
- multi-valued, added and retracted: ``club``, ``vehicle``, ``pet``; added only: ``trip``,
  ``concert`` (countries visited, artists seen live: they keep long worlds rich in dated
  events);
- static, said once: ``sibling``, ``instrument``, ``food``.

Session 0 introduces each speaker's city and job (and maybe one more slot); later sessions
introduce further slots, change scalar ones (moves, new jobs, new partners, break-ups) and
add or retract items, about 2-4 fact events per session. Some slots stay unmentioned for
the whole conversation; unanswerable questions ask about them.

In the dialogue a fact is said in the first person with one of several paraphrases and a
*relative* date ("yesterday", "three days ago", "last Tuesday", "on Tuesday" — a weekday
always means the most recent one strictly before the session date; see
:func:`relative_date_phrases`). Its canonical text (``GoldFact.text``) is third person
with the absolute date, and follows exactly one template per event (``FACT_TEMPLATES``), so
:func:`parse_fact` reads it back; questions follow ``QUESTION_TEMPLATES`` and
:func:`parse_question` reads them back. The scripted reader in :mod:`memenv.scripted` is
built on these two parsers.

Gold annotations: each session's ``gold_facts`` (ADD for a new value, UPDATE of the
current text of a scalar slot, DELETE of the current text for a retraction — the
retraction's own text, e.g. "Alice quit the chess club on 9 June 2023.", is the fact to
extract) and ``gold_memory`` (the gold bank after applying them in order, see
:func:`apply_gold_facts`). ``Conversation.extra["fact_turns"]`` links each fact to the turn
that states it.

Questions are made from the final state, so each answer holds from its last evidence
session to the end of the conversation: single-hop (a slot set and never changed),
knowledge-update (a slot that was updated or retracted: its final value), temporal (the
date of an event whose text is still in the final gold memory), multi-hop (the city of
the person working as a given job) and unanswerable (a slot never mentioned: "unknown").
Lists are answered as items joined with " and ". Short worlds keep at most
``MAX_QUESTIONS_PER_SESSION`` questions per session; long ones have fewer per session,
since only the final state is asked about. ``Question.meta`` names speaker and slot.
"""

from __future__ import annotations

import datetime as dt
import functools
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

import numpy as np

from memenv.constants import MAX_SESSIONS
from memenv.sources import ConversationSource
from memenv.types import (
    KNOWLEDGE_UPDATE,
    MULTI_HOP,
    SINGLE_HOP,
    TEMPORAL,
    UNANSWERABLE,
    Conversation,
    GoldFact,
    Question,
    Session,
    Turn,
)

T = TypeVar("T")

# --------------------------------------------------------------------------- constants --
FIRST_YEAR = 2023
# The first session falls in the first FIRST_SESSION_SPREAD_DAYS days of FIRST_YEAR.
FIRST_SESSION_SPREAD_DAYS = 120
MIN_GAP_DAYS, MAX_GAP_DAYS = 3, 20
# A dated event happens at most this many days before the session that tells it, and
# always after the previous session, so events never go back in time.
MAX_EVENT_OFFSET_DAYS = 7
MIN_TURNS, MAX_TURNS = 8, 16
MIN_EVENTS, MAX_EVENTS = 2, 4          # fact events per session after the first
# Each speaker has 1 or 2 hideable slots that never come up (unanswerable questions).
MIN_HIDDEN, MAX_HIDDEN = 1, 2
MAX_UNANSWERABLE = 4                   # unanswerable questions per world, at most
# Short worlds have more questions than sessions can use: keep at most this many per
# session (but never fewer than MIN_QUESTION_CAP per world), every kind still present.
MAX_QUESTIONS_PER_SESSION = 3
MIN_QUESTION_CAP = 12
UNKNOWN = "unknown"                    # the answer to an unanswerable question

CITY, JOB, PARTNER = "city", "job", "partner"
CLUB, VEHICLE, PET, TRIP, CONCERT = "club", "vehicle", "pet", "trip", "concert"
SIBLING, INSTRUMENT, FOOD = "sibling", "instrument", "food"
SCALAR_SLOTS = (CITY, JOB, PARTNER)
LIST_SLOTS = (CLUB, VEHICLE, PET, TRIP, CONCERT)
ADD_ONLY_SLOTS = (TRIP, CONCERT)
STATIC_SLOTS = (SIBLING, INSTRUMENT, FOOD)
ALL_SLOTS = SCALAR_SLOTS + LIST_SLOTS + STATIC_SLOTS
# Every speaker's city and job come up in session 0 (multi-hop questions need both).
ALWAYS_MENTIONED = (CITY, JOB)
HIDEABLE_SLOTS = tuple(s for s in ALL_SLOTS if s not in ALWAYS_MENTIONED)
# Most items a speaker holds at once (None: no limit).
LIST_CAPS: dict[str, int | None] = {CLUB: 4, VEHICLE: 2, PET: 3, TRIP: None, CONCERT: None}
# Relative weights of the events a later session draws: first mentions come early, and
# moves and new jobs are rarer than trips and concerts, so long worlds stay plausible.
INTRO_WEIGHT = 3.0
CHANGE_WEIGHTS = {CITY: 0.5, JOB: 0.5, PARTNER: 0.6, CLUB: 0.8, VEHICLE: 0.5, PET: 0.6,
                  TRIP: 1.0, CONCERT: 1.0}
RETRACT_WEIGHTS = {PARTNER: 0.4, CLUB: 0.6, VEHICLE: 0.5, PET: 0.4}

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

FEMALE_NAMES = ("Alice", "Emma", "Grace", "Hannah", "Julia", "Laura", "Maya", "Nora",
                "Olivia", "Rosa", "Sofia", "Zoe", "Clara", "Irene", "Lucy")
MALE_NAMES = ("Ben", "Carlos", "David", "Ethan", "Felix", "George", "Henry", "Ivan",
              "Jack", "Leo", "Marco", "Noah", "Oscar", "Paul", "Victor")
PARTNER_NAMES = ("Sam", "Chris", "Alex", "Jordan", "Taylor", "Robin", "Jamie", "Morgan",
                 "Casey", "Riley", "Avery", "Quinn", "Drew", "Dana", "Jesse", "Remy",
                 "Sasha", "Nico", "Kai", "Elliot", "Rowan", "Charlie", "Frankie", "Jules")
SISTER_NAMES = ("Anna", "Bella", "Chloe", "Diana", "Eva", "Fiona", "Helen", "Ivy",
                "Jane", "Kate", "Lily", "Mia")
BROTHER_NAMES = ("Adam", "Bruno", "Colin", "Daniel", "Eric", "Frank", "Gavin", "Hugo",
                 "Isaac", "Jonas", "Kevin", "Liam")
PET_NAMES = ("Milo", "Luna", "Biscuit", "Ziggy", "Mochi", "Nugget", "Oreo", "Pickle",
             "Waffles", "Pixel", "Noodle", "Sprout", "Rocket", "Bubbles", "Shadow",
             "Peanut", "Teddy", "Juniper", "Marble", "Fudge")
PET_SPECIES = ("cat", "dog", "rabbit", "parrot", "hamster", "turtle")
CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Lisbon", "Rome", "Vienna", "Prague",
          "Dublin", "Oslo", "Boston", "Denver", "Seattle", "Austin", "Chicago", "Toronto",
          "Montreal", "Sydney", "Melbourne", "Tokyo", "Osaka", "Seoul", "Amsterdam",
          "Munich", "Barcelona", "Copenhagen", "Stockholm", "New York", "San Diego",
          "Mexico City")
JOBS = ("nurse", "teacher", "architect", "software engineer", "chef", "accountant",
        "lawyer", "pharmacist", "photographer", "electrician", "graphic designer",
        "journalist", "dentist", "firefighter", "librarian", "pilot", "veterinarian",
        "carpenter", "translator", "data analyst", "mechanic", "baker", "florist",
        "physiotherapist", "web developer", "police officer", "social worker",
        "real estate agent", "economist", "biologist")
CLUBS = ("chess club", "hiking club", "book club", "photography club", "running club",
         "cycling club", "swimming club", "tennis club", "gardening club", "film club",
         "cooking club", "debate club", "climbing club", "board game club", "salsa club")
VEHICLES = ("Toyota", "Honda", "Subaru", "Tesla", "Volvo", "Audi", "Ford", "Mazda", "Kia",
            "Nissan", "Hyundai", "Volkswagen", "Jeep", "Peugeot", "Renault", "Fiat")
INSTRUMENTS = ("violin", "piano", "guitar", "cello", "drums", "flute", "saxophone",
               "trumpet", "harp", "ukulele", "clarinet", "banjo")
COUNTRIES = ("Peru", "Japan", "Iceland", "Morocco", "Greece", "Vietnam", "Kenya", "Norway",
             "Chile", "Portugal", "Thailand", "Egypt", "Croatia", "Argentina", "Scotland",
             "India", "Brazil", "Canada", "Australia", "New Zealand", "South Korea", "Finland",
             "Ireland", "Mongolia", "Nepal", "Colombia", "Estonia", "Tunisia")
ARTISTS = ("Coldplay", "Radiohead", "Adele", "Muse", "Daft Punk", "Arctic Monkeys",
           "Metallica", "Shakira", "Bruno Mars", "Ed Sheeran", "Billie Eilish", "U2",
           "Gorillaz", "Foo Fighters", "Pearl Jam", "Norah Jones", "Stromae", "Dua Lipa",
           "The Strokes", "Tame Impala", "Massive Attack", "Kendrick Lamar", "Lizzo", "Bon Iver")
FOODS = ("sushi", "lasagna", "ramen", "tacos", "paella", "curry", "pho", "dumplings",
         "pizza", "falafel", "risotto", "pad thai")

_VALUE_POOLS: dict[str, tuple[str, ...]] = {
    CITY: CITIES, JOB: JOBS, PARTNER: PARTNER_NAMES, CLUB: CLUBS, VEHICLE: VEHICLES,
    PET: PET_NAMES, TRIP: COUNTRIES, CONCERT: ARTISTS,
    INSTRUMENT: INSTRUMENTS, FOOD: FOODS,
}
# Values no two speakers share over a whole world: a job names its holder in multi-hop
# questions, and a shared partner, pet or sibling name would be confusing.
_GLOBALLY_UNIQUE = (JOB, PARTNER, PET, SIBLING)


# ------------------------------------------------------------------------------- dates --
def format_date(day: dt.date) -> str:
    """A date as the sessions and canonical facts write it: ``"8 May 2023"``."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


_DATE_RE = re.compile(r"(\d{1,2}) ([A-Z][a-z]+) (\d{4})")


def parse_date(text: str) -> dt.date:
    """The date written ``"8 May 2023"``; ``ValueError`` naming the text otherwise."""
    match = _DATE_RE.fullmatch(str(text).strip())
    if match is None or match.group(2) not in MONTHS:
        raise ValueError(f"not a date like '8 May 2023': {text!r}")
    day, month, year = int(match.group(1)), MONTHS.index(match.group(2)) + 1, int(match.group(3))
    return dt.date(year, month, day)


_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
_WORD_NUMBERS = {word: n for n, word in _NUMBER_WORDS.items()}


def relative_date_phrases(offset: int, session_date: dt.date) -> tuple[str, ...]:
    """Every phrase the dialogue may use for the day ``offset`` days before the session.

    ``"last <weekday>"`` and ``"on <weekday>"`` both mean the most recent such weekday
    strictly before the session date, so they cover offsets 1 to 7 without ambiguity.
    """
    if not isinstance(offset, int) or not 0 <= offset <= MAX_EVENT_OFFSET_DAYS:
        raise ValueError(f"offset must be an int in [0, {MAX_EVENT_OFFSET_DAYS}], got {offset!r}")
    if offset == 0:
        return ("this morning", "earlier today")
    weekday = WEEKDAYS[(session_date - dt.timedelta(days=offset)).weekday()]
    phrases = []
    if offset == 1:
        phrases.append("yesterday")
    if offset == 2:
        phrases.append("the day before yesterday")
    if offset in _NUMBER_WORDS:
        phrases.append(f"{_NUMBER_WORDS[offset]} days ago")
    if offset == 7:
        phrases.append("a week ago")
    phrases += [f"last {weekday}", f"on {weekday}"]
    return tuple(phrases)


_RELATIVE_RE = re.compile(
    r"\b(this morning|earlier today|the day before yesterday|yesterday|a week ago"
    r"|(?:two|three|four|five|six) days ago|(?:last|on) (?:" + "|".join(WEEKDAYS) + r"))\b"
)


def find_relative_phrase(text: str) -> str | None:
    """The first relative date phrase in ``text`` (as :func:`relative_date_phrases` writes them)."""
    match = _RELATIVE_RE.search(text)
    return match.group(1) if match else None


def resolve_relative_date(phrase: str, session_date: dt.date) -> dt.date:
    """The absolute date a relative phrase names, said on ``session_date``."""
    words = phrase.split()
    if phrase in ("this morning", "earlier today"):
        offset = 0
    elif phrase == "yesterday":
        offset = 1
    elif phrase == "the day before yesterday":
        offset = 2
    elif phrase == "a week ago":
        offset = 7
    elif len(words) == 3 and words[1:] == ["days", "ago"] and words[0] in _WORD_NUMBERS:
        offset = _WORD_NUMBERS[words[0]]
    elif len(words) == 2 and words[0] in ("last", "on") and words[1] in WEEKDAYS:
        # Most recent such weekday strictly before the session date: 1 to 7 days back.
        offset = (session_date.weekday() - WEEKDAYS.index(words[1]) - 1) % 7 + 1
    else:
        raise ValueError(f"not a relative date phrase: {phrase!r}")
    return session_date - dt.timedelta(days=offset)


# ---------------------------------------------------------------- canonical fact texts --
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


def _article(word: str) -> str:
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def canonical_fact(event: str, speaker: str, value: str, *, female: bool, date: str = "",
                   detail: str = "") -> str:
    """The canonical text of an event (see ``FACT_TEMPLATES``)."""
    if event not in FACT_TEMPLATES:
        raise ValueError(f"unknown fact event {event!r}; choose one of {sorted(FACT_TEMPLATES)}")
    template = FACT_TEMPLATES[event][1]
    first_noun = detail if event == "pet_add" else value
    return template.format(s=speaker, value=value, date=date, article=_article(first_noun),
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


# -------------------------------------------------------------------- dialogue texts --
# First-person paraphrases per event. {when} is a relative date phrase; {a_value} is the
# value with its article.
STATEMENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "city_intro": ("I live in {value}, have I told you that?",
                   "I've been living in {value} for a few years now.",
                   "You know me, {value} is home for me.",
                   "Life here in {value} has been treating me well."),
    "city_change": ("Guess what, I finally moved to {value} {when}!",
                    "We packed everything and relocated to {value} {when}.",
                    "I moved to {value} {when}, the apartment is still full of boxes.",
                    "Big change for me: I left my old place and moved to {value} {when}."),
    "job_intro": ("I work as {a_value}, it keeps me busy.",
                  "Being {a_value} is tiring but I love my job.",
                  "I've been working as {a_value} for a while now."),
    "job_change": ("I started a new job as {a_value} {when}!",
                   "I finally switched careers and began working as {a_value} {when}.",
                   "My first day as {a_value} was {when}.",
                   "I quit my old job and started working as {a_value} {when}."),
    "partner_intro": ("My partner {value} says hi, by the way.",
                      "I've been with my partner {value} for years now.",
                      "{value}, my partner, has been so supportive lately."),
    "partner_change": ("I started dating {value} {when}, I'm so happy!",
                       "{value} and I became a couple {when}.",
                       "I have a new partner: I started seeing {value} {when}."),
    "partner_end": ("{value} and I broke up {when}.",
                    "I ended things with {value} {when}, it just wasn't working.",
                    "Sad news, {value} and I split up {when}."),
    "club_add": ("I joined the {value} {when}!",
                 "I signed up for the {value} {when}, the first meeting was fun.",
                 "I became a member of the {value} {when}."),
    "club_remove": ("I quit the {value} {when}, I just didn't have the time.",
                    "I left the {value} {when}.",
                    "I cancelled my membership of the {value} {when}."),
    "vehicle_add": ("I bought {a_value} {when}!",
                    "I finally got myself {a_value} {when}.",
                    "I picked up my new {value} from the dealer {when}."),
    "vehicle_remove": ("I sold my {value} {when}.",
                       "Someone bought my {value} {when}, so it's gone.",
                       "I got rid of my {value} {when}."),
    "pet_add": ("I adopted {a_species} named {value} {when}!",
                "Meet {value}, the {species} I adopted {when}.",
                "We brought home {a_species} {when} and named it {value}."),
    "pet_remove": ("I gave my {species} {value} to a friend {when}, I couldn't care for it anymore.",
                   "{value}, my {species}, went to live with a friend {when}.",
                   "I had to give {value} away to a friend {when}."),
    "trip_add": ("I flew to {value} {when}, what a trip!",
                 "I travelled to {value} {when} for a short holiday.",
                 "We took a trip to {value} {when}, it was beautiful."),
    "concert_add": ("I saw {value} live {when}, what a show!",
                    "I went to the {value} concert {when}, my ears are still ringing.",
                    "I finally got to see {value} in concert {when}."),
    "sibling": ("My {relation} {value} is coming to visit soon.",
                "I had a long call with my {relation} {value}.",
                "My {relation} {value} and I grew up sharing a room."),
    "instrument": ("I've played the {value} since I was a kid.",
                   "Playing the {value} is how I relax after work.",
                   "I practised the {value} for two hours, my neighbours must hate me."),
    "food": ("My favourite food is {value}, always has been.",
             "Nothing beats {value}, it's my favourite food.",
             "If I could eat one thing forever, it would be {value}."),
}

# Replies never repeat the value, so only the statement carries the fact.
REPLY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "intro": ("Oh nice, I didn't know that!", "That's cool.", "Good to know!",
              "Really? Tell me more sometime."),
    "good_news": ("Congratulations, that's big news!", "Wow, that's exciting!",
                  "Good for you, I'm really happy for you.", "No way, that's amazing!"),
    "bad_news": ("Oh no, I'm sorry to hear that.", "That must have been a tough decision.",
                 "Well, sometimes change is for the best.", "Are you okay with it?"),
}

# Small talk: nothing worth remembering, no slot value, no relative date phrase.
DISTRACTOR_STATEMENTS = (
    "The weather has been so {weather} lately.",
    "I watched {movie} and honestly it was just okay.",
    "I had {dish} for lunch, nothing special.",
    "Traffic was terrible on my way home, I was stuck for an hour.",
    "My phone battery keeps dying, I really need to get it fixed.",
    "Did you see the game? What a finish.",
    "I'm thinking of repainting the kitchen {colour}.",
    "I finally finished that {genre} novel I was reading.",
    "The coffee at the new café around the corner is great.",
    "I've been sleeping badly, too much screen time I guess.",
    "The neighbours are renovating and the drilling never stops.",
    "I need to do laundry, I'm running out of socks.",
)
DISTRACTOR_REACTIONS = ("Haha, same here.", "Oh really?", "That sounds nice.",
                        "Ugh, I know the feeling.", "Fair enough.", "Ha, typical.")
DISTRACTOR_FILLERS = {
    "weather": ("gloomy", "sunny", "windy", "rainy", "humid", "chilly"),
    "movie": ("Dune", "Barbie", "Oppenheimer", "Inception", "Arrival", "Interstellar"),
    "dish": ("a sandwich", "a salad", "leftovers", "a bagel", "an omelette", "a burger"),
    "colour": ("blue", "green", "yellow", "white"),
    "genre": ("mystery", "fantasy", "science fiction", "historical"),
}
GREETINGS = ("Hey {other}! How have you been?", "Hi {other}, good to hear from you!",
             "{other}! It's been a while, how are things?")
CLOSINGS = ("Anyway, I have to run. Talk soon!", "Okay, I'll let you go. Take care!",
            "Great catching up, bye for now!")

_REPLY_KIND = {
    "city_change": "good_news", "job_change": "good_news", "partner_change": "good_news",
    "club_add": "good_news", "vehicle_add": "good_news", "pet_add": "good_news",
    "trip_add": "good_news", "concert_add": "good_news",
    "partner_end": "bad_news", "club_remove": "bad_news", "vehicle_remove": "bad_news",
    "pet_remove": "bad_news",
}


# ----------------------------------------------------------------------- generation --
def _choice(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One element drawn uniformly (Python objects, not numpy scalars)."""
    # rng.random() is several times faster than rng.integers() for single draws.
    return options[int(rng.random() * len(options))]


def _randint(rng: np.random.Generator, low: int, high: int) -> int:
    """An int drawn uniformly from [low, high)."""
    return low + int(rng.random() * (high - low))


@dataclass
class _Person:
    """A speaker's evolving state while the world is generated."""

    name: str
    female: bool
    hidden: frozenset[str]
    pending: list[str]                                   # slots still to introduce
    current: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # slot -> (value, text, detail)
    items: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)  # slot -> value -> (text, detail)
    used: dict[str, set[str]] = field(default_factory=dict)
    touches: dict[str, list[int]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Event:
    """One fact event of a session, with its gold fact and its dialogue statement."""

    fact: GoldFact
    event: str
    statement: str
    offset: int | None


class _WorldBuilder:
    """Draws one world; used once by :func:`generate_world`."""

    def __init__(self, seed: int, num_sessions: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.num_sessions = num_sessions
        self.conv_id = f"synthetic-{num_sessions}-s{seed}"
        self.memory: list[str] = []
        self.global_used: dict[str, set[str]] = {slot: set() for slot in _GLOBALLY_UNIQUE}
        # canonical text of a dated state fact -> (session, speaker, slot, value, detail, date)
        self.dated: dict[str, tuple[int, str, str, str, str, str]] = {}
        self.fact_turns: list[tuple[int, str, str, int | None]] = []
        self.people = self._draw_people()

    # -- setup --
    def _draw_people(self) -> tuple[_Person, _Person]:
        rng, people = self.rng, []
        for _ in range(2):
            female = bool(rng.random() < 0.5)
            taken = {p.name for p in people}
            name = _choice(rng, [n for n in (FEMALE_NAMES if female else MALE_NAMES) if n not in taken])
            num_hidden = int(rng.integers(MIN_HIDDEN, MAX_HIDDEN + 1))
            hidden = rng.choice(len(HIDEABLE_SLOTS), size=num_hidden, replace=False)
            hidden_slots = frozenset(HIDEABLE_SLOTS[int(i)] for i in hidden)
            pending = [s for s in HIDEABLE_SLOTS if s not in hidden_slots]
            people.append(_Person(name, female, hidden_slots, pending))
        return people[0], people[1]

    # -- values --
    def _free_values(self, person: _Person, slot: str,
                     pool: Sequence[str] | None = None) -> list[str]:
        """Values this speaker never had for the slot (nor anybody, where unique).

        Values never come back, so a "when" question names exactly one event.
        """
        used = person.used.get(slot, set()) | self.global_used.get(slot, set())
        return [v for v in (_VALUE_POOLS[slot] if pool is None else pool) if v not in used]

    def _pick_value(self, person: _Person, slot: str, pool: Sequence[str] | None = None) -> str | None:
        free = self._free_values(person, slot, pool)
        return _choice(self.rng, free) if free else None

    def _use(self, person: _Person, slot: str, value: str) -> None:
        person.used.setdefault(slot, set()).add(value)
        if slot in self.global_used:
            self.global_used[slot].add(value)

    # -- events --
    def _possible(self, person: _Person, touched: set[str]) -> list[tuple[float, str, str]]:
        """(weight, action, slot) for every event this speaker may have now."""
        out: list[tuple[float, str, str]] = []
        free = [s for s in person.pending if s not in touched]
        if free:
            out.append((INTRO_WEIGHT, "intro", ""))
        for slot in SCALAR_SLOTS:
            if slot in touched or slot in person.hidden or slot in person.pending:
                continue
            if self._free_values(person, slot):
                out.append((CHANGE_WEIGHTS[slot], "change", slot))
            if slot == PARTNER and PARTNER in person.current:
                out.append((RETRACT_WEIGHTS[slot], "end", slot))
        for slot in LIST_SLOTS:
            if slot in touched or slot in person.hidden or slot in person.pending:
                continue
            held = person.items.get(slot, {})
            cap = LIST_CAPS[slot]
            if (cap is None or len(held) < cap) and self._free_values(person, slot):
                out.append((CHANGE_WEIGHTS[slot], "add", slot))
            if held and slot not in ADD_ONLY_SLOTS:
                out.append((RETRACT_WEIGHTS[slot], "remove", slot))
        return out

    def _draw_offset(self, max_offset: int) -> int:
        return _randint(self.rng, 0, max_offset + 1)

    def _make_event(self, person: _Person, event: str, value: str, session: int,
                    date: dt.date, max_offset: int | None, detail: str = "") -> _Event:
        """Turn an event into its gold fact (applied to the gold memory) and statement."""
        rng = self.rng
        slot, _, is_state = FACT_TEMPLATES[event]
        offset = self._draw_offset(max_offset) if max_offset is not None else None
        when = _choice(rng, relative_date_phrases(offset, date)) if offset is not None else ""
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
        statement = _choice(rng, STATEMENT_TEMPLATES[event]).format(
            value=value, when=when, a_value=f"{_article(value)} {value}", species=detail,
            a_species=f"{_article(detail)} {detail}" if detail else "", relation=detail)
        return _Event(fact, event, statement, offset)

    def _intro(self, person: _Person, slot: str, session: int, date: dt.date,
               max_offset: int) -> _Event | None:
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

    def _add_item(self, person: _Person, slot: str, value: str, session: int, date: dt.date,
                  max_offset: int) -> _Event:
        detail = _choice(self.rng, PET_SPECIES) if slot == PET else ""
        return self._make_event(person, f"{slot}_add", value, session, date, max_offset, detail)

    def _random_event(self, person: _Person, touched: set[str], session: int, date: dt.date,
                      max_offset: int) -> _Event | None:
        options = self._possible(person, touched)
        if not options:
            return None
        draw = self.rng.random() * sum(w for w, _, _ in options)
        for weight, action, slot in options:
            draw -= weight
            if draw < 0:
                break
        if action == "intro":
            slot = _choice(self.rng, [s for s in person.pending if s not in touched])
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
        value = _choice(self.rng, list(held))
        return self._make_event(person, f"{slot}_remove", value, session, date, max_offset,
                                held[value][1])

    def _session_events(self, session: int, date: dt.date, max_offset: int) -> list[_Event]:
        rng, events = self.rng, []
        if session == 0:
            for person in self.people:
                slots = list(ALWAYS_MENTIONED)
                if person.pending and rng.random() < 0.5:
                    slots.append(_choice(rng, person.pending))
                for slot in slots:
                    event = self._intro(person, slot, session, date, max_offset)
                    if event is not None:
                        events.append(event)
            return events
        touched: dict[str, set[str]] = {p.name: set() for p in self.people}
        first = _randint(rng, 0, 2)
        for i in range(_randint(rng, MIN_EVENTS, MAX_EVENTS + 1)):
            # Alternate speakers; fall back to the other one when a speaker has no event.
            for person in (self.people[(first + i) % 2], self.people[(first + i + 1) % 2]):
                event = self._random_event(person, touched[person.name], session, date, max_offset)
                if event is not None:
                    touched[person.name].add(FACT_TEMPLATES[event.event][0])
                    events.append(event)
                    break
        return events

    # -- dialogue --
    def _distractor(self, previous_was_statement: bool, said: set[str]) -> str:
        """Small talk: a reaction to the previous small talk, or a topic not yet raised."""
        rng = self.rng
        if previous_was_statement and rng.random() < 0.5:
            return _choice(rng, DISTRACTOR_REACTIONS)
        fresh = [t for t in DISTRACTOR_STATEMENTS if t not in said]
        template = _choice(rng, fresh or DISTRACTOR_STATEMENTS)
        said.add(template)
        fills = {k: _choice(rng, v) for k, v in DISTRACTOR_FILLERS.items() if "{" + k + "}" in template}
        return template.format(**fills)

    def _turns(self, session: int, events: list[_Event]) -> tuple[Turn, ...]:
        """Alternating turns: greeting, fact statements with replies, small talk, closing."""
        rng = self.rng
        names = [p.name for p in self.people]
        pending = {name: [e for e in events if e.fact.speaker == name] for name in names}
        target = _randint(rng, MIN_TURNS, MAX_TURNS + 1)
        speaker = _randint(rng, 0, 2)
        texts: list[tuple[int, str, _Event | None]] = []
        texts.append((speaker, _choice(rng, GREETINGS).format(other=names[1 - speaker]), None))
        speaker = 1 - speaker
        last_statement, said = False, set()
        while pending[names[0]] or pending[names[1]] or len(texts) < target - 1:
            mine = pending[names[speaker]]
            left = len(pending[names[0]]) + len(pending[names[1]])
            if mine and (rng.random() < 0.6 or len(texts) + 2 * left >= target - 1):
                event = mine.pop(0)
                reply_kind = _REPLY_KIND.get(event.event, "intro")
                texts.append((speaker, event.statement, event))
                texts.append((1 - speaker, _choice(rng, REPLY_TEMPLATES[reply_kind]), None))
                last_statement = False
            else:
                text = self._distractor(last_statement, said)
                last_statement = text not in DISTRACTOR_REACTIONS
                texts.append((speaker, text, None))
                speaker = 1 - speaker
        texts.append((speaker, _choice(rng, CLOSINGS), None))
        turns = []
        for j, (who, text, event) in enumerate(texts):
            dia_id = f"D{session + 1}:{j + 1}"
            turns.append(Turn(speaker=names[who], text=text, dia_id=dia_id))
            if event is not None:
                self.fact_turns.append((session, dia_id, event.fact.text, event.offset))
        return tuple(turns)

    # -- questions --
    def _final_values(self, person: _Person, slot: str) -> tuple[list[str], str]:
        """Final values of a slot (in gold memory order) and their detail."""
        if slot in LIST_SLOTS:
            held = person.items.get(slot, {})
            order = {text: i for i, text in enumerate(self.memory)}
            values = sorted(held, key=lambda v: order[held[v][0]])
            return values, ""
        if slot in person.current:
            value, _, detail = person.current[slot]
            return [value], detail
        return [], ""

    def _question_text(self, qtype: str, slot: str, speaker: str = "", value: str = "",
                       female: bool = True, detail: str = "") -> str:
        template = _choice(self.rng, QUESTION_TEMPLATES[(qtype, slot)])
        return template.format(s=speaker, value=value, name=value, article=_article(value),
                               pronoun="her" if female else "his", species=detail,
                               relation=detail)

    def _questions(self) -> tuple[Question, ...]:
        rng, drafts = self.rng, []
        unanswerable = []
        for person in self.people:
            meta_who = ("speaker", person.name)
            for slot in ALL_SLOTS:
                touches = person.touches.get(slot, [])
                if not touches:
                    relation = ("sister" if rng.random() < 0.5 else "brother") if slot == SIBLING else ""
                    text = self._question_text("slot", slot, person.name, detail=relation)
                    unanswerable.append(Question("", text, UNKNOWN, UNANSWERABLE,
                                                 (_randint(rng, 0, self.num_sessions),),
                                                 (meta_who, ("slot", slot))))
                    continue
                values, detail = self._final_values(person, slot)
                if not values:
                    continue
                kind = KNOWLEDGE_UPDATE if slot in person.changed else SINGLE_HOP
                text = self._question_text("slot", slot, person.name, detail=detail)
                drafts.append(Question("", text, " and ".join(values), kind,
                                       tuple(sorted(set(touches))), (meta_who, ("slot", slot))))
        for text in self.memory:
            if text not in self.dated:
                continue
            session, speaker, slot, value, detail, date_text = self.dated[text]
            female = next(p.female for p in self.people if p.name == speaker)
            question = self._question_text("when", slot, speaker, value, female, detail)
            drafts.append(Question("", question, date_text, TEMPORAL, (session,),
                                   (("speaker", speaker), ("slot", slot), ("value", value))))
        for person in self.people:
            if JOB in person.current and CITY in person.current:
                job = person.current[JOB][0]
                evidence = tuple(sorted({person.touches[JOB][-1], person.touches[CITY][-1]}))
                drafts.append(Question("", self._question_text("multi", CITY, value=job),
                                       person.current[CITY][0], MULTI_HOP, evidence,
                                       (("speaker", person.name), ("slot", CITY), ("job", job))))
        if len(unanswerable) > MAX_UNANSWERABLE:
            keep = sorted(int(i) for i in rng.choice(len(unanswerable), MAX_UNANSWERABLE, replace=False))
            unanswerable = [unanswerable[i] for i in keep]
        drafts = self._cap(drafts + unanswerable)
        order = sorted(range(len(drafts)), key=lambda i: (drafts[i].due_after, i))
        return tuple(
            Question(f"{self.conv_id}-q{n}", drafts[i].question, drafts[i].answer, drafts[i].kind,
                     drafts[i].evidence, drafts[i].meta)
            for n, i in enumerate(order)
        )

    def _cap(self, drafts: list[Question]) -> list[Question]:
        """A random subset of at most the question cap, keeping one question of each kind."""
        cap = max(MAX_QUESTIONS_PER_SESSION * self.num_sessions, MIN_QUESTION_CAP)
        if len(drafts) <= cap:
            return drafts
        shuffled = [int(i) for i in self.rng.permutation(len(drafts))]
        first_of_kind = {}
        for i in shuffled:
            first_of_kind.setdefault(drafts[i].kind, i)
        keep = set(first_of_kind.values())
        for i in shuffled:
            if len(keep) >= cap:
                break
            keep.add(i)
        return [d for i, d in enumerate(drafts) if i in keep]

    # -- the whole world --
    def build(self) -> Conversation:
        rng = self.rng
        date = dt.date(FIRST_YEAR, 1, 1) + dt.timedelta(days=int(rng.integers(FIRST_SESSION_SPREAD_DAYS)))
        sessions = []
        for i in range(self.num_sessions):
            if i == 0:
                max_offset = MAX_EVENT_OFFSET_DAYS
            else:
                gap = _randint(rng, MIN_GAP_DAYS, MAX_GAP_DAYS + 1)
                date += dt.timedelta(days=gap)
                max_offset = min(MAX_EVENT_OFFSET_DAYS, gap - 1)
            events = self._session_events(i, date, max_offset)
            turns = self._turns(i, events)
            sessions.append(Session(index=i, date=format_date(date), turns=turns,
                                    gold_facts=tuple(e.fact for e in events),
                                    gold_memory=tuple(self.memory)))
        return Conversation(
            conv_id=self.conv_id,
            speakers=(self.people[0].name, self.people[1].name),
            sessions=tuple(sessions),
            questions=self._questions(),
            source="synthetic",
            extra={"fact_turns": tuple(self.fact_turns)},
        )


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def generate_world(seed: int, num_sessions: int = 8) -> Conversation:
    """The synthetic world of this seed: a deterministic, pure function of its arguments.

    ``Conversation.extra["fact_turns"]`` lists ``(session, dia_id, canonical fact text,
    offset in days or None)`` for every turn that states a fact.
    """
    seed = _check_int("seed", seed, 0)
    num_sessions = _check_int("num_sessions", num_sessions, 1, MAX_SESSIONS)
    return _WorldBuilder(seed, num_sessions).build()


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


# --------------------------------------------------------------------------- source --
WORLD_CACHE_SIZE = 256


@functools.lru_cache(maxsize=WORLD_CACHE_SIZE)
def _cached_world(seed: int, num_sessions: int) -> Conversation:
    return generate_world(seed, num_sessions)


class SyntheticSource(ConversationSource):
    """Synthetic worlds by seed: a fixed list of seeds, or any seed (unbounded).

    ``num_sessions`` is an int from 1 to ``constants.MAX_SESSIONS``. ``get(seed)`` returns
    the same (cached) conversation object for the same seed.
    """

    def __init__(self, num_sessions: int = 8, world_seeds: Sequence[int] | None = None) -> None:
        self.num_sessions = _check_int("num_sessions", num_sessions, 1, MAX_SESSIONS)
        if world_seeds is None:
            self.world_seeds: tuple[int, ...] | None = None
        else:
            if isinstance(world_seeds, (str, bytes)) or not isinstance(world_seeds, Sequence):
                raise TypeError(f"world_seeds must be a sequence of ints, got {world_seeds!r}")
            seeds = tuple(_check_int("world seed", s, 0) for s in world_seeds)
            if not seeds:
                raise ValueError("world_seeds must not be empty (use None for any seed)")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"world_seeds has duplicates: {list(world_seeds)}")
            self.world_seeds = seeds

    def keys(self) -> list[int] | None:
        """The world seeds, or None when any seed may be drawn."""
        return None if self.world_seeds is None else list(self.world_seeds)

    def get(self, key: Any) -> Conversation:
        """The world of seed ``key``; ``ValueError`` when it is not one of ``world_seeds``."""
        try:
            if isinstance(key, bool):
                raise TypeError(key)
            seed = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"synthetic world key must be an int seed, got {key!r}") from None
        if isinstance(key, float) and key != seed:
            raise ValueError(f"synthetic world key must be an int seed, got {key!r}")
        if seed < 0:
            raise ValueError(f"synthetic world seed must be >= 0, got {key!r}")
        if self.world_seeds is not None and seed not in self.world_seeds:
            raise ValueError(f"seed {key!r} is not one of this source's world_seeds")
        return _cached_world(seed, self.num_sessions)

    def sample(self, rng: np.random.Generator) -> Conversation:
        """A world drawn with the environment's RNG (any seed below 2**31 - 1 if unbounded)."""
        if self.world_seeds is None:
            return self.get(int(rng.integers(2**31 - 1)))
        return super().sample(rng)
