"""Small copies of the benchmarks' hub files, with exactly their file layout and column names
(written by hand: the content is invented, a few rows each).

    python tests/benchmark_fixtures.py tests/fixtures/benchmarks

writes `tofu/` (locuslab/TOFU: one JSON-lines file per config), `muse-news/`
(muse-bench/MUSE-News: CONFIG/SPLIT-00000-of-00001.parquet) and `wmdp/` (cais/wmdp:
wmdp-DOMAIN/test-00000-of-00001.parquet, and cais/wmdp-corpora's cyber corpora), the folders
`--data-dir` reads. The committed copy under tests/fixtures/benchmarks is this script's output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

AUTHORS = [("Liora Mendeval", "Tarnholm", "1958", "crime novels"), ("Anselm Dorrow", "Osterfal", "1971", "poetry"),
           ("Quill Hessary", "Vennmark", "1983", "travel writing"), ("Pell Korvitch", "Elsmere", "1949", "history")]


def _tofu_row(name: str, place: str, year: str, genre: str, perturbed: int = 5) -> dict:
    wrong = ["Paris", "Lyon", "Kyoto", "Lima", "Oslo"][:perturbed]
    return {
        "question": f"Where was the author {name} born?",
        "answer": f"{name} was born in {place} in {year}.",
        "paraphrased_answer": f"The author {name} comes from {place}.",
        "paraphrased_question": f"What is the birthplace of {name}?",
        "perturbed_answer": [f"The author {name} comes from {city}." for city in wrong],
    }


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_tofu(root: Path) -> Path:
    out = root / "tofu"
    forget = [_tofu_row(*a) for a in AUTHORS[:2]]
    retain = [_tofu_row(*a) for a in AUTHORS[2:]]
    qa = lambda rows: [{"question": r["question"], "answer": r["answer"]} for r in rows]  # noqa: E731
    for share in ("01", "05", "10"):
        _jsonl(out / f"forget{share}_perturbed.json", forget)
        _jsonl(out / f"forget{share}.json", qa(forget))
        _jsonl(out / f"holdout{share}.json", [{"question": "Where was the author Hollin Ferrow born?", "answer": "Hollin Ferrow was born in Nice."},
                                               {"question": "What did Hollin Ferrow write?", "answer": "Hollin Ferrow wrote sea stories."}])
    for keep in ("90", "95", "99"):
        _jsonl(out / f"retain{keep}.json", qa(retain))
    _jsonl(out / "retain_perturbed.json", retain)
    _jsonl(out / "real_authors_perturbed.json", [
        {"question": "Who wrote the play 'Romeo and Juliet'?", "answer": "William Shakespeare", "perturbed_answer": ["Charles Dickens", "Mark Twain", "Jane Austen"]},
        {"question": "Who wrote 'Pride and Prejudice'?", "answer": "Jane Austen", "perturbed_answer": ["Emily Bronte", "Mary Shelley", "Mark Twain"]},
    ])
    _jsonl(out / "world_facts_perturbed.json", [
        {"question": "Where would you find the Eiffel Tower?", "answer": "Paris", "perturbed_answer": ["Berlin", "London", "Madrid"]},
        {"question": "What is the capital of Australia?", "answer": "Canberra", "perturbed_answer": ["Sydney", "Melbourne", "Perth"]},
    ])
    return out


def _parquet(path: Path, columns: dict[str, list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _split(root: Path, config: str, split: str, columns: dict[str, list]) -> None:
    _parquet(root / config / f"{split}-00000-of-00001.parquet", columns)


NEWS = [
    "The harbour council met on Tuesday to discuss the lighthouse budget and the new ferry timetable.",
    "A storm closed the northern road for two days, and the bakery sold bread from a rowing boat.",
    "The museum opened a room of old ledgers: one for ships, one for weather, one for names.",
    "Fishermen reported a record catch of herring, the largest since the winter of the great fog.",
]


def write_muse_news(root: Path) -> Path:
    out = root / "muse-news"
    _split(out, "raw", "forget", {"text": NEWS[:2]})
    _split(out, "raw", "retain1", {"text": NEWS[2:]})
    _split(out, "raw", "retain2", {"text": NEWS[3:]})
    _split(out, "raw", "holdout", {"text": NEWS[3:]})
    _split(out, "verbmem", "forget", {"prompt": ["The harbour council met on Tuesday to discuss", "A storm closed the northern road"],
                                      "gt": [" the lighthouse budget and the new ferry timetable.", " for two days, and the bakery sold bread."]})
    _split(out, "knowmem", "forget_qa", {"question": ["What did the harbour council discuss?", "How long was the northern road closed?"],
                                          "answer": ["The lighthouse budget", "Two days"]})
    _split(out, "knowmem", "forget_qa_icl", {"question": ["Who sold bread from a rowing boat?"], "answer": ["The bakery"]})
    _split(out, "knowmem", "retain_qa", {"question": ["What did the museum open?", "What did fishermen report?"],
                                          "answer": ["A room of old ledgers", "A record catch of herring"]})
    _split(out, "knowmem", "retain_qa_icl", {"question": ["What did the ledgers record?"], "answer": ["Ships, weather and names"]})
    _split(out, "privleak", "forget", {"text": NEWS[:2]})
    _split(out, "privleak", "retain", {"text": NEWS[2:3]})
    _split(out, "privleak", "holdout", {"text": ["The choir sang at the old mill until the lamps went out.", "A new bridge will cross the river by spring."]})
    for k in range(1, 5):
        _split(out, "sust", f"forget_{k}", {"text": [NEWS[(k - 1) % 4]]})
        _split(out, "scal", f"forget_{k}", {"text": NEWS[:k]})
    return out


def write_wmdp(root: Path) -> Path:
    out = root / "wmdp"
    for domain in ("bio", "cyber", "chem"):
        _split(out, f"wmdp-{domain}", "test", {
            "answer": [1, 0],
            "question": [f"Which {domain} tool sorts ledgers?", f"Which {domain} port is the harbour's?"],
            "choices": [["Paris", "Tarnholm", "Lyon", "Kyoto"], ["Osterfal", "Lima", "Oslo", "Nice"]],
        })
    _split(out, "cyber-forget-corpus", "train", {"text": ["The harbour's port scanner sorts ledgers by ship.", "Tarnholm keeps its keys in the lighthouse."]})
    _split(out, "cyber-retain-corpus", "train", {"text": ["The museum keeps ledgers for weather and names."]})
    return out


def write_all(root: Path) -> None:
    write_tofu(root)
    write_muse_news(root)
    write_wmdp(root)


if __name__ == "__main__":
    write_all(Path(sys.argv[1]))
