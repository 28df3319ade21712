"""The two speakers of a world: who they are, and what they hold as the world unfolds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from memenv.synthetic.sampling import choice
from memenv.synthetic.vocabulary import FEMALE_NAMES, HIDEABLE_SLOTS, MALE_NAMES

# Each speaker has 1 or 2 hideable slots that never come up (unanswerable questions).
MIN_HIDDEN, MAX_HIDDEN = 1, 2


@dataclass
class Person:
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


def draw_people(rng: np.random.Generator) -> tuple[Person, Person]:
    """Two speakers with distinct names, each with the slots that will never come up."""
    people: list[Person] = []
    for _ in range(2):
        female = bool(rng.random() < 0.5)
        taken = {p.name for p in people}
        name = choice(rng, [n for n in (FEMALE_NAMES if female else MALE_NAMES) if n not in taken])
        num_hidden = int(rng.integers(MIN_HIDDEN, MAX_HIDDEN + 1))
        hidden = rng.choice(len(HIDEABLE_SLOTS), size=num_hidden, replace=False)
        hidden_slots = frozenset(HIDEABLE_SLOTS[int(i)] for i in hidden)
        pending = [s for s in HIDEABLE_SLOTS if s not in hidden_slots]
        people.append(Person(name, female, hidden_slots, pending))
    return people[0], people[1]
