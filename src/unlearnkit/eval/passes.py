"""Shared forward passes: a per-Subject memo of `score` items and `generate` outputs.

Metrics never call `subject.score` / `subject.generate` directly; they call `passes(subject)`.
Inside `sharing()` (which `evaluate` enters), every distinct item (prompt, target, template,
add_eos) is scored once and every distinct generation (prompt, settings, template) is run once
for the whole suite, however many metrics need it: probability, truth ratio, exact memorisation,
extraction strength and the LOSS / Min-K attacks all read the same forward pass. Missing items are
computed in one batched call, so sharing never costs batching.

The memo lives only as long as the `sharing()` block: the weights change between sequential steps.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
import torch

from unlearnkit.models.subject import GenerationSettings, ScoreResult, Subject


@dataclass(frozen=True)
class ItemScore:
    logprobs: torch.Tensor
    token_ids: list[int]
    is_top: torch.Tensor | None
    mu: torch.Tensor | None = None
    sigma: torch.Tensor | None = None


@dataclass
class PassCounts:
    """How many items metrics asked for, and how many were actually computed."""

    score_requested: int = 0
    score_computed: int = 0
    generate_requested: int = 0
    generate_computed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


ScoreKey = tuple[str, str, bool, bool]
GenKey = tuple[str, str, bool]


@dataclass
class Passes:
    """The memo for one Subject. `counts` may be shared by several memos (one per Subject)."""

    subject: Subject
    counts: PassCounts = field(default_factory=PassCounts)
    _scores: dict[ScoreKey, ItemScore] = field(default_factory=dict)
    _generations: dict[GenKey, list[str]] = field(default_factory=dict)

    def score(
        self,
        prompts: list[str],
        targets: list[str],
        *,
        template: bool = True,
        add_eos: bool = True,
        stats: bool = False,
    ) -> ScoreResult:
        keys = [(p, t, template, add_eos) for p, t in zip(prompts, targets, strict=True)]
        self.counts.score_requested += len(keys)
        missing = list(dict.fromkeys(k for k in keys if self._needs(k, stats)))
        if missing:
            self.counts.score_computed += len(missing)
            result = self.subject.score(
                [k[0] for k in missing], [k[1] for k in missing], template=template, add_eos=add_eos, stats=stats
            )
            for i, key in enumerate(missing):
                self._scores[key] = ItemScore(
                    logprobs=result.token_logprobs[i],
                    token_ids=result.token_ids[i] if result.token_ids else [],
                    is_top=result.token_is_top[i] if getattr(result, "token_is_top", None) else None,
                    mu=result.token_mu[i] if result.token_mu is not None else None,
                    sigma=result.token_sigma[i] if result.token_sigma is not None else None,
                )
        items = [self._scores[k] for k in keys]
        has_top = all(it.is_top is not None for it in items)
        return ScoreResult(
            token_logprobs=[it.logprobs for it in items],
            token_mu=[it.mu for it in items] if stats else None,  # type: ignore[misc]
            token_sigma=[it.sigma for it in items] if stats else None,  # type: ignore[misc]
            token_ids=[it.token_ids for it in items],
            token_is_top=[it.is_top for it in items] if has_top else None,  # type: ignore[misc]
        )

    def _needs(self, key: ScoreKey, stats: bool) -> bool:
        item = self._scores.get(key)
        return item is None or (stats and item.mu is None)

    def generate(
        self, prompts: list[str], settings: GenerationSettings, *, template: bool = True
    ) -> list[list[str]]:
        tag = json.dumps(settings.model_dump(), sort_keys=True)
        keys = [(p, tag, template) for p in prompts]
        self.counts.generate_requested += len(keys)
        missing = list(dict.fromkeys(k for k in keys if k not in self._generations))
        if missing:
            self.counts.generate_computed += len(missing)
            outputs = self.subject.generate([k[0] for k in missing], settings, template=template)
            self._generations.update(zip(missing, outputs, strict=True))
        return [self._generations[k] for k in keys]


@dataclass
class _Sharing:
    enabled: bool
    counts: PassCounts = field(default_factory=PassCounts)
    memos: dict[int, Passes] = field(default_factory=dict)


_current: contextvars.ContextVar[_Sharing | None] = contextvars.ContextVar("unlearnkit_passes", default=None)


@contextmanager
def sharing(enabled: bool = True) -> Iterator[PassCounts]:
    """Within this block, `passes(subject)` returns one memo per Subject (or, with
    `enabled=False`, a fresh memo per call: the per-metric baseline the benchmark compares)."""
    state = _Sharing(enabled=enabled)
    token = _current.set(state)
    try:
        yield state.counts
    finally:
        _current.reset(token)


def passes(subject: Subject) -> Passes:
    """The memo to score / generate through for `subject`."""
    state = _current.get()
    if state is None:
        return Passes(subject)
    if not state.enabled:
        return Passes(subject, counts=state.counts)
    memo = state.memos.get(id(subject))
    if memo is None or memo.subject is not subject:
        memo = state.memos[id(subject)] = Passes(subject, counts=state.counts)
    return memo

