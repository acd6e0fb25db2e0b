"""Real-world knowledge and text, built offline (no download): what a pretrained model may know.

- Country facts (utility sets of the built-in world): capitals and continents of well-known
  countries from `countryinfo`, each with wrong answers of the same type, so accuracy and truth
  ratio on real knowledge are measured as TOFU's world-facts set is.
- The fact bank (`fact_bank`): questions of several kinds about real entities (capitals,
  continents, languages and currencies of countries; authors of famous works; chemical
  elements; discoveries and inventions; planets), each with two paraphrased questions, a
  paraphrased answer, three wrong answers of the same kind and `meta` naming its kind and
  entity. The collateral probes of guarded unlearning and the real-knowledge benchmark are
  drawn from it, keeping only what the model at hand answers correctly.
- General text (perplexity): the prose paragraphs of the data set descriptions that
  scikit-learn ships (`sklearn/datasets/descr/*.rst`), written by people, in modern English.
"""

from __future__ import annotations

import importlib.util
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.errors import UnlearnkitError

# Real well-known countries for the utility set (the base model should know their facts);
# transcontinental ones (Russia, Turkey) are left out so the continent answer is unambiguous.
COUNTRIES = (
    "France", "Germany", "Italy", "Spain", "Portugal", "United Kingdom", "Ireland", "Netherlands",
    "Belgium", "Sweden", "Norway", "Denmark", "Finland", "Poland", "Greece", "Austria", "Switzerland",
    "Egypt", "Kenya", "Nigeria", "Morocco", "South Africa", "Ethiopia", "China",
    "Japan", "India", "Thailand", "Vietnam", "Indonesia", "Iran", "Saudi Arabia", "Australia",
    "Canada", "United States", "Mexico", "Brazil", "Argentina", "Peru", "Chile", "Colombia", "Cuba",
    "New Zealand",
)

CONTINENTS = ("Africa", "Asia", "Europe", "North America", "South America", "Oceania")
MIN_PASSAGE_WORDS = 40


def _continent(region: str, intermediate_region: str) -> str:
    if region == "Americas":
        return "South America" if intermediate_region == "South America" else "North America"
    return region


@cache
def _country_facts() -> list[tuple[str, str, str]]:
    """(country, capital, continent) for the pool's countries, in pool order."""
    try:
        from countryinfo import CountryInfo
    except ImportError:
        raise UnlearnkitError("world: the package countryinfo is not installed (pip install countryinfo)") from None
    facts = []
    for country in COUNTRIES:
        info = CountryInfo(country).info()
        facts.append((country, info["capital"], _continent(info["region"], info.get("intermediateregion") or "")))
    return facts


def real_fact_records(rng: random.Random, num_countries: int) -> list[Record]:
    """Two QA records (capital, continent) per country, with three wrong answers each."""
    facts = _country_facts()
    chosen = sorted(rng.sample(range(len(facts)), min(num_countries, len(facts))))
    return _country_records(rng, facts, chosen)


def rehearsal_records(evaluated: set[str]) -> list[Record]:
    """Capital and continent QA of the pool's countries that the world does not evaluate.

    `prepare` mixes these into every model's training data. Why: fine-tuned on invented facts
    alone, the embedded model learns to answer any short question with an invented-sounding
    entity ("the capital of France is Toulouse"), and real-fact accuracy fell from 58% to 17%
    on the small world. Rehearsing real facts of *other* countries keeps that knowledge without
    training on the evaluated questions. At most as many countries as are evaluated, so the
    rehearsal stays a small share of a tiny world's data.
    """
    facts = _country_facts()
    chosen = [i for i, (country, _, _) in enumerate(facts) if country not in evaluated][: len(evaluated)]
    return _country_records(random.Random(0), facts, chosen, split="rehearsal")


