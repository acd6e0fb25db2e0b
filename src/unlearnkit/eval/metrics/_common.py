"""Helpers shared by metric modules: how each record kind is scored and generated from."""

from __future__ import annotations

from unlearnkit.data.formatting import Pair, record_pair
from unlearnkit.data.schema import Record
from unlearnkit.eval.passes import ItemScore, passes
from unlearnkit.models.subject import GenerationSettings, Subject


def scored_pair(record: Record, target: str | None = None) -> Pair:
    """How a metric scores a record (`record_pair` with the whole passage): a QA answer after its
    templated question with EOS (TOFU), a passage's whole text after BOS, raw (MUSE)."""
    return record_pair(record, target, whole_passage=True)


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
