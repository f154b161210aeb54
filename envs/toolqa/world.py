"""A small encyclopedia generated from a seed: people, cities, companies and works, their attributes and the
relations between them, each entity with a short page.

Every sentence of a page states exactly one fact, ``(entity, field)``; a search snippet is one sentence, so
the environment always knows which facts the agent has seen. Relations point one way (a company page names
its founder; the founder's page does not name the company), so following a chain of relations means reading
one page per link.

Schema (field -> value; relations name another entity):

========  ==========================================================================
person    occupation, birth_year, born_in -> city, employer -> company
city      country, founded, population, mayor -> person
company   founded, employees, founder -> person, headquarters -> city
work      genre, year, author -> person, publisher -> company
========  ==========================================================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

KINDS = ("person", "city", "company", "work")

#: Relation fields: (kind that has it, kind it points to).
RELATIONS: dict[str, tuple[str, str]] = {
    "born_in": ("person", "city"),
    "employer": ("person", "company"),
    "mayor": ("city", "person"),
    "founder": ("company", "person"),
    "headquarters": ("company", "city"),
    "author": ("work", "person"),
    "publisher": ("work", "company"),
}

#: Attribute fields per kind; numeric ones can be compared and subtracted.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "person": ("occupation", "birth_year"),
    "city": ("country", "founded", "population"),
    "company": ("founded", "employees"),
    "work": ("genre", "year"),
}
NUMERIC_ATTRIBUTES = frozenset({"birth_year", "founded", "population", "employees", "year"})

#: How many entities of each kind one world holds.
WORLD_SIZE = {"person": 12, "city": 6, "company": 6, "work": 6}

_FIRST_NAMES = (
    "Ada Alma Anton Aurel Bela Bruno Carla Cyril Dalia Edda Elias Emil Fenna Greta Hanno Ida Ilse Ivo Jonas "
    "Kasia Lena Linus Mara Milo Nadia Nils Olga Oskar Petra Rafael Rosa Selma Sven Tilda Tomas Una Vera "
    "Viktor Wanda Yara"
).split()
_SYLLABLES = "bar bel dor fen gar hal kem lin mor nor pel quin ras sel tor ul van wen yst zan".split()
_SURNAME_ENDINGS = ("son", "berg", "ova", "quist", "ard", "ski", "ley", "mann")
_CITY_ENDINGS = ("haven", "ford", "burg", "mouth", "field", "stad", "port", "vale")
_COMPANY_ENDINGS = ("Industries", "Labs", "Group", "Works", "Systems", "Holdings", "Foundry", "Media")
_ADJECTIVES = (
    "Silent Hidden Golden Broken Distant Crimson Quiet Endless Hollow Burning Frozen Lost Secret Wandering "
    "Pale Iron"
).split()
_NOUNS = (
    "River Garden Harbor Mirror Orchard Lantern Tower Voyage Winter Forest Bridge Letter Compass Island "
    "Meadow Signal"
).split()
_COUNTRIES = ("Valdoria", "Esmark", "Norvania", "Calteria", "Ostrava", "Lunesia", "Brenmoor", "Tarsland")
_OCCUPATIONS = (
    "chemist", "architect", "novelist", "engineer", "painter", "physician", "economist", "composer",
    "historian", "pilot", "botanist", "lawyer",
)
_GENRES = ("novel", "poetry collection", "film", "play", "biography", "album")


@dataclass(frozen=True)
class Entity:
    """One entity: its unique name, kind, and field values (relations hold the other entity's name)."""

    name: str
    kind: str
    fields: dict[str, int | str]


@dataclass
class World:
    """Entities by lower-cased name, and each entity's page as ``(field, sentence)`` pairs."""

    entities: dict[str, Entity]
    pages: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def entity(self, name: str) -> Entity:
        return self.entities[name.lower()]

    def value(self, name: str, field_name: str) -> int | str:
        return self.entity(name).fields[field_name]

    def names(self, kind: str | None = None) -> list[str]:
        return [e.name for e in self.entities.values() if kind is None or e.kind == kind]

    def page_text(self, name: str) -> str:
        return " ".join(sentence for _, sentence in self.pages[name.lower()])

    def digest(self) -> str:
        """A short hash of the whole world, for state keys."""
        text = "\n".join(f"{e.name}|{sorted(e.fields.items())}" for e in self.entities.values())
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def generate_world(rng: np.random.Generator, size: dict[str, int] | None = None) -> World:
    """A random, internally consistent world (founders are adults when their company is founded, ...)."""
    size = dict(WORLD_SIZE if size is None else size)
    used: set[str] = set()

    def unique(make) -> str:
        for _ in range(1000):
            name = make()
            if name.lower() not in used:
                used.add(name.lower())
                return name
        raise RuntimeError("name space exhausted; use a smaller world")

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def surname() -> str:
        return (pick(_SYLLABLES) + pick(_SYLLABLES)[:2] + pick(_SURNAME_ENDINGS)).capitalize()

    people = [unique(lambda: f"{pick(_FIRST_NAMES)} {surname()}") for _ in range(size["person"])]
    cities = [unique(lambda: (pick(_SYLLABLES) + pick(_CITY_ENDINGS)).capitalize()) for _ in range(size["city"])]
    companies = [
        unique(lambda: f"{(pick(_SYLLABLES) + pick(_SYLLABLES)).capitalize()} {pick(_COMPANY_ENDINGS)}")
        for _ in range(size["company"])
    ]
    works = [unique(lambda: f"The {pick(_ADJECTIVES)} {pick(_NOUNS)}") for _ in range(size["work"])]

    birth = {p: int(rng.integers(1930, 1996)) for p in people}
    entities: dict[str, Entity] = {}
    for p in people:
        entities[p.lower()] = Entity(
            p,
            "person",
            {
                "occupation": pick(_OCCUPATIONS),
                "birth_year": birth[p],
                "born_in": pick(cities),
                "employer": pick(companies),
            },
        )
    for c in cities:
        entities[c.lower()] = Entity(
            c,
            "city",
            {
                "country": pick(_COUNTRIES),
                "founded": int(rng.integers(1100, 1900)),
                "population": int(rng.integers(20, 2500)) * 1000,
                "mayor": pick(people),
            },
        )
    for c in companies:
        founder = pick(people)
        entities[c.lower()] = Entity(
            c,
            "company",
            {
                # between the founder's 22nd and 60th birthdays, and not after 2022
                "founded": birth[founder] + int(rng.integers(22, min(60, 2022 - birth[founder]) + 1)),
                "employees": int(rng.integers(50, 90000)),
                "founder": founder,
                "headquarters": pick(cities),
            },
        )
    for w in works:
        author = pick(people)
        entities[w.lower()] = Entity(
            w,
            "work",
            {
                "genre": pick(_GENRES),
                "year": birth[author] + int(rng.integers(18, min(70, 2024 - birth[author]) + 1)),
                "author": author,
                "publisher": pick(companies),
            },
        )
    world = World(entities)
    world.pages = {key: _page(entity) for key, entity in entities.items()}
    return world


def _page(e: Entity) -> list[tuple[str, str]]:
    """One sentence per fact, in a fixed order per kind."""
    n, f = e.name, e.fields
    if e.kind == "person":
        return [
            ("occupation", f"{n} is a {f['occupation']}."),
            ("birth_year", f"{n} was born in {f['birth_year']}."),
            ("born_in", f"{n}'s birthplace is the city of {f['born_in']}."),
            ("employer", f"{n} works for {f['employer']}."),
        ]
    if e.kind == "city":
        return [
            ("country", f"{n} is a city in {f['country']}."),
            ("founded", f"{n} was founded in {f['founded']}."),
            ("population", f"{n} has a population of {f['population']:,}."),
            ("mayor", f"The mayor of {n} is {f['mayor']}."),
        ]
    if e.kind == "company":
        return [
            ("founded", f"{n} is a company founded in {f['founded']}."),
            ("founder", f"{n} was founded by {f['founder']}."),
            ("headquarters", f"{n} is headquartered in {f['headquarters']}."),
            ("employees", f"{n} employs {f['employees']:,} people."),
        ]
    return [
        ("genre", f"{n} is a {f['genre']}."),
        ("year", f"{n} was published in {f['year']}."),
        ("author", f"{n} was written by {f['author']}."),
        ("publisher", f"{n} was published by {f['publisher']}."),
    ]
