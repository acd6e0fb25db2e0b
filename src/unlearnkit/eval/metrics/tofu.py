"""TOFU metrics (docs/metrics.md, TOFU): probability, probability with options, ROUGE of greedy
answers, truth ratio, forget quality, accuracy among the answer options, and the share of greedy
answers that contain the true answer."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from unlearnkit.data.knowledge import answer_stated
from unlearnkit.data.schema import Record
from unlearnkit.eval import primitives as P
from unlearnkit.eval.metric import Metric, MetricInput, MetricResult, Reference, item_id, register_metric
from unlearnkit.eval.metrics._common import greedy, mean_nlls
from unlearnkit.errors import UnlearnkitError
from unlearnkit.models.subject import Subject


@register_metric("probability")
class Probability(Metric):
    """Mean over items of p̄ = exp(−L̄) of the answer (+EOS) given the templated question
    (docs/metrics.md, TOFU)."""

    higher_is_better = True
    recoverable = True
    remembered_when = "higher"
    description = "mean length-normalised probability of the answer given the question"

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        nll = mean_nlls(subject, [r.question or "" for r in records], [r.answer or "" for r in records])
        per_item = {item_id(r, i): math.exp(-x) for i, (r, x) in enumerate(zip(records, nll))}
        return MetricResult(float(np.mean(list(per_item.values()))), per_item)


class _WithOptions(Metric):
    """Shared scoring of the correct answer and every perturbed answer of each record."""

    higher_is_better = True
    remembered_when = "higher"

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
    """Mean of p̄_answer / (p̄_answer + Σ p̄_perturbed + epsilon) (docs/metrics.md, TOFU; real
    authors / world facts). `epsilon`: OU's 1e-10 (TOFU's original aggregation: 0)."""

    description = "probability of the answer relative to the answer and its perturbed answers, mean over questions"

    epsilon: float = Field(P.EPSILON, ge=0.0)

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        per_item = {
            item_id(r, i): P.probability_with_options(math.exp(-c), [math.exp(-x) for x in pert], epsilon=self.epsilon)
            for i, (r, (c, pert)) in enumerate(zip(records, self.option_nlls(subject, records)))
        }
        return MetricResult(float(np.mean(list(per_item.values()))), per_item)


@register_metric("option_accuracy")
class OptionAccuracy(_WithOptions):
    """Accuracy on a knowledge set: 1 when the answer's p̄ beats every perturbed answer's p̄.

    Uses the same forward passes as `probability_options` and `truth_ratio`; no generation.
    """

    description = "share of questions whose answer is likelier than every perturbed answer"

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        per_item = {
            item_id(r, i): float(c < min(pert))  # lower NLL = higher p̄
            for i, (r, (c, pert)) in enumerate(zip(records, self.option_nlls(subject, records)))
        }
        return MetricResult(float(np.mean(list(per_item.values()))), per_item)


@register_metric("truth_ratio")
class TruthRatio(_WithOptions):
    """Per item R = wrong / (correct + epsilon), wrong the geometric mean over perturbed answers,
    computed in log space; the set score by `aggregation`.

    Params: `aggregation` = "forget" (mean min(R, 1/(R + epsilon)), the forget set) or "retain"
    (mean max(0, 1 − R): retain, real authors, world facts). `correct` = which answer the wrong
    ones are compared with: "paraphrased" (TOFU's forget and retain sets, whose perturbed
    answers rewrite the paraphrased answer; records without one use the answer), "answer" (TOFU's
    real authors and world facts), or "auto" (unlearnkit's variant): the paraphrased answer unless
    the plain answer is closer in word count to the perturbed answers (the built-in world perturbs
    the short answer, "Kellbridge" vs "Selvanna"; comparing a sentence with single words would
    measure length, not knowledge). `epsilon`: OU's 1e-10 (TOFU's original form: 0).
    `per_item` holds the raw R_i, which forget quality compares with the oracle's.
    Both aggregations are "higher is the goal" (→1 on forget, high on retain): on forget data a
    low value means the model still prefers the true answer.
    """

    remembered_when = "lower"
    # No aggregation named: suites use "forget" on request scopes and "retain" on kept sets.
    description = "TOFU truth ratio: how likely the perturbed answers are against the correct one, over questions"

    aggregation: Literal["forget", "retain"] = "forget"
    correct: Literal["auto", "paraphrased", "answer"] = "paraphrased"
    epsilon: float = Field(P.EPSILON, ge=0.0)

    def _correct(self, record: Record) -> str:
        answer, paraphrased = record.answer or "", record.paraphrased_answer
        if self.correct == "answer" or not paraphrased:
            return answer
        if self.correct == "auto":
            wrong = float(np.mean([len(w.split()) for w in record.perturbed_answers]))
            if abs(len(answer.split()) - wrong) < abs(len(paraphrased.split()) - wrong):
                return answer
        return paraphrased

    def ratios(self, subject: Subject, records: list[Record]) -> dict[str, float]:
        return {
            item_id(r, i): P.truth_ratio(c, pert, epsilon=self.epsilon)
            for i, (r, (c, pert)) in enumerate(zip(records, self.option_nlls(subject, records)))
        }

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        ratios = self.ratios(subject, self.items(data))
        values = list(ratios.values())
        if self.aggregation == "forget":
            value = P.truth_ratio_forget_score(values, epsilon=self.epsilon)
        else:
            value = P.truth_ratio_retain_score(values)
        return MetricResult(value, ratios, {"per_item": "R = wrong/correct"})


@register_metric("forget_quality")
class ForgetQuality(Metric):
    """KS p-value of the forget-set truth ratios against the oracle's on the same items
    (docs/metrics.md, TOFU). `correct` and `epsilon` are the truth ratio's (see `TruthRatio`).

    `reference`: the oracle Subject, its `truth_ratio` MetricResult, or its list of ratios.
    """

    higher_is_better = True
    needs_reference = True
    remembered_when = "lower"  # higher = closer to retraining
    description = "KS-test p-value of the truth ratios against the oracle's on the same questions"

    correct: Literal["auto", "paraphrased", "answer"] = "paraphrased"
    epsilon: float = Field(P.EPSILON, ge=0.0)

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        return TruthRatio().items(data)

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        truth = TruthRatio(aggregation="forget", correct=self.correct, epsilon=self.epsilon)
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
    """ROUGE-L of the greedy answer to the templated question against the answer
    (docs/metrics.md, TOFU).

    Settings: `measure` recall (TOFU) or f1; `stemmer` (TOFU: True); `max_new_tokens` (TOFU: 200);
    `question` = "question" or "paraphrased" (the first paraphrased question, a probe).
    """

    higher_is_better = True
    generates = True
    recoverable = True
    remembered_when = "higher"
    description = "ROUGE-L of the greedy answer against the true answer"

    measure: Literal["recall", "f1"] = "recall"
    stemmer: bool = True
    max_new_tokens: int = Field(200, ge=1)
    question: Literal["question", "paraphrased"] = "question"

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        records = super().items(data)
        if self.question == "paraphrased":
            return [r for r in records if r.paraphrased_questions]
        return records

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        paraphrased = self.question == "paraphrased"
        prompts = [(r.paraphrased_questions[0] if paraphrased else r.question) or "" for r in records]
        answers = greedy(subject, prompts, self.max_new_tokens, [], template=True)
        per_item = {}
        for i, (r, text) in enumerate(zip(records, answers)):
            score = P.rouge_l(r.answer or "", text, stemmer=self.stemmer)
            per_item[item_id(r, i)] = score.recall if self.measure == "recall" else score.f1
        return MetricResult(float(np.mean(list(per_item.values()))), per_item, {"generations": answers})


@register_metric("answer_accuracy")
class AnswerAccuracy(Metric):
    """Per QA record 1.0 when the greedy answer to the templated question (no stop strings)
    contains the true answer, case-insensitively, else 0.0; the value is their mean.

    The benchmark's quality check of a prepared world ("does the target know its facts?"): the
    same numbers as `greedy_accuracy` in `benchmark/prepare.py` for the same model and records.
    """

    higher_is_better = True
    generates = True
    recoverable = True
    remembered_when = "higher"
    description = "share of questions whose greedy answer contains the true answer, ignoring case"

    max_new_tokens: int = Field(16, ge=1)
    match: Literal["substring", "word"] = Field("substring", description="how the answer must appear: anywhere, or as whole words")

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        records = self.items(data)
        answers = greedy(subject, [r.question or "" for r in records], self.max_new_tokens, [], template=True)
        whole = self.match == "word"
        per_item = {item_id(r, i): float(answer_stated(r.answer or "", text, whole_word=whole)) for i, (r, text) in enumerate(zip(records, answers))}
        return MetricResult(float(np.mean(list(per_item.values()))), per_item, {"generations": answers})
