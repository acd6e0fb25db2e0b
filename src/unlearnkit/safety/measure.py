"""One measurement of a Subject on a probe set, through its two verbs only (`score`, `generate`),
so a fine-tuned model and an inference-time wrapper (a guardrail that refuses) are measured alike.

Three kinds of number:
- answered: the share of questions whose greedy answer states the true answer as whole words
  (`data.knowledge.answer_given`);
- "said": the length-normalised probability exp(−mean NLL) of what the model itself answered at
  the start (its own greedy answers, recorded by the first measurement). This is how much the
  model still says what it said: a smooth signal for the budget that works for a model fine-tuned
  on short answers and for a chat model that answers in sentences alike (the probability of a
  bare answer such as "Paris" + EOS is tiny for a chat model, whatever it knows);
- probability: the same of the record's own target (`record_pair`: a question's answer with
  EOS, a passage's continuation), as TOFU measures it; the control target compares these.
Perplexity is exp(total NLL / total tokens) of whole general-text passages. Only what a caller
needs is computed (`needs`): the training loop's checks skip what its budget and target do not use.

The same probes are often measured twice on the same weights: the end of a request repeats the
training loop's last check, and the start of the next request in a stream repeats the retain,
general-text and (mostly) collateral measurements of the end of this one. `SameWeights` keeps the
results of the last weights measured, so those are not computed again (bench/stream.py: the
guard's measurements were about half of a stream step).
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from unlearnkit import distributed
from unlearnkit.data.formatting import Pair, record_pair
from unlearnkit.data.knowledge import answer_given
from unlearnkit.data.schema import Record
from unlearnkit.models.subject import ScoreResult, Subject
from unlearnkit.safety.probes import ProbeSet

ALL = frozenset({"forget_probability", "forget_accuracy", "forget_said", "retain_said", "retain_accuracy",
                 "collateral_accuracy", "collateral_said", "perplexity", "control_probability"})


@dataclass
class Measurement:
    forget_accuracy: float | None = None  # greedy answers to the plain questions that state the answer
    forget_paraphrased_accuracy: float | None = None  # ... to the first paraphrased questions
    forget_said: float | None = None  # probability of its own start answers (plain questions; passages: their continuation)
    forget_probability: float | None = None  # probability of the records' answers (QA) and continuations (passages)
    forget_paraphrased_probability: float | None = None  # ... the answers after the first paraphrased question
    retain_said: float | None = None
    retain_accuracy: float | None = None
    collateral_accuracy: float | None = None
    collateral_said: float | None = None
    perplexity: float | None = None
    control_probability: float | None = None  # probability of the control records' answers (never-seen level)
    retain_count: int = 0  # how many retain questions the accuracy is a share of
    collateral_count: int = 0  # how many collateral facts the accuracy is a share of

    @property
    def forget_answered(self) -> float | None:
        """Share of the request's questions still answered, plain and paraphrased together."""
        values = [v for v in (self.forget_accuracy, self.forget_paraphrased_accuracy) if v is not None]
        return sum(values) / len(values) if values else None

    @property
    def level(self) -> float:
        """How much of the request the model still holds (lower = more forgotten): the share of
        questions answered plus how much it still says what it said, each in [0, 1]."""
        return (self.forget_answered or 0.0) + (self.forget_said or 0.0)

    def to_json(self) -> dict[str, float | None]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, float | None]) -> Measurement:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class SameWeights:
    """The results of the two verbs `measure` uses, for one state of a model's weights.

    A state is told apart by every parameter's storage, its in-place version counter and its sum
    (in float64): training, a rollback, `scale_change` and a checkpoint load each change one of
    them. Only a plain `Subject` is remembered: a wrapper (a guardrail, an offset) answers from
    more than its weights. Calls are remembered whole (the same prompts in the same order), so a
    remembered result is the one the computation would give again, batching included.
    """

    def __init__(self) -> None:
        self.state: tuple[Any, ...] | None = None
        self.results: dict[tuple[Any, ...], Any] = {}

    @staticmethod
    @torch.no_grad()
    def state_of(subject: Subject) -> tuple[Any, ...] | None:
        if type(subject) is not Subject or distributed.sharded():  # a shard's sums are not the model's
            return None
        params = list(subject.model.parameters())
        sums = torch.stack([p.sum(dtype=torch.float64) for p in params]).tolist() if params else []
        how = (id(subject.tokenizer), repr(subject.fmt), subject.batch_size, subject.max_length, subject.precision,
               subject.share_prefix, subject.length_buckets)  # what else decides the numbers
        return (id(subject.model), how, tuple((p.data_ptr(), p._version) for p in params), tuple(sums))

    def bind(self, subject: Subject) -> tuple[Any, ...] | None:
        state = self.state_of(subject)
        if state is None or state != self.state:
            self.state, self.results = state, {}
        return state

    def _call(self, key: tuple[Any, ...], compute: Any) -> Any:
        if key not in self.results:
            self.results[key] = compute()
        return self.results[key]

    def greedy(self, subject: Subject, prompts: list[str], max_new_tokens: int) -> list[str]:
        return list(self._call(("greedy", tuple(prompts), max_new_tokens), lambda: subject.greedy(prompts, max_new_tokens=max_new_tokens)))

    def score(self, subject: Subject, pairs: list[Pair]) -> ScoreResult:
        return self._call(("score", tuple(pairs)), lambda: subject.score_pairs(pairs))


