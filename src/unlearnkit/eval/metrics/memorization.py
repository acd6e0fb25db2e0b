"""Exact memorisation and extraction strength from the teacher-forced argmax (docs/metrics.md,
Memorisation; OpenUnlearning's definitions).

Both read the same forward pass as `probability` (QA) or the MIA passage scores: the argmax flags
come with `score`. As in OpenUnlearning, the last scored position is not measured
(`last_token="drop"`): for an answer it is the EOS we append, which a model that reproduces the
whole answer need not predict (a chat model ends its turn with another token). `last_token="keep"`
measures every scored token (unlearnkit's variant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np

from unlearnkit.data.schema import Record
from unlearnkit.errors import UnlearnkitError
from unlearnkit.eval import primitives as P
from unlearnkit.eval.metric import Metric, MetricInput, MetricResult, Reference, item_id, of_source, register_metric
from unlearnkit.eval.metrics._common import Pair, score_pairs, split_passage
from unlearnkit.models.subject import Subject


class _ArgmaxMetric(Metric):
    """QA: answer given question. Passage: continuation given prefix (MUSE verbmem items).
    `kind`: "qa", "passage" or "all"."""

    kinds = ("qa", "passage")
    higher_is_better = True
    recoverable = True
    remembered_when = "higher"
    formula: ClassVar[Callable[[Any], float]]
    defined_when_empty: ClassVar[bool] = False  # whether `formula` has a value for no measured position

    kind: Literal["qa", "passage", "all"] = "qa"
    last_token: Literal["drop", "keep"] = "drop"
    source: str | None = None  # the benchmark split measured (see `of_source`)

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        kind = self.kind
        return of_source([r for r in super().items(data) if kind == "all" or r.kind == kind], self.source)

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        pairs = []
        for r in records:
            if r.kind == "qa":
                pairs.append(Pair(r.question or "", r.answer or "", True, True))
            else:
                prefix, rest = split_passage(r)
                pairs.append(Pair(prefix, rest, False, False))
        per_item = {}
        for i, (r, scored) in enumerate(zip(records, score_pairs(subject, pairs))):
            if scored.is_top is None:
                raise UnlearnkitError(f"{self.name}: this Subject's score() gives no argmax flags")
            flags = scored.is_top.tolist()
            flags = P.reference_span(flags) if self.last_token == "drop" else flags
            if flags or type(self).defined_when_empty:  # OU: EM of an empty span is None (left out), ES is 0
                per_item[item_id(r, i)] = type(self).formula(flags)
        value = float(np.mean(list(per_item.values()))) if per_item else None
        return MetricResult(value, per_item)


@register_metric("exact_memorization")
class ExactMemorization(_ArgmaxMetric):
    description = "share of answer tokens that are the model's top prediction under teacher forcing"
    formula = staticmethod(P.exact_memorization)


@register_metric("extraction_strength")
class ExtractionStrength(_ArgmaxMetric):
    description = "share of the answer the model reproduces under teacher forcing after the shortest prefix it needs"
    formula = staticmethod(P.extraction_strength)
    defined_when_empty = True
