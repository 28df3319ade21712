"""The slots a speaker has and the values each slot takes.

Slots are grouped by how they evolve (scalar and changeable, multi-valued, said once);
the value pools are what a world draws names, places, jobs and so on from.
"""

from __future__ import annotations

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

# People a speaker talks about in hard worlds ("my cousin moved to Rome"): their facts are
# kept apart from the speaker's own.
KIN = ("cousin", "neighbour", "colleague", "best friend", "uncle", "aunt")

# slot -> the values it draws from. Siblings are missing: their pool depends on the
# relation (SISTER_NAMES or BROTHER_NAMES), drawn first.
VALUE_POOLS: dict[str, tuple[str, ...]] = {
    CITY: CITIES, JOB: JOBS, PARTNER: PARTNER_NAMES, CLUB: CLUBS, VEHICLE: VEHICLES,
    PET: PET_NAMES, TRIP: COUNTRIES, CONCERT: ARTISTS,
    INSTRUMENT: INSTRUMENTS, FOOD: FOODS,
}
# Values no two speakers share over a whole world: a job names its holder in multi-hop
# questions, and a shared partner, pet or sibling name would be confusing.
GLOBALLY_UNIQUE_SLOTS = (JOB, PARTNER, PET, SIBLING)
