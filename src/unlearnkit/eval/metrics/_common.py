"""Helpers shared by metric modules: how each record kind is scored and generated from."""

from __future__ import annotations

from dataclasses import dataclass

from unlearnkit.data.schema import Record
from unlearnkit.eval.passes import ItemScore, passes
from unlearnkit.models.subject import GenerationSettings, Subject


@dataclass(frozen=True)
class Pair:
    """One scored sequence: target given prompt, with or without the chat/plain template."""

    prompt: str
    target: str
    template: bool
    add_eos: bool


def scored_pair(record: Record, target: str | None = None) -> Pair:
    """QA: the templated question, then the answer and EOS (TOFU, §0.1).
    Passage: the whole text after BOS, raw and without EOS (MUSE text, §2.4)."""
    if record.kind == "qa":
        return Pair(record.question or "", target if target is not None else record.answer or "", True, True)
    if record.kind == "passage":
        return Pair("", target if target is not None else record.passage_text, False, False)
    raise ValueError(f"record kind '{record.kind}' has no scored pair")


def split_passage(record: Record) -> tuple[str, str]:
    """(prefix, continuation) for verbatim checks; a plain `text` is split at the middle word."""
    if record.prompt is not None and record.continuation is not None:
        return record.prompt, record.continuation
    words = (record.text or "").split(" ")
    half = max(1, len(words) // 2)
    return " ".join(words[:half]), " " + " ".join(words[half:])


def score_pairs(subject: Subject, pairs: list[Pair], *, stats: bool = False) -> list[ItemScore]:
    """Score pairs through the shared memo, one batched call per (template, add_eos) group."""
    out: list[ItemScore | None] = [None] * len(pairs)
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault((pair.template, pair.add_eos), []).append(i)
    for (template, add_eos), indices in groups.items():
        result = passes(subject).score(
            [pairs[i].prompt for i in indices],
            [pairs[i].target for i in indices],
            template=template,
            add_eos=add_eos,
            stats=stats,
        )
        for row, i in enumerate(indices):
            out[i] = ItemScore(
                logprobs=result.token_logprobs[row],
                token_ids=result.token_ids[row] if result.token_ids else [],
                is_top=result.token_is_top[row] if result.token_is_top is not None else None,
                mu=result.token_mu[row] if result.token_mu is not None else None,
                sigma=result.token_sigma[row] if result.token_sigma is not None else None,
            )
    return [r for r in out if r is not None]


def mean_nll(item: ItemScore) -> float:
    return float(-item.logprobs.sum()) / max(1, len(item.logprobs))


def mean_nlls(subject: Subject, prompts: list[str], targets: list[str]) -> list[float]:
    """Length-normalised NLL of each templated QA target (answer tokens + EOS)."""
    if not prompts:
        return []
    result = passes(subject).score(prompts, targets, template=True, add_eos=True)
    return [float(x) for x in result.mean_nll]


def greedy(subject: Subject, prompts: list[str], max_new_tokens: int, stop: list[str], *, template: bool) -> list[str]:
    """One greedy continuation per prompt, through the shared memo."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop=stop, batch_size=subject.batch_size)
    return [texts[0] for texts in passes(subject).generate(prompts, settings, template=template)]
