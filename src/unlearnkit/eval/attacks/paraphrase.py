"""Paraphrase probe (TOFU's paraphrased questions; docs/robustness.md): every paraphrased question of a forget record, against
the record's own question as `before`. Records without paraphrases are left out of both."""

from __future__ import annotations

from typing import ClassVar

from unlearnkit.data.schema import ForgetRequest
from unlearnkit.eval.attacks._base import Variant, register_attack
from unlearnkit.eval.attacks._probe import Probe, ProbeAttack, plain_probe
from unlearnkit.eval.data import EvalData


def paraphrase_probes(records: list) -> list[Probe]:
    return [plain_probe(r, q, f"#p{j}") for r in records for j, q in enumerate(r.paraphrased_questions)]


@register_attack("paraphrase")
class Paraphrase(ProbeAttack):
    description: ClassVar[str] = "the forget questions reworded"

    def variants(self, request: ForgetRequest, data: EvalData, notes: list[str]) -> list[Variant]:
        records = [r for r in self.qa(request.records) if r.paraphrased_questions]
        if not records:
            notes.append("no paraphrased questions; skipped")
            return []
        probes = paraphrase_probes(records)
        return [Variant("paraphrased", self.measure([plain_probe(r) for r in records]), self.measure(probes), items=len(probes))]
