"""The built-in benchmark: a deterministic fictitious world (`unlearnkit world`).

`build_world(out, seed, size, num_requests)` writes the WORLD folder of docs/contracts.md:
people with eight attributes and a few relations (mentor, sibling, co-author), one QA record per
fact (with paraphrased questions, a paraphrased answer and wrong answers of the same type), a
biography passage per person, 2-hop probes about the forgotten people, a real-knowledge QA set
(from `countryinfo`) and real English text (from files that scikit-learn ships). The `stream`
size, for long request streams, asks about three of the attributes and keeps the biography to
those facts (`SIZES`).

People are split into K sequential forget requests, **neighbours** (related to forgotten people,
trained, kept), a **retain** group (trained, kept) and a **holdout** group (never trained).
Every random choice comes from one `random.Random(seed)`, and request timestamps are fixed, so
the same seed and size give byte-identical files.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from unlearnkit.benchmark import world_pools as pools
from unlearnkit.benchmark import world_templates as tpl
from unlearnkit.data.knowledge import general_text_records, real_fact_records
from unlearnkit.data.loaders import write_jsonl
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.data.world import WORLD_FILES, WORLD_MARKER, Person
from unlearnkit.errors import UnlearnkitError
from unlearnkit.files import atomic_dir, write_json

FIRST_REQUEST_AT = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
BIO_MIN_WORDS = 150
NUM_WRONG = 3
PROBES_PER_PERSON = 2


@dataclass(frozen=True)
class WorldSize:
    """How many people each group holds (forgotten people per request; the others in total), and
    how much each person's records tell."""

    per_request: int
    retain: int
    holdout: int
    real_countries: int
    general_passages: int
    # The attributes asked about (a person's relations are always asked) and told in the
    # biography; the biography is padded to `bio_min_words`, or with 0 holds only the opening
    # and the sentences of those facts (no closing, no filler).
    attributes: tuple[str, ...] = tpl.ATTRIBUTES
    bio_min_words: int = BIO_MIN_WORDS
    forgotten_per_neighbour: int = 2  # how many forgotten people point to the same neighbour

    def neighbours(self, num_forgotten: int) -> int:
        # With 2, two forgotten people share a neighbour, so a neighbour can be hit by two requests.
        return max(1, math.ceil(num_forgotten / self.forgotten_per_neighbour))


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize(per_request=1, retain=2, holdout=2, real_countries=6, general_passages=4),
    "small": WorldSize(per_request=2, retain=4, holdout=6, real_countries=30, general_passages=16),
    "medium": WorldSize(per_request=5, retain=20, holdout=15, real_countries=42, general_passages=20),
    # Long request streams (`--size stream --requests 100`, docs/benchmark.md "The stream world"):
    # one person per request, 3 facts per person plus the relation to a neighbour and a
    # biography of those facts only (about 260 tokens a person against 620 in `small`), one
    # neighbour per 5 forgotten people. Every prepared model trains on every kept person, so
    # tokens per person times people times models is what the 2-hour cold budget pays for.
    "stream": WorldSize(per_request=1, retain=10, holdout=16, real_countries=30, general_passages=16,
                        attributes=("birthplace", "profession", "work"), bio_min_words=0, forgotten_per_neighbour=5),
}


# -- people and relations ------------------------------------------------------------------


def _split_plan(size: WorldSize, num_requests: int) -> list[tuple[str, int]]:
    forgotten = size.per_request * num_requests
    groups = [(f"r{k}", size.per_request) for k in range(1, num_requests + 1)]
    return [*groups, ("neighbours", size.neighbours(forgotten)), ("retain", size.retain), ("holdout", size.holdout)]


