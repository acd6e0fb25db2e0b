"""TOFU metrics (metrics.md §1): probability, probability with options, ROUGE of greedy answers,
truth ratio, forget quality, and accuracy among the answer options."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from unlearnkit.data.schema import Record
from unlearnkit.eval import primitives as P
from unlearnkit.eval.metric import Metric, MetricInput, MetricResult, Reference, item_id, register_metric
from unlearnkit.eval.metrics._common import greedy, mean_nlls
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models.subject import Subject


@register_metric("probability")
class Probability(Metric):
    """Mean over items of p̄ = exp(−L̄) of the answer (+EOS) given the templated question (§1.2)."""

    higher_is_better = True

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        nll = mean_nlls(subject, [r.question or "" for r in records], [r.answer or "" for r in records])
        per_item = {item_id(r, i): math.exp(-x) for i, (r, x) in enumerate(zip(records, nll))}
        return MetricResult(float(np.mean(list(per_item.values()))), per_item)


class _WithOptions(Metric):
    """Shared scoring of the correct answer and every perturbed answer of each record."""

    higher_is_better = True

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        return [r for r in super().items(data) if r.perturbed_answers]

    def _correct(self, record: Record) -> str:
        return record.answer or ""

    def option_nlls(self, subject: Subject, records: list[Record]) -> list[tuple[float, list[float]]]:
        """(L̄ correct, [L̄ perturbed_j]) per record, from one batched (shared) scoring call."""
        prompts: list[str] = []
        targets: list[str] = []
        for r in records:
            for target in [self._correct(r), *r.perturbed_answers]:
                prompts.append(r.question or "")
                targets.append(target)
        nll = iter(mean_nlls(subject, prompts, targets))
        return [(next(nll), [next(nll) for _ in r.perturbed_answers]) for r in records]


@register_metric("probability_options")
class ProbabilityWithOptions(_WithOptions):
    """Mean of p̄_answer / (p̄_answer + Σ p̄_perturbed) (§1.3; real authors / world facts)."""

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        per_item = {
            item_id(r, i): P.probability_with_options(math.exp(-c), [math.exp(-x) for x in pert])
            for i, (r, (c, pert)) in enumerate(zip(records, self.option_nlls(subject, records)))
        }
        return MetricResult(float(np.mean(list(per_item.values()))), per_item)


@register_metric("option_accuracy")
class OptionAccuracy(_WithOptions):
    """Accuracy on a knowledge set: 1 when the answer's p̄ beats every perturbed answer's p̄.

    Uses the same forward passes as `probability_options` and `truth_ratio`; no generation.
    """

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        per_item = {
            item_id(r, i): float(c < min(pert))  # lower NLL = higher p̄
            for i, (r, (c, pert)) in enumerate(zip(records, self.option_nlls(subject, records)))
        }
        return MetricResult(float(np.mean(list(per_item.values()))), per_item)


@register_metric("truth_ratio")
class TruthRatio(_WithOptions):
    """Per item R = wrong/correct (geometric mean over wrong answers); set score by aggregation.

    Params: `aggregation` = "forget" (mean min(R, 1/R), the forget set) or "retain"
    (mean max(0, 1 − R): retain, real authors, world facts). `correct` = which answer the wrong
    ones are compared with: "paraphrased" (TOFU forget/retain, whose perturbed answers rewrite
    the paraphrased answer), "answer" (TOFU RA/WF), or "auto": the paraphrased answer unless the
    plain answer is closer in word count to the perturbed answers (the built-in world perturbs
    the short answer, "Kellbridge" vs "Selvanna"; comparing a sentence with single words would
    measure length, not knowledge). Records without a paraphrased answer use the answer.
    `per_item` holds the raw R_i, which forget quality compares with the oracle's.
    Both aggregations are "higher is the goal" (→1 on forget, high on retain).
    """

    def __init__(self, aggregation: str = "forget", correct: str = "auto", **params: Any) -> None:
        if aggregation not in ("forget", "retain"):
            raise UnlearnkitError(f"truth_ratio: aggregation '{aggregation}' (use forget or retain)")
        if correct not in ("auto", "paraphrased", "answer"):
            raise UnlearnkitError(f"truth_ratio: correct '{correct}' (use auto, paraphrased or answer)")
        super().__init__(aggregation=aggregation, correct=correct, **params)

    def _correct(self, record: Record) -> str:
        answer, paraphrased = record.answer or "", record.paraphrased_answer
        if self.params["correct"] == "answer" or not paraphrased:
            return answer
        if self.params["correct"] == "auto":
            wrong = float(np.mean([len(w.split()) for w in record.perturbed_answers]))
            if abs(len(answer.split()) - wrong) < abs(len(paraphrased.split()) - wrong):
                return answer
        return paraphrased

    def ratios(self, subject: Subject, records: list[Record]) -> dict[str, float]:
        return {
            item_id(r, i): P.truth_ratio(c, pert)
            for i, (r, (c, pert)) in enumerate(zip(records, self.option_nlls(subject, records)))
        }

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        ratios = self.ratios(subject, self.items(data))
        aggregate = P.truth_ratio_forget_score if self.params["aggregation"] == "forget" else P.truth_ratio_retain_score
        return MetricResult(aggregate(list(ratios.values())), ratios, {"per_item": "R = wrong/correct"})


@register_metric("forget_quality")
class ForgetQuality(Metric):
    """KS p-value of the forget-set truth ratios against the oracle's on the same items (§1.6).

    `reference`: the oracle Subject, its `truth_ratio` MetricResult, or its list of ratios.
    """

    higher_is_better = True
    needs_reference = True

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        return TruthRatio().items(data)

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        truth = TruthRatio(aggregation="forget", correct=self.params.get("correct", "auto"))
        ours = truth.compute(subject, data)
        if isinstance(reference, Subject):
            oracle = list(truth.compute(reference, data).per_item.values())
        elif isinstance(reference, MetricResult):
            oracle = [v for v in reference.per_item.values() if v is not None]
        elif isinstance(reference, list):
            oracle = list(reference)
        else:
            raise UnlearnkitError("forget_quality needs the oracle (a model or its truth ratios)")
        value = P.forget_quality(list(ours.per_item.values()), oracle)
        return MetricResult(value, ours.per_item, {"oracle_ratios": oracle})


@register_metric("rouge")
class Rouge(Metric):
    """ROUGE-L of the greedy answer to the templated question against the answer (§1.4).

    Params: `measure` recall (TOFU) or f1; `stemmer` (TOFU: True); `max_new_tokens` (TOFU: 200);
    `question` = "question" or "paraphrased" (the first paraphrased question, a probe).
    """

    higher_is_better = True

    def __init__(self, measure: str = "recall", stemmer: bool = True, max_new_tokens: int = 200, question: str = "question", **params: Any) -> None:
        if measure not in ("recall", "f1"):
            raise UnlearnkitError(f"rouge: measure '{measure}' (use recall or f1)")
        super().__init__(measure=measure, stemmer=stemmer, max_new_tokens=max_new_tokens, question=question, **params)

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        records = super().items(data)
        if self.params["question"] == "paraphrased":
            return [r for r in records if r.paraphrased_questions]
        return records

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        paraphrased = self.params["question"] == "paraphrased"
        prompts = [(r.paraphrased_questions[0] if paraphrased else r.question) or "" for r in records]
        answers = greedy(subject, prompts, self.params["max_new_tokens"], [], template=True)
        per_item = {}
        for i, (r, text) in enumerate(zip(records, answers)):
            score = P.rouge_l(r.answer or "", text, stemmer=self.params["stemmer"])
            per_item[item_id(r, i)] = score.recall if self.params["measure"] == "recall" else score.f1
        return MetricResult(float(np.mean(list(per_item.values()))), per_item, {"generations": answers})
