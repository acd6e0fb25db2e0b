"""What guarded unlearning measures for a request: the request itself, a sample of the retain set,
collateral facts the model knew and was not asked to forget, general text, and an optional
control set of never-seen content.

Collateral facts come from the offline fact bank (`data.knowledge.fact_bank`): the model is asked
every question of the bank once, greedily, and the ones it answers correctly (plain and
paraphrased) are what it knew; that list is cached per model source in
`$UNLEARNKIT_CACHE/known/`. A fact that overlaps the request (the same entity, or the same
answer, appears in the request) is left out, so forgetting "the capital of France" is not
charged for "the continent of France", but "the capital of Germany" is checked.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from unlearnkit.data.knowledge import BANK_VERSION, answer_given, fact_bank, general_text_records, overlaps
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.files import write_json
from unlearnkit.models.loading import DEFAULT_NAME, cache_dir, source_fingerprint
from unlearnkit.models.subject import Subject
from unlearnkit.progress import console
from unlearnkit.safety.settings import Guard


@dataclass
class ProbeSet:
    forget: list[Record]
    retain: list[Record] = field(default_factory=list)
    collateral: list[Record] = field(default_factory=list)
    general: list[Record] = field(default_factory=list)
    control: list[Record] = field(default_factory=list)
    # The model's own greedy answers at the start, per set ("forget", "forget_paraphrased",
    # "retain", "collateral"), aligned with the records: what "said" numbers score.
    start_answers: dict[str, list[str]] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("forget", "retain", "collateral", "general", "control")}


def _cache_path(source: str, fmt: str) -> Path | None:
    """Where what a model knows is cached: only for a source that names files or the default
    (an in-memory model has no stable identity)."""
    if source != DEFAULT_NAME and not Path(source).expanduser().exists():
        return None
    key = json.dumps({"model": source_fingerprint(source), "format": fmt, "bank": BANK_VERSION}, sort_keys=True)
    return cache_dir() / "known" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def known_facts(subject: Subject, source: str | None = None, *, max_new_tokens: int = 16) -> list[Record]:
    """The bank's facts that `subject` answers correctly, plain and paraphrased (cached per source)."""
    bank = list(fact_bank())
    path = _cache_path(source or subject.name, subject.fmt.name)
    if path is not None and path.exists():
        ids = set(json.loads(path.read_text(encoding="utf-8"))["known"])
        return [r for r in bank if r.id in ids]
    console.print(f"collateral probes: asking {subject.name} the {len(bank)} questions of the fact bank once (cached)")
    plain = subject.greedy([r.question or "" for r in bank], max_new_tokens=max_new_tokens)
    answered = [r for r, a in zip(bank, plain) if answer_given(r.answer or "", a)]  # only those are asked again
    para = subject.greedy([r.paraphrased_questions[0] for r in answered], max_new_tokens=max_new_tokens)
    known = [r for r, b in zip(answered, para) if answer_given(r.answer or "", b)]
    if path is not None:
        write_json(path, {"source": source or subject.name, "bank_version": BANK_VERSION, "known": [r.id for r in known]})
    return known


def pick_collateral(known: list[Record], request: ForgetRequest, limit: int, seed: int = 0) -> list[Record]:
    """Up to `limit` known facts that do not overlap the request: first, up to half of them, the
    request's neighbours (facts asked like its questions, `neighbours`), then the rest spread
    over the bank's kinds (round robin over kinds, each kind in a seeded order).

    Why neighbours: forgetting "the capital of France is Paris" hurts other capitals first (on
    the default model, GD took 4 of the 9 capitals in neither file that it knew with it while a round-robin
    sample of 16 facts over 9 kinds held one or two capitals, bench/real_knowledge.py same-template)."""
    candidates = [fact for fact in known if not overlaps(fact, request)]
    rng = random.Random(seed)
    rng.shuffle(candidates)
    chosen = neighbours(candidates, request, (limit + 1) // 2)
    by_kind: dict[str, list[Record]] = {}
    for fact in candidates:
        if fact not in chosen:
            by_kind.setdefault(str(fact.meta.get("kind")), []).append(fact)
    while len(chosen) < limit and any(by_kind.values()):
        for kind in sorted(by_kind):
            if by_kind[kind] and len(chosen) < limit:
                chosen.append(by_kind[kind].pop())
    return chosen


NEIGHBOUR_SIMILARITY = 0.5  # word overlap (Jaccard) with one of the request's questions


def neighbours(facts: list[Record], request: ForgetRequest, limit: int) -> list[Record]:
    """Up to `limit` of `facts` asked most like one of the request's questions: Jaccard overlap of
    the questions' words at least `NEIGHBOUR_SIMILARITY` ("What is the capital of Peru?" and
    "What is the capital of France?" share 5 of 7 words), most similar first, stable otherwise."""
    asked = [_words(r.question) for r in request.records if r.kind == "qa" and r.question]
    if not asked or limit <= 0:
        return []

    def similarity(fact: Record) -> float:
        mine = _words(fact.question or "")
        return max((len(mine & other) / len(mine | other) for other in asked if mine | other), default=0.0)

    scored = [(similarity(fact), index) for index, fact in enumerate(facts)]
    near = sorted((pair for pair in scored if pair[0] >= NEIGHBOUR_SIMILARITY), key=lambda pair: -pair[0])
    return [facts[index] for _, index in near[:limit]]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def sample(records: list[Record], limit: int, seed: int = 0) -> list[Record]:
    """A fixed seeded sample of at most `limit` records, in their original order."""
    if len(records) <= limit:
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in keep]


def build_probes(
    subject: Subject,
    request: ForgetRequest,
    guard: Guard,
    *,
    retain: list[Record] | None = None,
    known: list[Record] | None = None,
    general: list[Record] | None = None,
    control: list[Record] | None = None,
    seed: int = 0,
) -> ProbeSet:
    """The probe set of one request. `known` are the facts the start model knew (default: asked
    of `subject` now, cached); `general` defaults to the shipped general text."""
    if guard.collateral and known is None:
        known = known_facts(subject, max_new_tokens=guard.max_new_tokens + 4)
    questions = [r for r in request.records if r.kind != "passage"]
    passages = [r for r in request.records if r.kind == "passage"]
    texts = general if general is not None else general_text_records(max(8, 4 * guard.general_probes))
    return ProbeSet(
        forget=sample(questions, guard.forget_probes, seed) + sample(passages, guard.forget_probes, seed),
        retain=sample(list(retain or []), guard.retain_probes, seed),
        collateral=pick_collateral(known or [], request, guard.collateral, seed),
        general=[r for r in texts if _fits(subject, r)][: guard.general_probes],
        control=sample(list(control or []), guard.forget_probes, seed),
    )


def _fits(subject: Subject, passage: Record) -> bool:
    """Whether a whole passage fits the model's context (a small model's may be short)."""
    return len(subject.tokenizer(passage.passage_text, add_special_tokens=True)["input_ids"]) < subject.max_length