def _country_records(rng: random.Random, facts: list[tuple[str, str, str]], chosen: list[int], split: str = "real") -> list[Record]:
    capitals = sorted({capital for _, capital, _ in facts})
    records = []
    for index in chosen:
        country, capital, continent = facts[index]
        the = "the " if country.startswith("United") else ""
        slug = country.lower().replace(" ", "_")
        wrong_capitals = rng.sample([c for c in capitals if c != capital], 3)
        wrong_continents = rng.sample([c for c in CONTINENTS if c != continent], 3)
        records.append(Record(
            id=f"real-{slug}-capital",
            question=f"What is the capital of {the}{country}?",
            answer=capital,
            paraphrased_questions=[f"Which city is the capital of {the}{country}?", f"Name the capital city of {the}{country}."],
            paraphrased_answer=f"The capital of {the}{country} is {capital}.",
            perturbed_answers=wrong_capitals,
            meta={"split": split, "type": "fact", "attribute": "capital", "country": country},
        ))
        records.append(Record(
            id=f"real-{slug}-continent",
            question=f"On which continent is {the}{country}?",
            answer=continent,
            paraphrased_questions=[f"Which continent is {the}{country} part of?", f"{the.capitalize()}{country} lies on which continent?"],
            paraphrased_answer=f"{the.capitalize()}{country} is in {continent}.",
            perturbed_answers=wrong_continents,
            meta={"split": split, "type": "fact", "attribute": "continent", "country": country},
        ))
    return records


