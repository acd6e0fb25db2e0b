"""A real-knowledge case: facts a pretrained model already knows, some to forget, some to keep,
some never mentioned (the benchmark of guarded unlearning's defaults, docs/guarded.md).

Built from the offline fact bank (`data.knowledge.fact_bank`), keeping only what the model at
hand answers correctly, plain and paraphrased (`safety.probes.known_facts`, cached per model).
Two cases:

- `mixed`: the facts to forget are of several kinds (a capital, a language, an author, an
  element, ...), kept and never-mentioned facts of every kind;
- `same-template`: forget the capitals of some countries, keep the capitals of others, and
  never mention yet others: the hard case, where forgetting one answer pulls its neighbours
  along the same template.

No fact of the kept or never-mentioned sets overlaps the request (same entity or same answer),
and the never-mentioned facts are withheld from the guard's collateral probes, so they measure
what the budget did not see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.data.knowledge import overlaps

Case = Literal["mixed", "same-template"]
CASES: tuple[Case, ...] = ("mixed", "same-template")


@dataclass
class KnowledgeCase:
    name: str
    request: ForgetRequest
    keep: list[Record]  # the retain set given to the methods
    never: list[Record]  # never mentioned: neither forgotten nor kept nor probed by the guard
    collateral_pool: list[Record]  # what the guard may probe: known facts outside the three sets


def build_case(known: list[Record], case: Case = "mixed", *, forget: int = 8, keep: int = 10, never: int = 10, seed: int = 0) -> KnowledgeCase:
    """Split the facts a model knows into the three sets of `case` (deterministic for a seed)."""
    rng = random.Random(seed)
    pool = list(known)
    rng.shuffle(pool)
    if case == "same-template":
        capitals = [r for r in pool if r.meta.get("kind") == "capital"]
        chosen = capitals[:forget]
        candidates = capitals[forget:] + [r for r in pool if r.meta.get("kind") != "capital"]
    else:
        by_kind: dict[str, list[Record]] = {}
        for record in pool:
            by_kind.setdefault(str(record.meta.get("kind")), []).append(record)
        chosen = []
        while len(chosen) < forget and any(by_kind.values()):
            for kind in sorted(by_kind):
                if by_kind[kind] and len(chosen) < forget:
                    chosen.append(by_kind[kind].pop())
        candidates = [r for r in pool if r not in chosen]
    if len(chosen) < forget:
        raise ValueError(f"real-knowledge case '{case}': the model knows only {len(chosen)} facts to forget, {forget} asked")
    request = ForgetRequest(id=f"real-{case}", kind="privacy", records=chosen)
    free = [r for r in candidates if not overlaps(r, request)]
    if case == "same-template":  # keep and never-mention capitals first: the template is the point
        free.sort(key=lambda r: r.meta.get("kind") != "capital")
    kept, rest = free[:keep], free[keep:]
    never_mentioned = [r for r in rest if not any(overlaps(r, ForgetRequest(id="k", records=[k])) for k in kept)][:never]
    pool_left = [r for r in rest if r not in never_mentioned]
    return KnowledgeCase(case, request, kept, never_mentioned, pool_left)
