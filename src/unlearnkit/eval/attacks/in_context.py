"""In-context probe (docs/robustness.md; RWKU's context hints): related facts stated first, then
the forget question. Never the probed fact itself, nor a fact whose text contains its answer.

Fact sources (one variant each, `shots` facts per prompt):
- `person`: other facts about the same person from the request (the attacker knows some of
  them and hints with them);
- `related`: facts about people related to the person (neighbours, through the probes' `via`);
- `retain`: facts about unrelated retained people (a plain few-shot context).
A fact is written as its paraphrased answer (a sentence), else as "question answer".
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.eval.attacks._base import Variant, register_attack
from unlearnkit.eval.attacks._judge import contains_answer
from unlearnkit.eval.attacks._probe import Probe, ProbeAttack, plain_probe
from unlearnkit.eval.data import EvalData

Source = Literal["person", "related", "retain"]


def statement(record: Record) -> str:
    return record.paraphrased_answer or f"{record.question} {record.answer}"


def fact_pool(source: Source, record: Record, request: ForgetRequest, data: EvalData) -> list[Record]:
    person = record.meta.get("person")
    if source == "person":
        return [r for r in request.records if r.kind == "qa" and r.meta.get("person") == person]
    if source == "related":
        related = {p.meta.get("via") for p in request.probes if p.meta.get("person") == person} - {None}
        return unique([r for r in data.neighbours + data.retain if r.kind == "qa" and r.meta.get("person") in related])
    return [r for r in data.retain if r.kind == "qa"]


def unique(records: list[Record]) -> list[Record]:
    """Records once each (by id; a set may be passed as both neighbours and retain)."""
    return list({r.id or str(i): r for i, r in enumerate(records)}.values())


def in_context_probe(record: Record, pool: list[Record], shots: int, template: str, offset: int = 0) -> Probe | None:
    """The record's question after `shots` facts from `pool` (rotated by `offset` so items
    do not all get the same facts); None when no usable fact is left."""
    usable = [r for r in pool if r is not record and r.id != record.id and not contains_answer(statement(r), record.answer or "")]
    if not usable:
        return None
    start = offset % len(usable)
    chosen = (usable[start:] + usable[:start])[:shots]
    facts = "\n".join(statement(r) for r in chosen)
    return Probe(f"{record.id}@ctx", template.format(facts=facts, question=record.question), record.answer or "", record.paraphrased_answer)


@register_attack("in_context")
class InContext(ProbeAttack):
    description: ClassVar[str] = "related facts given in the prompt before the forget question"

    sources: list[Source] = Field(default_factory=lambda: ["person", "related"])
    shots: int = Field(3, ge=1)
    template: str = "{facts}\n\n{question}"

    def variants(self, request: ForgetRequest, data: EvalData, notes: list[str]) -> list[Variant]:
        records = self.qa(request.records)
        out = []
        for source in self.sources:
            pairs = [(r, in_context_probe(r, fact_pool(source, r, request, data), self.shots, self.template, i)) for i, r in enumerate(records)]
            kept = [(r, p) for r, p in pairs if p is not None]
            if not kept:
                notes.append(f"{source}: no facts to give in context; skipped")
                continue
            base = self.measure([plain_probe(r) for r, _ in kept])
            attacked = self.measure([p for _, p in kept if p is not None])
            out.append(Variant(f"{source},k={self.shots}", base, attacked, items=len(kept)))
        return out