def _relations(splits: dict[str, list[str]], num_requests: int) -> list[tuple[str, str, str]]:
    """(relation, from person, to person). Every forgotten person points to a neighbour;
    retain and holdout people pair up among themselves, so each group has 2-hop paths."""
    kinds = ("mentor", "sibling", "coauthor")
    relations: list[tuple[str, str, str]] = []
    neighbours = splits["neighbours"]
    forgotten = [p for k in range(1, num_requests + 1) for p in splits[f"r{k}"]]
    has_sibling: set[str] = set()
    for i, person in enumerate(forgotten):
        target = neighbours[i % len(neighbours)]
        kind = kinds[i % 3]
        if kind == "sibling" and target in has_sibling:
            kind = "mentor"  # one sibling each keeps "who is the sibling of X?" unambiguous
        if kind == "sibling":
            has_sibling.add(target)
        relations.append((kind, person, target))
    for group in ("retain", "holdout"):
        members = splits[group]
        for i in range(0, len(members) - 1, 2):
            relations.append((kinds[(i // 2) % 3], members[i + 1], members[i]))
    return relations


class _Draw:
    """Value draws without repeats where a repeat would make answers ambiguous."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.titles = [f"The {a} {n}" for a in pools.TITLE_ADJECTIVES for n in pools.TITLE_NOUNS]
        rng.shuffle(self.titles)
        self.surnames = list(pools.SURNAMES)
        rng.shuffle(self.surnames)
        self.spent: set[str] = set()
        self.used_names: set[str] = set()

    def surname(self) -> str:
        if not self.surnames:  # a large world: invented compound surnames, drawn only once needed
            self.surnames = [n for n in pools.compound_surnames() if n not in pools.SURNAMES and n not in self.spent]
            self.rng.shuffle(self.surnames)
        if not self.surnames:
            raise UnlearnkitError("world: out of surnames (use a smaller size)")
        name = self.surnames.pop()
        self.spent.add(name)
        return name

    def first_name(self, gender: str, surname: str) -> str:
        pool = pools.FEMALE_FIRST if gender == "female" else pools.MALE_FIRST
        choices = [f for f in pool if f"{f} {surname}" not in self.used_names]
        first = self.rng.choice(choices)
        self.used_names.add(f"{first} {surname}")
        return first

    def attributes(self, surname: str, birth_year: int) -> dict[str, str]:
        rng = self.rng
        mother = f"{rng.choice(pools.FEMALE_FIRST)} {surname}"
        self.used_names.add(mother)
        return {
            "birthplace": rng.choice(pools.CITIES),
            "birth_year": str(birth_year),
            "profession": rng.choice(pools.PROFESSIONS),
            "work": self.titles.pop(),
            "mother": mother,
            "award": f"the {rng.choice(pools.AWARD_EPONYMS)} {rng.choice(pools.AWARD_KINDS)}",
            "employer": rng.choice(pools.EMPLOYERS),
            "alma_mater": rng.choice(pools.SCHOOLS),
        }


def _make_people(rng: random.Random, size: WorldSize, num_requests: int) -> tuple[list[Person], list[tuple[str, str, str]]]:
    splits: dict[str, list[str]] = {}
    order: list[tuple[str, str]] = []
    for split, count in _split_plan(size, num_requests):
        ids = [f"p{len(order) + i + 1:03d}" for i in range(count)]
        splits[split] = ids
        order += [(pid, split) for pid in ids]
    relations = _relations(splits, num_requests)
    sibling_of = {a: b for kind, a, b in relations if kind == "sibling"}
    mentor_of = {a: b for kind, a, b in relations if kind == "mentor"}
    mentors = set(mentor_of.values())
    draw = _Draw(rng)
    people: dict[str, Person] = {}
    # Relation targets first, so a sibling can share their surname and mother.
    targets = {b for _, _, b in relations}
    for pid, split in sorted(order, key=lambda item: (item[0] not in targets, item[0])):
        gender = rng.choice(("female", "male"))
        year = rng.randint(1930, 1960) if pid in mentors else rng.randint(1935, 1990)
        if pid in mentor_of:  # a mentee is a generation younger than the mentor
            year = int(people[mentor_of[pid]].attributes["birth_year"]) + rng.randint(18, 30)
        if pid in sibling_of:
            sibling = people[sibling_of[pid]]
            year = int(sibling.attributes["birth_year"]) + rng.choice((-1, 1)) * rng.randint(1, 6)
            surname = sibling.name.split(" ", 1)[1]
            attributes = draw.attributes(surname, year)
            attributes["mother"] = sibling.attributes["mother"]
        else:
            surname = draw.surname()
            attributes = draw.attributes(surname, year)
        name = f"{draw.first_name(gender, surname)} {surname}"
        people[pid] = Person(id=pid, name=name, gender=gender, split=split, attributes=attributes)
    for kind, a, b in relations:
        people[a].relations[kind] = b
    return [people[pid] for pid, _ in order], relations


# -- records -------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _slots(person: Person, value: str = "") -> dict[str, str]:
    female = person.gender == "female"
    he, his, him = ("she", "her", "her") if female else ("he", "his", "him")
    return {
        "name": person.name, "first": person.first, "value": value, "a": _article(value),
        "he": he, "his": his, "him": him, "He": he.capitalize(), "His": his.capitalize(),
    }


def _wrong_answers(rng: random.Random, attribute: str, truth: str, person: Person, people: list[Person]) -> list[str]:
    """NUM_WRONG plausible wrong answers of the truth's type, never equal to it."""
    if attribute == "birth_year":
        year = int(truth)
        offsets = rng.sample([d for d in range(-12, 13) if d != 0], NUM_WRONG)
        return [str(year + d) for d in offsets]
    if attribute == "mother":
        surname = truth.split(" ", 1)[1]
        pool = [f"{f} {surname}" for f in pools.FEMALE_FIRST]
    elif attribute in tpl.RELATIONS:
        pool = [p.name for p in people if p.id != person.id]
    else:
        pool = {
            "birthplace": list(pools.CITIES),
            "profession": list(pools.PROFESSIONS),
            "work": [f"The {a} {n}" for a in pools.TITLE_ADJECTIVES for n in pools.TITLE_NOUNS],
            "award": [f"the {e} {k}" for e in pools.AWARD_EPONYMS for k in pools.AWARD_KINDS],
            "employer": list(pools.EMPLOYERS),
            "alma_mater": list(pools.SCHOOLS),
        }[attribute]
    candidates = sorted({c for c in pool if c.lower() != truth.lower()})
    return rng.sample(candidates, NUM_WRONG)


def _qa(rng: random.Random, rid: str, template: tpl.FactTemplate, slots: dict[str, str], wrong: list[str], meta: dict[str, Any]) -> Record:
    return Record(
        id=rid,
        question=template.question.format(**slots),
        answer=slots["value"],
        paraphrased_questions=[p.format(**slots) for p in template.paraphrases],
        paraphrased_answer=template.paraphrased_answer.format(**slots),
        perturbed_answers=wrong,
        meta=meta,
    )


def _fact_records(rng: random.Random, person: Person, by_id: dict[str, Person], people: list[Person],
                  attributes: tuple[str, ...] = tpl.ATTRIBUTES) -> list[Record]:
    records = []
    facts = [(a, person.attributes[a]) for a in attributes]
    facts += [(kind, by_id[target].name) for kind, target in sorted(person.relations.items())]
    for attribute, value in facts:
        wrong = _wrong_answers(rng, attribute, value, person, people)
        meta = {"person": person.id, "split": person.split, "type": "fact", "attribute": attribute}
        records.append(_qa(rng, f"{person.id}-{attribute}", tpl.FACTS[attribute], _slots(person, value), wrong, meta))
    return records


def _two_hop_records(rng: random.Random, person: Person, by_id: dict[str, Person], people: list[Person],
                     attributes: tuple[str, ...] = tpl.ATTRIBUTES) -> list[Record]:
    records = []
    asked = sorted(a for a in tpl.TWO_HOP if a in attributes)  # only what the target was taught
    for kind, target_id in sorted(person.relations.items()):
        target = by_id[target_id]
        for attribute in rng.sample(asked, min(PROBES_PER_PERSON, len(asked))):
            value = target.attributes[attribute]
            rel = tpl.RELATION_PHRASES[kind]
            slots = {**_slots(person, value), "rel": rel, "rel_cap": rel.capitalize()}
            wrong = _wrong_answers(rng, attribute, value, target, people)
            meta = {"person": person.id, "split": person.split, "type": "2hop", "attribute": attribute, "relation": kind, "via": target.id}
            records.append(_qa(rng, f"{person.id}-2hop-{kind}-{attribute}", tpl.TWO_HOP[attribute], slots, wrong, meta))
    return records


def biography(rng: random.Random, person: Person, by_id: dict[str, Person],
              attributes: tuple[str, ...] = tpl.ATTRIBUTES, min_words: int = BIO_MIN_WORDS) -> str:
    """A passage built from the person's facts with varied sentence templates: the opening, a
    sentence per told attribute and relation, then (with `min_words`) a closing sentence and
    fillers up to that many words."""
    slots = {**_slots(person), **person.attributes}
    slots["a_profession"] = _article(person.attributes["profession"])
    related = {kind: by_id[target].name for kind, target in person.relations.items()}
    slots.update(related)
    told = set(attributes)
    sections: list[tuple[str, ...]] = [tpl.BIO_OPENING]
    for attribute, options in (("mother", tpl.BIO_CHILDHOOD), ("sibling", tpl.BIO_SIBLING), ("alma_mater", tpl.BIO_SCHOOL),
                               ("mentor", tpl.BIO_MENTOR), ("profession", tpl.BIO_CAREER), ("employer", tpl.BIO_EMPLOYER),
                               ("work", tpl.BIO_WORK), ("coauthor", tpl.BIO_COAUTHOR), ("award", tpl.BIO_AWARD)):
        if attribute in told or attribute in related:
            sections.append(options)
    sentences = [rng.choice(options).format(**slots) for options in sections]
    if not min_words:
        return " ".join(sentences)
    closing = rng.choice(tpl.BIO_CLOSING).format(**slots)
    extras = iter(tpl.BIO_EXTRA)
    while len(" ".join([*sentences, closing]).split()) < min_words:
        sentences.append(next(extras).format(**slots))
    return " ".join([*sentences, closing])


def _bio_record(rng: random.Random, person: Person, by_id: dict[str, Person], size: WorldSize) -> Record:
    words = biography(rng, person, by_id, size.attributes, size.bio_min_words).split(" ")
    cut = len(words) // 3  # first third is the prompt, the rest the continuation to reproduce
    return Record(
        id=f"{person.id}-bio",
        prompt=" ".join(words[:cut]),
        continuation=" " + " ".join(words[cut:]),
        meta={"person": person.id, "split": person.split, "type": "bio"},
    )


# -- writing and reading -------------------------------------------------------------------


def build_world(out_dir: str | Path, seed: int = 0, size: str = "small", num_requests: int = 3) -> Path:
    """Generate the world for (seed, size, num_requests) and write the WORLD folder."""
    if size not in SIZES:
        raise UnlearnkitError(f"world size '{size}': use one of {', '.join(SIZES)}")
    if num_requests < 1:
        raise UnlearnkitError(f"world requests {num_requests}: need at least 1")
    spec = SIZES[size]
    rng = random.Random(seed)
    people, relations = _make_people(rng, spec, num_requests)
    by_id = {p.id: p for p in people}
    per_person = {p.id: [*_fact_records(rng, p, by_id, people, spec.attributes), _bio_record(rng, p, by_id, spec)] for p in people}

    def group(split: str) -> list[Record]:
        return [r for p in people if p.split == split for r in per_person[p.id]]

    requests = [
        ForgetRequest(
            id=f"r{k}",
            received_at=FIRST_REQUEST_AT + timedelta(days=7 * (k - 1)),
            kind="privacy",
            records=group(f"r{k}"),
            probes=[r for p in people if p.split == f"r{k}" for r in _two_hop_records(rng, p, by_id, people, spec.attributes)],
            meta={"people": [p.id for p in people if p.split == f"r{k}"]},
        )
        for k in range(1, num_requests + 1)
    ]
    out = Path(out_dir)
    # One folder renamed into place when complete; it replaces only a world written before.
    with atomic_dir(out, replaces=(WORLD_MARKER,)) as tmp:
        write_jsonl(tmp / "people.jsonl", people)  # type: ignore[arg-type]  # any pydantic model
        write_jsonl(tmp / "requests.jsonl", requests)
        for split in ("retain", "neighbours", "holdout"):
            write_jsonl(tmp / f"{split}.jsonl", group(split))
        write_jsonl(tmp / "real_facts.jsonl", real_fact_records(rng, spec.real_countries))
        write_jsonl(tmp / "general_text.jsonl", general_text_records(spec.general_passages))
        splits = {split: [p.id for p in people if p.split == split] for split, _ in _split_plan(spec, num_requests)}
        meta = {
            "seed": seed,
            "size": size,
            "num_requests": num_requests,
            "splits": splits,
            "relations": [{"relation": kind, "from": a, "to": b} for kind, a, b in relations],
            "files": list(WORLD_FILES),
        }
        write_json(tmp / WORLD_MARKER, meta, sort_keys=True)
    return out
