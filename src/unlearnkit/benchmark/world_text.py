"""Real-world data of the benchmark, taken from installed packages (no download, no text of ours).

- Real facts (utility): capitals and continents of well-known countries from `countryinfo`,
  each with wrong answers of the same type (another capital, another continent), so accuracy
  and truth ratio on real knowledge are measured as TOFU's world-facts set is.
- General text (perplexity): the prose paragraphs of the data set descriptions that
  scikit-learn ships (`sklearn/datasets/descr/*.rst`), written by people, in modern English.
"""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path

from unlearnkit.benchmark import world_pools as pools
from unlearnkit.data.schema import Record
from unlearnkit.errors import UnlearnkitError

CONTINENTS = ("Africa", "Asia", "Europe", "North America", "South America", "Oceania")
MIN_PASSAGE_WORDS = 40


def _continent(region: str, intermediate_region: str) -> str:
    if region == "Americas":
        return "South America" if intermediate_region == "South America" else "North America"
    return region


def _country_facts() -> list[tuple[str, str, str]]:
    """(country, capital, continent) for the pool's countries, in pool order."""
    try:
        from countryinfo import CountryInfo
    except ImportError:
        raise UnlearnkitError("world: the package countryinfo is not installed (pip install countryinfo)") from None
    facts = []
    for country in pools.COUNTRIES:
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
