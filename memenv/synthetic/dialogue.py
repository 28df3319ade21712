"""How facts are spoken: the turns of a session around its fact events.

In the dialogue a fact is said in the first person with one of several paraphrases and
a relative date (see :mod:`memenv.synthetic.dates`); the other speaker replies without
repeating the value, so only the statement carries the fact. Greetings, small talk and
a closing fill the rest of the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memenv.synthetic.sampling import choice, randint
from memenv.synthetic.texts import article
from memenv.types import GoldFact, Turn

MIN_TURNS, MAX_TURNS = 8, 16

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
    # hard worlds only
    "correction": ("Ah, thanks for setting that straight.", "Got it, I'll remember that.",
                   "No worries, noted."),
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
    "correction": "correction", "third_city": "good_news", "third_job": "good_news",
    "third_club": "bad_news", "third_vehicle": "bad_news",
}



# ------------------------------------------------------------------ hard worlds --
# A change names the value it ends, so the past-state fact it implies is in the dialogue.
HARD_CHANGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "city_change": ("I left {old} and moved to {value} {when}!",
                    "After my years in {old}, I moved to {value} {when}.",
                    "Goodbye {old}: I moved to {value} {when}, the apartment is still full of boxes."),
    "job_change": ("I quit my job as {a_old} and started working as {a_value} {when}.",
                   "No more working as {a_old}: my first day as {a_value} was {when}.",
                   "I stopped working as {a_old} and began working as {a_value} {when}."),
    "partner_change": ("I'm not with {old} anymore: I started dating {value} {when}.",
                       "{old} and I are over, and {value} and I became a couple {when}.",
                       "I ended things with {old} and started seeing {value} {when}."),
}
# Facts about people the speaker knows: kept, but never the speaker's own.
THIRD_PARTY_TEMPLATES: dict[str, tuple[str, ...]] = {
    "third_city": ("My {kin} moved to {value} {when}, I'll miss having them close.",
                   "Did I tell you? My {kin} relocated to {value} {when}.",
                   "My {kin} packed up and moved to {value} {when}."),
    "third_job": ("My {kin} started working as {a_value} {when}.",
                  "My {kin} got a job as {a_value} {when}, good for them.",
                  "My {kin} began a new career as {a_value} {when}."),
    "third_club": ("My {kin} quit the {value} {when}, too busy with work.",
                   "My {kin} left the {value} {when}, they said it wasn't fun anymore."),
    "third_vehicle": ("My {kin} sold their {value} {when}, they take the bus now.",
                      "My {kin} got rid of their {value} {when}."),
}
# Corrections of an earlier session's statement, with absolute dates (a relative phrase
# could not name a day of an earlier session). {past} is the first-person event.
CORRECTION_DATE_TEMPLATES = (
    "Oh, I got a date wrong last time: I {past} on {new}, not on {old}.",
    "Correction to what I told you before: I {past} on {new}, not {old}.",
    "Wait, I mixed up the dates earlier: I actually {past} on {new}, not on {old}.",
)
CORRECTION_VALUE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "trip": ("I mixed up my trips last time: on {date} I travelled to {new}, not {old}.",
             "Correction: the trip on {date} was to {new}, not to {old}, I keep confusing them."),
    "concert": ("I mixed it up last time: on {date} I saw {new} in concert, not {old}.",
                "Correction: the concert on {date} was {new}, not {old}, silly me."),
    "club": ("I mixed it up last time: on {date} I joined the {new}, not the {old}.",
             "Correction: the club I joined on {date} is the {new}, not the {old}."),
    "vehicle": ("Correction: the car I bought on {date} is {a_new}, not {a_old}.",
                "I mixed up the cars last time: on {date} I bought {a_new}, not {a_old}."),
    "pet": ("I got the name wrong last time: the {species} I adopted on {date} is called {new}, not {old}.",
            "Correction: the {species} I adopted on {date} is named {new}, not {old}."),
}
# slot -> the first-person event of a date correction ({a_value}: the value with its article).
CORRECTION_PAST: dict[str, str] = {
    "city": "moved to {value}", "job": "started working as {a_value}",
    "partner": "started dating {value}", "club": "joined the {value}", "vehicle": "bought my {value}",
    "pet": "adopted {value}", "trip": "travelled to {value}", "concert": "saw {value} in concert",
}
# Talk that looks like a fact but is none for the speaker: hypotheticals and plans that
# fall through, and negations. (kind, slot) -> templates; no gold fact comes of them.
ASIDE_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("hypothetical", "city"): ("I thought about moving to {value}, but we stayed.",
                               "We almost moved to {value} this year, but it fell through."),
    ("hypothetical", "job"): ("I was offered a job as {a_value}, but I turned it down.",
                              "I nearly applied to work as {a_value}, but I changed my mind."),
    ("hypothetical", "vehicle"): ("I was going to buy {a_value}, but the deal fell through.",
                                  "I test-drove {a_value}, but I didn't buy it in the end."),
    ("plan", "trip"): ("I'm planning a trip to {value} someday, if I ever find the time.",
                       "One day I'd love to travel to {value}, maybe next year."),
    ("plan", "club"): ("I might join the {value} at some point, but not yet.",),
    ("negation", "club"): ("No, I never joined the {value}, I only went to one open day.",),
    ("negation", "trip"): ("I've never been to {value}, people always assume I have.",),
    ("negation", "concert"): ("I never got to see {value} live, the tickets sold out.",),
}
ASIDE_REPLIES = ("Oh, maybe next time.", "Ah, I see.", "That's a shame.", "Fair enough, no rush.")


@dataclass(frozen=True)
class FactEvent:
    """One fact event of a session, with its gold fact and its dialogue statement.

    ``extra_facts`` are further gold operations the same statement calls for (hard worlds:
    the past-state text a change leaves comes first, in ``facts``)."""

    fact: GoldFact
    event: str
    statement: str
    offset: int | None
    extra_facts: tuple[GoldFact, ...] = ()
    before: bool = True   # extra facts precede ``fact`` in the session's gold facts
    # Hard worlds: the fact texts the statement itself states (what a perfect extractor
    # keeps), when they differ from the gold facts' texts (a past-state text is written
    # by the manager from memory, not said).
    stated: tuple[str, ...] | None = None
    # False: the statement's fact is extracted but the gold manager stores nothing (hard
    # worlds: a third party's news), so ``facts`` is empty.
    stored: bool = True

    @property
    def facts(self) -> tuple[GoldFact, ...]:
        """Every gold fact of the event, in the order the gold memory applies them."""
        if not self.stored:
            return ()
        return self.extra_facts + (self.fact,) if self.before else (self.fact,) + self.extra_facts


@dataclass(frozen=True)
class Aside:
    """A distractor statement of a hard world: looks like a fact, carries none."""

    speaker: str
    text: str
    kind: str
    slot: str
    value: str


def statement(rng: np.random.Generator, event: str, value: str, when: str, detail: str = "") -> str:
    """The first-person statement of an event, in one of its paraphrases drawn at random."""
    return choice(rng, STATEMENT_TEMPLATES[event]).format(
        value=value, when=when, a_value=f"{article(value)} {value}", species=detail,
        a_species=f"{article(detail)} {detail}" if detail else "", relation=detail)


def distractor(rng: np.random.Generator, previous_was_statement: bool, said: set[str]) -> str:
    """Small talk: a reaction to the previous small talk, or a topic not yet raised."""
    if previous_was_statement and rng.random() < 0.5:
        return choice(rng, DISTRACTOR_REACTIONS)
    fresh = [t for t in DISTRACTOR_STATEMENTS if t not in said]
    template = choice(rng, fresh or DISTRACTOR_STATEMENTS)
    said.add(template)
    fills = {k: choice(rng, v) for k, v in DISTRACTOR_FILLERS.items() if "{" + k + "}" in template}
    return template.format(**fills)


def session_turns(rng: np.random.Generator, session: int, names: Sequence[str],
                  events: Sequence[FactEvent], asides: Sequence[Aside] = (),
                  aside_turns: list | None = None) -> tuple[tuple[Turn, ...], list[tuple[int, str, str, int | None]]]:
    """Alternating turns: greeting, fact statements with replies, small talk, closing.

    Returns the turns of session ``session`` between the two speakers ``names``, and
    ``(session, dia_id, canonical fact text, offset)`` for each gold fact a turn states.
    ``asides`` (hard worlds) are said among the fact statements of their speaker;
    ``(session, dia_id, kind, speaker, slot, value)`` of each goes to ``aside_turns``.
    """
    pending: dict[str, list] = {name: [e for e in events if e.fact.speaker == name] for name in names}
    for aside in asides:
        mine = pending[aside.speaker]
        mine.insert(randint(rng, 0, len(mine) + 1), aside)
    target = randint(rng, MIN_TURNS, MAX_TURNS + 1)
    speaker = randint(rng, 0, 2)
    texts: list[tuple[int, str, FactEvent | None]] = []
    texts.append((speaker, choice(rng, GREETINGS).format(other=names[1 - speaker]), None))
    speaker = 1 - speaker
    last_statement, said = False, set()
    while pending[names[0]] or pending[names[1]] or len(texts) < target - 1:
        mine = pending[names[speaker]]
        left = len(pending[names[0]]) + len(pending[names[1]])
        if mine and (rng.random() < 0.6 or len(texts) + 2 * left >= target - 1):
            event = mine.pop(0)
            if isinstance(event, Aside):
                texts.append((speaker, event.text, event))
                texts.append((1 - speaker, choice(rng, ASIDE_REPLIES), None))
                last_statement = False
                continue
            reply_kind = _REPLY_KIND.get(event.event, "intro")
            texts.append((speaker, event.statement, event))
            texts.append((1 - speaker, choice(rng, REPLY_TEMPLATES[reply_kind]), None))
            last_statement = False
        else:
            text = distractor(rng, last_statement, said)
            last_statement = text not in DISTRACTOR_REACTIONS
            texts.append((speaker, text, None))
            speaker = 1 - speaker
    texts.append((speaker, choice(rng, CLOSINGS), None))
    turns, fact_turns = [], []
    for j, (who, text, event) in enumerate(texts):
        dia_id = f"D{session + 1}:{j + 1}"
        turns.append(Turn(speaker=names[who], text=text, dia_id=dia_id))
        if isinstance(event, Aside):
            if aside_turns is not None:
                aside_turns.append((session, dia_id, event.kind, event.speaker, event.slot, event.value))
        elif event is not None:
            texts = event.stated if event.stated is not None else [fact.text for fact in event.facts]
            fact_turns += [(session, dia_id, text, event.offset) for text in texts]
    return tuple(turns), fact_turns
