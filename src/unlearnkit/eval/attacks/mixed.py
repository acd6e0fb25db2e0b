"""Mixed-query probe: one prompt holding a forget question and a retain question. The forget
half should stay unanswered (`leak`, `rouge` of its answer) while the retain half must still be
answered (`retain_answered`, a collateral row: a method that refuses the whole prompt loses it).

`before` asks each question alone. The forget question comes first in even items and second in
odd ones; the retain question is drawn in turn from the retain set (else the neighbours).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.eval.attacks._base import Values, Variant, register_attack
from unlearnkit.eval.attacks._probe import Probe, ProbeAttack, plain_probe
from unlearnkit.eval.data import EvalData
from unlearnkit.models.subject import Subject

RETAIN_METRIC = "retain_answered"


def mixed_probes(records: list[Record], pool: list[Record], template: str) -> tuple[list[Probe], list[Probe]]:
    """(mixed prompts, the retain questions alone), one of each per forget record."""
    mixed, alone = [], []
    for i, record in enumerate(records):
        other = pool[i % len(pool)]
        pair = (record.question, other.question) if i % 2 == 0 else (other.question, record.question)
        mixed.append(Probe(f"{record.id}+{other.id}", template.format(first=pair[0], second=pair[1]), record.answer or "", record.paraphrased_answer, other_answer=other.answer))
        alone.append(Probe(f"{other.id}", other.question or "", other.answer or "", other.paraphrased_answer))
    return mixed, alone


@register_attack("mixed")
class Mixed(ProbeAttack):
    description: ClassVar[str] = "a forget and a retain question in one prompt"

    template: str = "Answer both questions.\n1. {first}\n2. {second}"
    max_new_tokens: int = Field(64, ge=1, description="room for two answers")

    def variants(self, request: ForgetRequest, data: EvalData, notes: list[str]) -> list[Variant]:
        records = self.qa(request.records)
        pool = [r for r in data.retain if r.kind == "qa"] or [r for r in data.neighbours if r.kind == "qa"]
        if not records or not pool:
            notes.append("needs forget QA and retain (or neighbour) QA records; skipped")
            return []
        mixed, alone = mixed_probes(records, pool, self.template)
        forget_alone = self.measure([plain_probe(r) for r in records], score=False)
        retain_alone = self.measure(alone, score=False)

        def base(subject: Subject) -> Values:
            return forget_alone(subject) | {RETAIN_METRIC: retain_alone(subject).get("leak")}

        attacked = self.measure(mixed, score=False, other_metric=RETAIN_METRIC)
        return [Variant("mixed", base, attacked, items=len(mixed), collateral=frozenset({RETAIN_METRIC}))]
