"""leak@k (Reisizadeh et al., OptimAI-Lab/Leak-k): the chance that at least one of k sampled answers
to a forget question leaks the forgotten answer, averaged over questions.

n samples per question (default 200, T = 1.0, top-p = 1.0, 200 new tokens: the reference's
active setting), c of them judged leaking (`_judge.py`), then the unbiased estimate
1 − C(n−c, k)/C(n, k) (`primitives.leak_at_k`) for every k ≤ n in `ks`. Samples are drawn in
calls of at most `chunk` samples per question (the reference's chunks of 32), each call with
its own seed, so memory stays bounded whatever n is.

`before` is the greedy answer's leak rate (what a plain evaluation sees); `after` is leak@k.
Differences from the reference, on purpose: the question is the record's `question`
(`question=paraphrased` gives the reference's TOFU setting); the judge is answer containment
(or the embedding judge) rather than an NLI model, which has no offline copy; the prompt is
rendered by the Subject's format as everywhere else (the reference re-tokenises chat text).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from unlearnkit.data.schema import ForgetRequest
from unlearnkit.eval import primitives as P
from unlearnkit.eval.attacks._base import Values, Variant, register_attack
from unlearnkit.eval.attacks._probe import Probe, ProbeAttack, plain_probe
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.passes import passes
from unlearnkit.models.subject import GenerationSettings, Subject

def sample_counts(subject: Subject, probes: list[Probe], attack: LeakAtK) -> list[int]:
    """Per probe: how many of its n samples leak."""
    judge = attack.make_judge()
    counts = [0] * len(probes)
    drawn = 0
    call = 0
    while drawn < attack.n:
        size = min(attack.chunk, attack.n - drawn)
        settings = GenerationSettings(
            max_new_tokens=attack.max_new_tokens,
            temperature=attack.temperature,
            top_p=attack.top_p,
            n=size,
            seed=attack.seed + 10_007 * call,
            batch_size=max(1, attack.chunk // size),
        )
        samples = passes(subject).generate([p.prompt for p in probes], settings, template=True)
        for i, (probe, texts) in enumerate(zip(probes, samples)):
            flags = judge.leaks(texts, [probe.answer] * len(texts), [probe.statement or probe.answer] * len(texts))
            counts[i] += sum(flags)
        drawn += size
        call += 1
    return counts


@register_attack("leak_at_k")
class LeakAtK(ProbeAttack):
    description: ClassVar[str] = "n sampled answers per forget question; unbiased leak@k"

    n: int = Field(200, ge=1, description="samples per question")
    ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128])
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(200, ge=1)
    question: Literal["question", "paraphrased"] = "question"
    seed: int = 42
    chunk: int = Field(32, ge=1, description="samples generated together per question")

    def variants(self, request: ForgetRequest, data: EvalData, notes: list[str]) -> list[Variant]:
        records = self.qa(request.records)
        ks = [k for k in self.ks if 1 <= k <= self.n]
        if len(ks) < len(self.ks):
            notes.append(f"k > n = {self.n} dropped: {[k for k in self.ks if k not in ks]}")
        if not records or not ks:
            notes.append("no QA records or no k ≤ n; skipped")
            return []
        use_paraphrase = self.question == "paraphrased"
        probes = [plain_probe(r, r.paraphrased_questions[0] if use_paraphrase and r.paraphrased_questions else None) for r in records]
        greedy_leak = self.measure(probes, score=False)

        def base(subject: Subject) -> Values:
            rate = greedy_leak(subject).get("leak")
            return {f"leak@{k}": rate for k in ks}

        def attacked(subject: Subject) -> Values:
            counts = sample_counts(subject, probes, self)
            return {f"leak@{k}": float(np.mean([P.leak_at_k(self.n, c, k) for c in counts])) for k in ks}

        return [Variant(f"T={self.temperature},p={self.top_p}", base, attacked, items=len(probes))]
