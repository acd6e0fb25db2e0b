"""MUSE metrics (docs/metrics.md, MUSE): VerbMem and KnowMem, ROUGE-L F1 without stemming, on a
0-1 scale (MUSE prints 100 × the mean)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from unlearnkit.data.schema import Record
from unlearnkit.eval import primitives as P
from unlearnkit.eval.metric import Metric, MetricInput, MetricResult, Reference, item_id, of_source, register_metric
from unlearnkit.eval.metrics._common import greedy, split_passage
from unlearnkit.models.subject import Subject

KNOWMEM_STOPS = ["\n\n", "\nQuestion", "Question:"]


@register_metric("verbmem")
class VerbMem(Metric):
    """Greedy continuation of the passage prefix (raw text, no template) against the true
    continuation cut to `max_new_tokens` tokens; ROUGE-L F1 (docs/metrics.md, MUSE). Lower on
    forget.

    `truncate`: "muse" cuts the continuation tokenised with BOS to its first `max_new_tokens`
    ids (MUSE: BOS + 127 tokens), "new_tokens" to its first `max_new_tokens` tokens.
    `source`: the benchmark split measured (see `of_source`).
    """

    kinds = ("passage",)
    higher_is_better = True
    generates = True
    recoverable = True
    remembered_when = "higher"
    description = "ROUGE-L F1 of the greedy continuation of a passage's prefix against the true continuation"

    max_new_tokens: int = Field(128, ge=1)
    stemmer: bool = False
    truncate: Literal["muse", "new_tokens"] = "muse"
    source: str | None = None

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        return of_source(super().items(data), self.source)

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        limit = self.max_new_tokens
        with_bos = self.truncate == "muse"
        splits = [split_passage(r) for r in records]
        outputs = greedy(subject, [prefix for prefix, _ in splits], limit, [], template=False)
        per_item = {}
        for i, (r, (_, truth), text) in enumerate(zip(records, splits, outputs)):
            # The reference is cut to as many tokens as the model may generate (MUSE: 128 ids, BOS included).
            ids = subject.tokenizer(truth, add_special_tokens=with_bos)["input_ids"][:limit]
            reference_text = subject.tokenizer.decode(ids, skip_special_tokens=True)
            per_item[item_id(r, i)] = P.rouge_l(reference_text, text, stemmer=self.stemmer).f1
        return MetricResult(float(np.mean(list(per_item.values()))), per_item, {"generations": outputs})


def knowmem_prompt(question: str, shots: list[Record]) -> str:
    """MUSE's in-context QA prompt: "Question: q\\nAnswer: a\\n\\n" per shot, then the question."""
    context = "".join(f"Question: {s.question}\nAnswer: {s.answer}\n\n" for s in shots)
    return f"{context}Question: {question}\nAnswer: "


@register_metric("knowmem")
class KnowMem(Metric):
    """Few-shot QA (raw text), greedy, cut at MUSE's stop strings, ROUGE-L F1 vs the answer
    (docs/metrics.md, MUSE).

    Shots come from `data.shots` (MUSE's `*_qa_icl` splits, else the retain set's QA; without
    either, the other records of the set), never the probed question itself. Lower is the goal on forget; on retain it is MUSE's utility metric.
    """

    higher_is_better = True
    generates = True
    recoverable = True
    remembered_when = "higher"
    description = "ROUGE-L F1 of the few-shot greedy answer against the true answer"

    shots: int = Field(10, ge=0)
    max_new_tokens: int = Field(32, ge=1)
    stemmer: bool = False
    source: str | None = None

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        return of_source(super().items(data), self.source)

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        data = MetricInput.of(data)
        records = self.items(data)
        pool = [r for r in (data.shots or data.records) if r.kind == "qa"]
        prompts = []
        for r in records:
            shots = [s for s in pool if s.question != r.question][: self.shots]
            prompts.append(knowmem_prompt(r.question or "", shots))
        outputs = greedy(subject, prompts, self.max_new_tokens, KNOWMEM_STOPS, template=False)
        per_item = {
            item_id(r, i): P.rouge_l(r.answer or "", text, stemmer=self.stemmer).f1
            for i, (r, text) in enumerate(zip(records, outputs))
        }
        return MetricResult(float(np.mean(list(per_item.values()))), per_item, {"generations": outputs})
