"""In-context unlearning (ICUL, Pawelczyk et al.), adapted to generation.

ICUL puts the forget point in the prompt with a flipped label, followed by a few correctly
labelled examples and then the query. For a generative model the "flipped label" is a refusal:
the prompt carries instructions to withhold the removed content, demonstrations where questions
about removed content are answered with the refusal, and demonstrations where retained questions
are answered normally. Both verbs see the same prompt (`build_prompt`), so scores and generations
agree.

The pool of removed questions grows by one list append per request. Which of them are shown for
a query is chosen by word overlap with the query (the most relevant flipped demonstrations, as in
ICUL where the forget point itself is in context), so the prompt length does not grow with the
number of requests.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from unlearnkit.data.schema import ForgetRequest
from unlearnkit.methods.base import Method, UnlearnContext, register_method
from unlearnkit.methods.guard import DEFAULT_REFUSAL, query_text
from unlearnkit.models.stack import WrappedSubject, find_wrapper, register_wrapper
from unlearnkit.models.subject import GenerationSettings, ScoreResult, Subject

DEFAULT_INSTRUCTIONS = (
    "Some information has been removed from your knowledge at its owner's request. "
    "If a question asks about removed information, do not reveal it and answer exactly: \"{refusal}\" "
    "Answer every other question normally."
)
_WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) > 2}


@register_wrapper("icul")
class InContextSubject(WrappedSubject):
    """Prepends instructions and demonstrations to every prompt before the inner verbs see it."""

    def __init__(self, inner: Subject, *, instructions: str = DEFAULT_INSTRUCTIONS, refusal: str = DEFAULT_REFUSAL,
                 forget_examples: int = 3, retain_examples: int = 1, name: str | None = None) -> None:
        super().__init__(inner, name)
        self.instructions = instructions
        self.refusal = refusal
        self.forget_examples = forget_examples
        self.retain_examples = retain_examples
        self.forgotten: list[str] = []  # questions about removed content, oldest first
        self.topics: list[str] = []
        self.retained: list[tuple[str, str]] = []  # (question, answer) answered normally

    def rewrap(self, inner: Subject) -> InContextSubject:
        other = InContextSubject(inner, instructions=self.instructions, refusal=self.refusal,
                                 forget_examples=self.forget_examples, retain_examples=self.retain_examples, name=self.name)
        other.forgotten, other.topics, other.retained = self.forgotten, self.topics, self.retained
        return other

    def own_state(self) -> None:
        self.forgotten, self.topics, self.retained = list(self.forgotten), list(self.topics), list(self.retained)

    def add(self, questions: list[str], topic: str | None = None) -> None:
        self.forgotten.extend(q for q in questions if q)
        if topic:
            self.topics.append(topic)

    def demonstrations(self, query: str) -> list[tuple[str, str]]:
        """The most query-relevant removed questions (refused), then the retained examples."""
        query_words = words(query)
        # Overlap first, recency second: a later request's questions win ties.
        ranked = sorted(range(len(self.forgotten)), key=lambda i: (-len(query_words & words(self.forgotten[i])), -i))
        chosen = [(self.forgotten[i], self.refusal) for i in sorted(ranked[: self.forget_examples])]
        return chosen + self.retained[: self.retain_examples]

    def build_prompt(self, prompt: str, template: bool = True) -> str:
        lines = [self.instructions.format(refusal=self.refusal)]
        if self.topics:
            lines.append("Removed topics: " + "; ".join(self.topics) + ".")
        demos = self.demonstrations(prompt)
        if demos:
            lines.append("Examples:")
            lines += [f"Q: {q}\nA: {a}" for q, a in demos]
        context = "\n".join(lines)
        if not template:  # raw text (passage continuation): the context is a preamble
            return f"{context}\n\n{prompt}"
        return f"{context}\n\nNow answer this question.\nQ: {prompt}"

    @torch.no_grad()
    def score(self, prompts: list[str], targets: list[str], *, template: bool = True, **kwargs: Any) -> ScoreResult:  # type: ignore[override]
        return self.inner.score([self.build_prompt(p, template) for p in prompts], targets, template=template, **kwargs)

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None, *, template: bool = True, **kwargs: Any) -> list[list[str]]:  # type: ignore[override]
        return self.inner.generate([self.build_prompt(p, template) for p in prompts], settings, template=template, **kwargs)

    def config(self) -> dict[str, Any]:
        # The removed questions are stored in clear: ICUL needs them in every prompt.
        return {"instructions": self.instructions, "refusal": self.refusal, "forget_examples": self.forget_examples,
                "retain_examples": self.retain_examples, "forgotten": self.forgotten, "topics": self.topics,
                "retained": [list(x) for x in self.retained]}

    @classmethod
    def from_saved(cls, inner: Subject, folder: Path, config: dict[str, Any], device: str) -> InContextSubject:
        wrapper = cls(inner, instructions=config["instructions"], refusal=config["refusal"],
                      forget_examples=config["forget_examples"], retain_examples=config["retain_examples"])
        wrapper.forgotten, wrapper.topics = list(config["forgotten"]), list(config["topics"])
        wrapper.retained = [(q, a) for q, a in config["retained"]]
        return wrapper


@register_method("icul")
class InContextUnlearning(Method):
    """Instructions and refusal demonstrations in the prompt; each request adds its questions."""

    family: ClassVar[str] = "inference"
    description: ClassVar[str] = "in-context unlearning: instructions + refused demonstrations of removed questions in the prompt"

    instructions: str = DEFAULT_INSTRUCTIONS
    refusal: str = DEFAULT_REFUSAL
    forget_examples: int = Field(3, ge=0, description="refused demonstrations per prompt (most relevant first)")
    retain_examples: int = Field(1, ge=0, description="normally answered retain demonstrations per prompt")

    def unlearn(self, subject: Subject, request: ForgetRequest, context: UnlearnContext) -> Subject:
        wrapper = find_wrapper(subject, InContextSubject)
        result: Subject = subject
        if wrapper is None:
            wrapper = InContextSubject(subject, instructions=self.instructions, refusal=self.refusal,
                                       forget_examples=self.forget_examples, retain_examples=self.retain_examples)
            wrapper.retained = pick_retained(context, self.retain_examples)
            result = wrapper
        topic = request.meta.get("topic")
        wrapper.add(list(dict.fromkeys(query_text(r) for r in request.records)), topic if isinstance(topic, str) else None)
        return result


def pick_retained(context: UnlearnContext, count: int) -> list[tuple[str, str]]:
    """`count` retain QA pairs, a seeded random choice (short answers keep the prompt short)."""
    pairs = [(r.question or "", r.answer or "") for r in context.retain if r.kind == "qa"]
    if not pairs or count == 0:
        return []
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(context.seed)).tolist()
    return [pairs[i] for i in order[:count]]
