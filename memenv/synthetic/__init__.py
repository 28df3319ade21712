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

Modules, in the order they build on each other:

- :mod:`~memenv.synthetic.vocabulary`: the slots and the values they take (names, cities, jobs...);
- :mod:`~memenv.synthetic.dates`: absolute and relative date phrases, written and read back;
- :mod:`~memenv.synthetic.sampling`: the single random draws, from the world's own RNG;
- :mod:`~memenv.synthetic.texts`: canonical fact and question texts, their templates and parsers;
- :mod:`~memenv.synthetic.dialogue`: how facts are spoken in turns, replies and small talk;
- :mod:`~memenv.synthetic.people`: the two speakers and the state each holds;
- :mod:`~memenv.synthetic.questions`: the questions of a world, from its final state;
- :mod:`~memenv.synthetic.world`: the world builder, :func:`generate_world`, :func:`apply_gold_facts`;
- :mod:`~memenv.synthetic.hard`: hard worlds (``difficulty="hard"``): history merged into
  one text per slot, corrections, third-party facts, distractor talk, history / ordering /
  counting questions and a memory budget;
- :mod:`~memenv.synthetic.source`: :class:`SyntheticSource`, the ``"synthetic"`` data source.

The names code outside the package uses are re-exported here: write
``from memenv.synthetic import X``. The helpers the modules share (``sampling``,
``texts.question_text``, ``dialogue.session_turns``...) are the package's own.
"""

from memenv.synthetic.dates import (
    MAX_EVENT_OFFSET_DAYS,
    MONTHS,
    WEEKDAYS,
    find_relative_phrase,
    format_date,
    parse_date,
    relative_date_phrases,
    resolve_relative_date,
)
from memenv.synthetic.dialogue import (
    CLOSINGS,
    DISTRACTOR_FILLERS,
    DISTRACTOR_REACTIONS,
    DISTRACTOR_STATEMENTS,
    GREETINGS,
    MAX_TURNS,
    MIN_TURNS,
    REPLY_TEMPLATES,
    STATEMENT_TEMPLATES,
)
from memenv.synthetic.people import MAX_HIDDEN, MIN_HIDDEN
from memenv.synthetic.questions import (
    MAX_QUESTIONS_PER_SESSION,
    MAX_UNANSWERABLE,
    MIN_QUESTION_CAP,
    UNKNOWN,
)
from memenv.synthetic.source import WORLD_CACHE_SIZE, SyntheticSource
from memenv.synthetic.texts import (
    FACT_TEMPLATES,
    HARD_FACT_TEMPLATES,
    HARD_QUESTION_TEMPLATES,
    HISTORY_NOUNS,
    PARSE_CACHE_SIZE,
    QUESTION_TEMPLATES,
    PastState,
    history_text,
    ParsedFact,
    ParsedQuestion,
    canonical_fact,
    parse_fact,
    parse_question,
)
from memenv.synthetic.vocabulary import (
    ADD_ONLY_SLOTS,
    ALL_SLOTS,
    ALWAYS_MENTIONED,
    ARTISTS,
    BROTHER_NAMES,
    CITIES,
    CITY,
    CLUB,
    CLUBS,
    CONCERT,
    COUNTRIES,
    FEMALE_NAMES,
    FOOD,
    FOODS,
    HIDEABLE_SLOTS,
    INSTRUMENT,
    INSTRUMENTS,
    JOB,
    JOBS,
    LIST_SLOTS,
    MALE_NAMES,
    PARTNER,
    PARTNER_NAMES,
    PET,
    PET_NAMES,
    PET_SPECIES,
    SCALAR_SLOTS,
    SIBLING,
    SISTER_NAMES,
    STATIC_SLOTS,
    TRIP,
    VEHICLE,
    VEHICLES,
)
from memenv.synthetic.world import (
    CHANGE_WEIGHTS,
    FIRST_SESSION_SPREAD_DAYS,
    FIRST_YEAR,
    INTRO_WEIGHT,
    LIST_CAPS,
    MAX_EVENTS,
    MAX_GAP_DAYS,
    MIN_EVENTS,
    MIN_GAP_DAYS,
    DIFFICULTIES,
    RETRACT_WEIGHTS,
    apply_gold_facts,
    generate_world,
)

# Hard worlds register their builder (generate_world(..., difficulty="hard")) on import.
from memenv.synthetic import hard as _hard  # noqa: F401

# The public names of the package when it was a single module, so every import keeps working.
__all__ = [
    "ADD_ONLY_SLOTS", "ALL_SLOTS", "ALWAYS_MENTIONED", "ARTISTS", "BROTHER_NAMES",
    "CHANGE_WEIGHTS", "CITIES", "CITY", "CLOSINGS", "CLUB", "CLUBS", "CONCERT", "COUNTRIES",
    "DISTRACTOR_FILLERS", "DISTRACTOR_REACTIONS", "DISTRACTOR_STATEMENTS", "FACT_TEMPLATES",
    "FEMALE_NAMES", "FIRST_SESSION_SPREAD_DAYS", "FIRST_YEAR", "FOOD", "FOODS", "GREETINGS",
    "HIDEABLE_SLOTS", "INSTRUMENT", "INSTRUMENTS", "INTRO_WEIGHT", "JOB", "JOBS", "LIST_CAPS",
    "LIST_SLOTS", "MALE_NAMES", "MAX_EVENTS", "MAX_EVENT_OFFSET_DAYS", "MAX_GAP_DAYS",
    "MAX_HIDDEN", "MAX_QUESTIONS_PER_SESSION", "MAX_TURNS", "MAX_UNANSWERABLE", "MIN_EVENTS",
    "MIN_GAP_DAYS", "MIN_HIDDEN", "MIN_QUESTION_CAP", "MIN_TURNS", "MONTHS",
    "PARSE_CACHE_SIZE", "PARTNER", "PARTNER_NAMES", "PET", "PET_NAMES", "PET_SPECIES",
    "QUESTION_TEMPLATES", "REPLY_TEMPLATES", "RETRACT_WEIGHTS", "SCALAR_SLOTS", "SIBLING",
    "SISTER_NAMES", "STATEMENT_TEMPLATES", "STATIC_SLOTS", "TRIP", "UNKNOWN", "VEHICLE",
    "VEHICLES", "WEEKDAYS", "WORLD_CACHE_SIZE", "ParsedFact", "ParsedQuestion",
    "SyntheticSource", "apply_gold_facts", "canonical_fact", "find_relative_phrase",
    "format_date", "generate_world", "parse_date", "parse_fact", "parse_question",
    "relative_date_phrases", "resolve_relative_date",
    # hard worlds
    "DIFFICULTIES", "HARD_FACT_TEMPLATES", "HARD_QUESTION_TEMPLATES", "HISTORY_NOUNS", "PastState",
    "history_text",
]
