"""Probes: a prompt, the answer it should draw out, and the three read-outs every probing
attack reports, all "higher = more remembered":

- `probability`: mean exp(−mean NLL) of the answer (+EOS) after the prompt (TOFU's Probability);
- `rouge`: ROUGE-L recall of the greedy response against the answer (TOFU's ROUGE);
- `leak`: share of greedy responses that contain the answer (the leak@k judge, `_judge.py`).

Scoring and generation go through the shared memo (`eval.passes`), so the plain forget
questions that several attacks use as their `before` are scored and generated once per model.
A probe with `template=False` carries a prompt that is already rendered (a dialogue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from unlearnkit.data.formatting import PromptFormat
from unlearnkit.data.schema import Record
from unlearnkit.eval import primitives as P
from unlearnkit.eval.attacks._base import Attack, Measure, Values
from unlearnkit.eval.attacks._judge import Judge, JudgeName
from unlearnkit.eval.metrics._common import greedy
from unlearnkit.eval.passes import passes
from unlearnkit.models.subject import Subject

ProbeMetric = str  # "probability", "rouge", "leak", or "<name>" for a second answer (mixed prompts)


@dataclass(frozen=True)
class Probe:
    id: str
    prompt: str
    answer: str
    statement: str | None = None  # the answer as a sentence (embedding judge)
    template: bool = True
    # A second answer the response must also contain (mixed prompts: the retain half).
    other_answer: str | None = None


def plain_probe(record: Record, question: str | None = None, suffix: str = "") -> Probe:
    """The record's own question (or `question`) as a probe."""
    return Probe(
        id=f"{record.id}{suffix}",
        prompt=question if question is not None else record.question or "",
        answer=record.answer or "",
        statement=record.paraphrased_answer,
    )


def measure_probes(
    subject: Subject,
    probes: list[Probe],
    *,
    max_new_tokens: int,
    judge: Judge,
    score: bool = True,
    other_metric: str = "retain_answered",
) -> Values:
    """The read-outs over `probes` (means over items; empty -> no values)."""
    if not probes:
        return {}
    out: Values = {}
    if score:
        out["probability"] = _mean(probe_probabilities(subject, probes))
    responses = probe_responses(subject, probes, max_new_tokens)
    out["rouge"] = _mean([P.rouge_l(p.answer, r).recall for p, r in zip(probes, responses)])
    flags = judge.leaks(responses, [p.answer for p in probes], [p.statement or p.answer for p in probes])
    out["leak"] = _mean([float(f) for f in flags])
    with_other = [(p, r) for p, r in zip(probes, responses) if p.other_answer]
    if with_other:
        other = judge.leaks([r for _, r in with_other], [p.other_answer or "" for p, _ in with_other])
        out[other_metric] = _mean([float(f) for f in other])
    return out


def probe_probabilities(subject: Subject, probes: list[Probe]) -> list[float]:
    values: list[float] = [0.0] * len(probes)
    for template in (True, False):
        idx = [i for i, p in enumerate(probes) if p.template == template]
        if not idx:
            continue
        # A pre-rendered prompt is scored raw, so the format's answer prefix is added here.
        prefix = "" if template else subject.fmt.answer_prefix
        result = passes(subject).score(
            [probes[i].prompt for i in idx], [prefix + probes[i].answer for i in idx], template=template, add_eos=True
        )
        for row, i in enumerate(idx):
            values[i] = math.exp(-float(result.mean_nll[row]))
    return values


def probe_responses(subject: Subject, probes: list[Probe], max_new_tokens: int) -> list[str]:
    responses: list[str] = [""] * len(probes)
    for template in (True, False):
        idx = [i for i, p in enumerate(probes) if p.template == template]
        if idx:
            texts = greedy(subject, [probes[i].prompt for i in idx], max_new_tokens, [], template=template)
            for i, text in zip(idx, texts):
                responses[i] = text
    return responses


def render_dialogue(fmt: PromptFormat, tokenizer: object, turns: list[tuple[str, str]], last: str) -> str:
    """A conversation (user, assistant) × n, then the user's `last` message, rendered the way
    the Subject renders one question: the chat template with every turn, or the plain/custom
    template repeated; the result is scored and generated from as raw text."""
    if fmt.name == "chat":
        messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
        for user, assistant in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": last})
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))  # type: ignore[attr-defined]
    if fmt.name == "raw":
        return "\n".join([*(f"{u}\n{a}" for u, a in turns), last])
    history = "".join(fmt.render(user, tokenizer) + fmt.answer_prefix + assistant + "\n" for user, assistant in turns)
    return history + fmt.render(last, tokenizer)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


class ProbeAttack(Attack):
    """Settings every probing attack shares: the greedy answer length and the leak judge."""

    max_new_tokens: int = Field(48, ge=1, description="greedy tokens per response (world answers are short)")
    judge: JudgeName = "contains"
    rouge_gate: float = Field(0.1, ge=0, le=1)
    embed_threshold: float = Field(0.75, gt=0, le=1)

    def make_judge(self) -> Judge:
        return Judge(self.judge, self.rouge_gate, self.embed_threshold)

    def measure(self, probes: list[Probe], *, score: bool = True, other_metric: str = "retain_answered") -> Measure:
        judge = self.make_judge()
        return lambda subject: measure_probes(
            subject, probes, max_new_tokens=self.max_new_tokens, judge=judge, score=score, other_metric=other_metric
        )