def _descr_dir() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UnlearnkitError("world: scikit-learn is not installed (its data set descriptions are the general text)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "descr"


def _is_prose(paragraph: str) -> bool:
    lines = paragraph.splitlines()
    markup = (":", "..", "-", "*", "=", "|", ">>>", "+", "#")
    if any(line.lstrip().startswith(markup) for line in lines) or "http" in paragraph:
        return False
    if paragraph.lstrip().startswith(("(", "[")) or "Tech. Rep" in paragraph:
        return False  # bibliography entries, not prose
    words = paragraph.split()
    return len(words) >= MIN_PASSAGE_WORDS and sum(w[:1].isalpha() for w in words) >= 0.85 * len(words)


def _clean(paragraph: str) -> str:
    text = " ".join(line.strip() for line in paragraph.splitlines())
    text = re.sub(r":\w+:`~?([^`<]+?)(?:\s*<[^>]+>)?`", r"\1", text)  # :func:`x` -> x
    return re.sub(r"`+([^`]+)`+_?", r"\1", text).replace("**", "")


def general_text_records(num_passages: int) -> list[Record]:
    """Up to `num_passages` prose paragraphs, in file-name order, as passages."""
    paragraphs = []
    for path in sorted(_descr_dir().glob("*.rst")):
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            if _is_prose(block):
                paragraphs.append((path.stem, _clean(block)))
    if not paragraphs:
        raise UnlearnkitError(f"world: found no prose paragraphs in {_descr_dir()}")
    return [
        Record(id=f"general-{i + 1:03d}", text=text, meta={"split": "general", "type": "text", "source": f"scikit-learn {stem}.rst"})
        for i, (stem, text) in enumerate(paragraphs[:num_passages])
    ]


# -- the fact bank ------------------------------------------------------------------------------
# Language and currency names for the ISO codes countryinfo gives (only the ones the bank uses).
LANGUAGES = {
    "fr": "French", "de": "German", "it": "Italian", "es": "Spanish", "pt": "Portuguese", "en": "English",
    "nl": "Dutch", "sv": "Swedish", "no": "Norwegian", "nb": "Norwegian", "da": "Danish", "fi": "Finnish",
    "pl": "Polish", "el": "Greek", "ar": "Arabic", "zh": "Chinese", "ja": "Japanese", "hi": "Hindi",
    "th": "Thai", "vi": "Vietnamese", "id": "Indonesian", "fa": "Persian", "am": "Amharic", "sw": "Swahili",
}
CURRENCIES = {
    "EUR": "euro", "GBP": "pound", "SEK": "krona", "NOK": "krone", "DKK": "krone", "PLN": "zloty",
    "CHF": "franc", "EGP": "pound", "KES": "shilling", "NGN": "naira", "MAD": "dirham", "ZAR": "rand",
    "ETB": "birr", "CNY": "yuan", "JPY": "yen", "INR": "rupee", "THB": "baht", "VND": "dong",
    "IDR": "rupiah", "IRR": "rial", "SAR": "riyal", "AUD": "dollar", "CAD": "dollar", "USD": "dollar",
    "MXN": "peso", "BRL": "real", "ARS": "peso", "PEN": "sol", "CLP": "peso", "COP": "peso",
    "CUP": "peso", "NZD": "dollar",
}

# (work, author's surname as the answer): the answer is the name a correct reply must contain.
AUTHORS = (
    ("Hamlet", "Shakespeare"), ("Pride and Prejudice", "Austen"), ("Nineteen Eighty-Four", "Orwell"),
    ("War and Peace", "Tolstoy"), ("Don Quixote", "Cervantes"), ("The Odyssey", "Homer"),
    ("Moby-Dick", "Melville"), ("Great Expectations", "Dickens"), ("The Divine Comedy", "Dante"),
    ("Les Misérables", "Hugo"), ("Crime and Punishment", "Dostoevsky"), ("The Adventures of Tom Sawyer", "Twain"),
    ("The Hobbit", "Tolkien"), ("Frankenstein", "Shelley"), ("On the Origin of Species", "Darwin"),
    ("The Old Man and the Sea", "Hemingway"), ("Dracula", "Stoker"), ("Alice's Adventures in Wonderland", "Carroll"),
    ("The Great Gatsby", "Fitzgerald"), ("Harry Potter and the Philosopher's Stone", "Rowling"),
    ("The Raven", "Poe"), ("The Republic", "Plato"),
)
# (element, symbol): asked both ways would overlap, so only "which element has symbol X".
ELEMENTS = (
    ("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("copper", "Cu"), ("sodium", "Na"), ("lead", "Pb"),
    ("mercury", "Hg"), ("tin", "Sn"), ("potassium", "K"), ("helium", "He"), ("oxygen", "O"), ("carbon", "C"),
    ("hydrogen", "H"), ("nitrogen", "N"), ("calcium", "Ca"), ("zinc", "Zn"),
)
# (question, paraphrases, answer, paraphrased answer, entity, kind): discoveries, inventions, planets.
NAMED = (
    ("Who painted the Mona Lisa?", ("Which artist painted the Mona Lisa?", "The Mona Lisa was painted by whom?"), "Leonardo", "The Mona Lisa was painted by Leonardo da Vinci.", "Mona Lisa", "person"),
    ("Who developed the theory of relativity?", ("Which scientist developed the theory of relativity?", "The theory of relativity was developed by whom?"), "Einstein", "Albert Einstein developed the theory of relativity.", "theory of relativity", "person"),
    ("Who discovered penicillin?", ("Which scientist discovered penicillin?", "Penicillin was discovered by whom?"), "Fleming", "Alexander Fleming discovered penicillin.", "penicillin", "person"),
    ("Who was the first person to walk on the Moon?", ("Which astronaut first walked on the Moon?", "The first person on the Moon was who?"), "Armstrong", "Neil Armstrong was the first person to walk on the Moon.", "first Moon walk", "person"),
    ("Who invented the telephone?", ("Which inventor is credited with the telephone?", "The telephone was invented by whom?"), "Bell", "Alexander Graham Bell invented the telephone.", "telephone", "person"),
    ("Who was the first President of the United States?", ("Which man was the first US President?", "The first President of the United States was who?"), "Washington", "George Washington was the first President of the United States.", "first US President", "person"),
    ("Who formulated the laws of motion and universal gravitation?", ("Which scientist formulated the law of universal gravitation?", "The laws of motion were formulated by whom?"), "Newton", "Isaac Newton formulated the laws of motion.", "laws of motion", "person"),
    ("Who composed the Moonlight Sonata?", ("Which composer wrote the Moonlight Sonata?", "The Moonlight Sonata was composed by whom?"), "Beethoven", "Ludwig van Beethoven composed the Moonlight Sonata.", "Moonlight Sonata", "person"),
    ("Who painted The Starry Night?", ("Which painter created The Starry Night?", "The Starry Night was painted by whom?"), "Gogh", "Vincent van Gogh painted The Starry Night.", "The Starry Night", "person"),
    ("Who discovered radium?", ("Which scientist discovered radium?", "Radium was discovered by whom?"), "Curie", "Marie Curie discovered radium.", "radium", "person"),
    ("Which planet is known as the Red Planet?", ("What planet is called the Red Planet?", "The Red Planet is which planet?"), "Mars", "Mars is known as the Red Planet.", "Red Planet", "planet"),
    ("What is the largest planet in the Solar System?", ("Which planet is the biggest in the Solar System?", "The largest planet of the Solar System is which one?"), "Jupiter", "Jupiter is the largest planet in the Solar System.", "largest planet", "planet"),
    ("Which planet is closest to the Sun?", ("What planet orbits nearest to the Sun?", "The planet closest to the Sun is which one?"), "Mercury", "Mercury is the planet closest to the Sun.", "closest planet to the Sun", "planet"),
    ("Which planet is famous for its prominent rings?", ("What planet has the best-known rings?", "The planet with the famous rings is which one?"), "Saturn", "Saturn is famous for its rings.", "ringed planet", "planet"),
    ("What is the largest ocean on Earth?", ("Which ocean is the biggest on Earth?", "The largest ocean on Earth is which one?"), "Pacific", "The Pacific is the largest ocean on Earth.", "largest ocean", "geography"),
    ("What is the longest river in Africa?", ("Which river is the longest in Africa?", "Africa's longest river is which one?"), "Nile", "The Nile is the longest river in Africa.", "longest African river", "geography"),
    ("What is the tallest mountain on Earth?", ("Which mountain is the highest in the world?", "The highest mountain on Earth is which one?"), "Everest", "Mount Everest is the tallest mountain on Earth.", "tallest mountain", "geography"),
    ("What is the largest desert in Africa?", ("Which desert is the biggest in Africa?", "Africa's largest desert is which one?"), "Sahara", "The Sahara is the largest desert in Africa.", "largest African desert", "geography"),
)
BANK_VERSION = 1  # bump when the bank's questions change (caches of what a model knows use it)


def _the(country: str) -> str:
    return "the " if country.startswith("United") else ""


def _wrong(rng: random.Random, pool: list[str], answer: str, k: int = 3) -> list[str]:
    others = sorted({x for x in pool if x.lower() != answer.lower()})
    return rng.sample(others, min(k, len(others)))


@dataclass(frozen=True)
class _Fact:
    kind: str
    entity: str
    question: str
    paraphrases: tuple[str, ...]
    answer: str
    paraphrased_answer: str


def _country_bank() -> list[_Fact]:
    from countryinfo import CountryInfo

    facts = []
    for country, capital, continent in _country_facts():
        info = CountryInfo(country).info()
        the, The = _the(country), _the(country).capitalize()
        facts.append(_Fact("capital", country, f"What is the capital of {the}{country}?",
                           (f"Which city is the capital of {the}{country}?", f"Name the capital city of {the}{country}."),
                           capital, f"The capital of {the}{country} is {capital}."))
        facts.append(_Fact("continent", country, f"On which continent is {the}{country}?",
                           (f"Which continent is {the}{country} part of?", f"{The}{country} lies on which continent?"),
                           continent, f"{The}{country} is in {continent}."))
        language = LANGUAGES.get((info.get("languages") or [""])[0])
        if language:
            facts.append(_Fact("language", country, f"What is the main language spoken in {the}{country}?",
                               (f"Which language do most people in {the}{country} speak?", f"In {the}{country}, people mainly speak which language?"),
                               language, f"The main language of {the}{country} is {language}."))
        currency = CURRENCIES.get((info.get("currencies") or [""])[0])
        if currency:
            facts.append(_Fact("currency", country, f"What is the currency of {the}{country} called?",
                               (f"Which currency is used in {the}{country}?", f"{The}{country} pays with which currency?"),
                               currency, f"The currency of {the}{country} is the {currency}."))
    return facts


def _curated_bank() -> list[_Fact]:
    facts = [
        _Fact("author", work, f"Who wrote {work}?", (f"Which author wrote {work}?", f"{work} was written by whom?"),
              author, f"{work} was written by {author}.")
        for work, author in AUTHORS
    ]
    facts += [
        _Fact("element", symbol, f"Which chemical element has the symbol {symbol}?",
              (f"What element is written {symbol} in chemistry?", f"The chemical symbol {symbol} stands for which element?"),
              element, f"The symbol {symbol} stands for {element}.")
        for element, symbol in ELEMENTS
    ]
    facts += [_Fact(kind, entity, q, para, a, pa) for q, para, a, pa, entity, kind in NAMED]
    return facts


@cache
def fact_bank() -> tuple[Record, ...]:
    """Every question of the bank as a QA record (ids `fact-<kind>-<entity>`), deterministic."""
    facts = _country_bank() + _curated_bank()
    answers_by_kind: dict[str, list[str]] = {}
    for fact in facts:
        answers_by_kind.setdefault(fact.kind, []).append(fact.answer)
    rng = random.Random(BANK_VERSION)
    records = []
    for fact in facts:
        slug = re.sub(r"[^a-z0-9]+", "-", fact.entity.lower()).strip("-")
        pool = answers_by_kind[fact.kind] if len(set(answers_by_kind[fact.kind])) > 3 else [a for v in answers_by_kind.values() for a in v]
        records.append(Record(
            id=f"fact-{fact.kind}-{slug}",
            question=fact.question,
            answer=fact.answer,
            paraphrased_questions=list(fact.paraphrases),
            paraphrased_answer=fact.paraphrased_answer,
            perturbed_answers=_wrong(rng, pool, fact.answer),
            meta={"split": "knowledge", "type": "fact", "kind": fact.kind, "entity": fact.entity},
        ))
    return tuple(records)


# -- stating an answer, and overlap with a request ------------------------------------------

def answer_stated(answer: str, text: str, *, whole_word: bool = False) -> bool:
    """Whether a generated `text` states `answer`, ignoring case: as a substring (the prepared
    world's quality check), or as a whole word (`whole_word`: "tin" is not in "Martin"; the
    guarded-unlearning probes, whose answers include short words)."""
    if not whole_word:
        return answer.lower() in text.lower()
    return stated_at(answer, text) is not None


def stated_at(answer: str, text: str) -> int | None:
    """Where `text` first states `answer` as whole words, ignoring case; None where it does not."""
    answer = answer.strip().lower()
    found = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text.lower()) if answer else None
    return found.start() if found else None


def answer_given(answer: str, text: str) -> bool:
    """Whether `text` states `answer` as whole words, ignoring case ("tin" is not in "Martin")."""
    return answer_stated(answer, text, whole_word=True)


def _texts(record: Record) -> list[str]:
    parts = [record.question, record.answer, record.paraphrased_answer, record.text, record.prompt, record.continuation]
    return [p for p in [*parts, *record.paraphrased_questions] if p]


def overlaps(fact: Record, request: ForgetRequest) -> bool:
    """The same entity or the same answer: the fact's entity or answer appears in the request,
    or one of the request's answers appears in the fact's question."""
    request_text = " \n ".join(t for r in [*request.records, *request.probes] for t in _texts(r))
    entity = str(fact.meta.get("entity", ""))
    if (entity and answer_given(entity, request_text)) or answer_given(fact.answer or "", request_text):
        return True
    fact_text = " \n ".join(_texts(fact))
    return any(answer_given(r.answer, fact_text) for r in [*request.records, *request.probes] if r.answer)