_per_thread = threading.local()


def remembered() -> SameWeights:
    """This thread's `SameWeights`: the weights `measure` saw last (a thread of its own each, so
    a service thread never reads what another measured)."""
    if not hasattr(_per_thread, "memo"):
        _per_thread.memo = SameWeights()
    memo: SameWeights = _per_thread.memo
    return memo


def _score(subject: Subject, pairs: list[Pair], memo: SameWeights | None) -> ScoreResult:
    return memo.score(subject, pairs) if memo else subject.score_pairs(pairs)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _question(record: Record, paraphrased: bool) -> str:
    return (record.paraphrased_questions[0] if paraphrased else record.question) or ""


def probabilities(subject: Subject, records: list[Record], *, paraphrased: bool = False, memo: SameWeights | None = None) -> list[float]:
    """Probability of each record's own target (`record_pair`), optionally after its paraphrase."""
    if not records:
        return []
    pairs = [record_pair(r) for r in records]
    if paraphrased:
        pairs = [Pair(_question(r, True), p.target, p.template, p.add_eos) for r, p in zip(records, pairs)]
    return _score(subject, pairs, memo).prob.tolist()


def said(subject: Subject, records: list[Record], answers: list[str], memo: SameWeights | None = None) -> list[float]:
    """Probability of the given earlier answers (questions) or of the records' continuations (passages)."""
    if not records:
        return []
    pairs = [Pair(r.question or "", answer, True, False) if r.kind != "passage" and answer else record_pair(r)
             for r, answer in zip(records, answers)]
    return _score(subject, pairs, memo).prob.tolist()


def answers_to(subject: Subject, records: list[Record], max_new_tokens: int, *, paraphrased: bool = False, memo: SameWeights | None = None) -> list[str]:
    """Greedy answers to the records' questions ("" for passages)."""
    questions = [r for r in records if r.kind != "passage"]
    prompts = [_question(r, paraphrased) for r in questions]
    texts = iter((memo.greedy(subject, prompts, max_new_tokens) if memo else subject.greedy(prompts, max_new_tokens=max_new_tokens)) if questions else [])
    return [next(texts) if r.kind != "passage" else "" for r in records]


def accuracies(subject: Subject, records: list[Record], max_new_tokens: int, *, paraphrased: bool = False) -> list[float]:
    answers = answers_to(subject, records, max_new_tokens, paraphrased=paraphrased)
    return [float(answer_given(r.answer or "", a)) for r, a in zip(records, answers) if r.kind != "passage"]


def perplexity(subject: Subject, passages: list[Record], memo: SameWeights | None = None) -> float | None:
    if not passages:
        return None
    scored = _score(subject, [record_pair(r, whole_passage=True) for r in passages], memo)
    tokens = int(scored.num_tokens.sum())
    return math.exp(float(scored.sum_nll.sum()) / max(1, tokens))


def measure(subject: Subject, probes: ProbeSet, *, max_new_tokens: int = 12, needs: frozenset[str] = ALL) -> Measurement:
    """The numbers `needs` names (see `ALL`). The first measurement of a probe set records the
    model's own answers (`probes.start_answers`), which every later "said" number scores."""
    memo: SameWeights | None = remembered()
    if memo.bind(subject) is None:  # not a plain Subject: nothing remembered
        memo = None
    questions = [r for r in probes.forget if r.kind != "passage"]
    paraphrased = [r for r in questions if r.paraphrased_questions]
    start = probes.start_answers
    first = not start
    m = Measurement()

    def answered(name: str, records: list[Record], para: bool = False) -> float | None:
        answers = answers_to(subject, records, max_new_tokens, paraphrased=para, memo=memo)
        if first:
            start[name] = answers
        return _mean([float(answer_given(r.answer or "", a)) for r, a in zip(records, answers) if r.kind != "passage"])

    if "forget_accuracy" in needs or first:
        m.forget_accuracy = answered("forget", probes.forget)
        m.forget_paraphrased_accuracy = answered("forget_paraphrased", paraphrased, para=True) if paraphrased else None
    if "retain_accuracy" in needs or first:
        m.retain_accuracy = answered("retain", probes.retain)
        m.retain_count = sum(r.kind != "passage" for r in probes.retain)
    if "collateral_accuracy" in needs or first:
        m.collateral_accuracy = answered("collateral", probes.collateral)
        m.collateral_count = len(probes.collateral)
    if "forget_said" in needs:
        m.forget_said = _mean(said(subject, probes.forget, start["forget"], memo))
    if "forget_probability" in needs:
        m.forget_probability = _mean(probabilities(subject, probes.forget, memo=memo))
        m.forget_paraphrased_probability = _mean(probabilities(subject, paraphrased, paraphrased=True, memo=memo))
    if "retain_said" in needs:
        m.retain_said = _mean(said(subject, probes.retain, start["retain"], memo))
    if "collateral_said" in needs:
        m.collateral_said = _mean(said(subject, probes.collateral, start["collateral"], memo))
    if "perplexity" in needs:
        m.perplexity = perplexity(subject, probes.general, memo)
    if "control_probability" in needs:
        m.control_probability = _mean(probabilities(subject, probes.control, memo=memo))
    return m
