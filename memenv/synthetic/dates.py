"""Dates as the synthetic worlds write them: absolute (``"8 May 2023"``) and relative.

Sessions and canonical facts carry absolute dates; the dialogue says when something
happened with a *relative* phrase ("yesterday", "three days ago", "last Tuesday", "on
Tuesday"). A weekday always means the most recent one strictly before the session date.
"""

from __future__ import annotations

import datetime as dt
import re

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A dated event happens at most this many days before the session that tells it, and
# always after the previous session, so events never go back in time. A week is also
# the most a weekday phrase can name without ambiguity.
MAX_EVENT_OFFSET_DAYS = 7


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
