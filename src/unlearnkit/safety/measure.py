"""One measurement of a Subject on a probe set, through its two verbs only (`score`, `generate`),
so a fine-tuned model and an inference-time wrapper (a guardrail that refuses) are measured alike.

Likelihoods are length-normalised probabilities exp(−mean NLL) of each record's target
(`record_pair`: a question's answer with EOS, a passage's continuation), averaged over records.
Accuracies are shares of questions whose greedy answer states the true answer
(`probes.answer_given`). Perplexity is exp(total NLL / total tokens) of whole general-text
passages. Only what a caller needs is computed (`needs`): the training loop's checks skip what
its budget and target do not use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from unlearnkit.data.formatting import record_pair
from unlearnkit.data.schema import Record
from unlearnkit.models.subject import Subject
from unlearnkit.data.knowledge import answer_given
from unlearnkit.safety.probes import ProbeSet

ALL = frozenset({"forget_probability", "forget_accuracy", "retain_probability", "retain_accuracy",
                 "collateral_accuracy", "perplexity", "control_probability"})


@dataclass
class Measurement:
    forget_probability: float | None = None  # every forget record (QA answers, passage continuations)
    forget_paraphrased_probability: float | None = None  # the first paraphrased question of each QA record
    forget_accuracy: float | None = None  # greedy answers to the plain questions
    forget_paraphrased_accuracy: float | None = None  # greedy answers to the first paraphrased questions
    retain_probability: float | None = None
    retain_accuracy: float | None = None
    collateral_accuracy: float | None = None
    perplexity: float | None = None
    control_probability: float | None = None

    @property
    def forget_answered(self) -> float | None:
        """Share of the request's questions still answered, plain and paraphrased together."""
        values = [v for v in (self.forget_accuracy, self.forget_paraphrased_accuracy) if v is not None]
        return sum(values) / len(values) if values else None

    @property
    def level(self) -> float:
        """How much of the request the model still holds (lower = more forgotten): the share of
        questions answered plus the mean probability, each in [0, 1]."""
        return (self.forget_answered or 0.0) + (self.forget_probability or 0.0)

    def to_json(self) -> dict[str, float | None]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, float | None]) -> Measurement:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def probabilities(subject: Subject, records: list[Record], *, paraphrased: bool = False) -> list[float]:
    if not records:
        return []
    pairs = [record_pair(r) for r in records]
    if paraphrased:
        pairs = [p.__class__(r.paraphrased_questions[0], p.target, p.template, p.add_eos) for r, p in zip(records, pairs)]
    return subject.score_pairs(pairs).prob.tolist()


def accuracies(subject: Subject, records: list[Record], max_new_tokens: int, *, paraphrased: bool = False) -> list[float]:
    if not records:
        return []
    questions = [(r.paraphrased_questions[0] if paraphrased else r.question) or "" for r in records]
    answers = subject.greedy(questions, max_new_tokens=max_new_tokens)
    return [float(answer_given(r.answer or "", a)) for r, a in zip(records, answers)]


def perplexity(subject: Subject, passages: list[Record]) -> float | None:
    if not passages:
        return None
    scored = subject.score_pairs([record_pair(r, whole_passage=True) for r in passages])
    tokens = int(scored.num_tokens.sum())
    return math.exp(float(scored.sum_nll.sum()) / max(1, tokens))


def measure(subject: Subject, probes: ProbeSet, *, max_new_tokens: int = 12, needs: frozenset[str] = ALL) -> Measurement:
    """The numbers `needs` names (see `ALL`), on the probe set."""
    questions = [r for r in probes.forget if r.kind != "passage"]
    paraphrased = [r for r in questions if r.paraphrased_questions]
    kept_questions = [r for r in probes.retain if r.kind != "passage"]
    m = Measurement()
    if "forget_probability" in needs:
        m.forget_probability = _mean(probabilities(subject, probes.forget))
        m.forget_paraphrased_probability = _mean(probabilities(subject, paraphrased, paraphrased=True))
    if "forget_accuracy" in needs and questions:
        m.forget_accuracy = _mean(accuracies(subject, questions, max_new_tokens))
        m.forget_paraphrased_accuracy = _mean(accuracies(subject, paraphrased, max_new_tokens, paraphrased=True))
    if "retain_probability" in needs:
        m.retain_probability = _mean(probabilities(subject, probes.retain))
    if "retain_accuracy" in needs:
        m.retain_accuracy = _mean(accuracies(subject, kept_questions, max_new_tokens))
    if "collateral_accuracy" in needs:
        m.collateral_accuracy = _mean(accuracies(subject, probes.collateral, max_new_tokens))
    if "perplexity" in needs:
        m.perplexity = perplexity(subject, probes.general)
    if "control_probability" in needs:
        m.control_probability = _mean(probabilities(subject, probes.control))
    return m
