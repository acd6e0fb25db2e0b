"""Guardrail: refuse prompts that are close, in embedding space, to removed content.

Each request's content (questions, passage prompts, passage sentences) is embedded and appended
to an index with a threshold calibrated for that request. A prompt (or any sentence of it, so a
mixed or multi-turn prompt is caught) whose cosine similarity to a stored row reaches that row's
threshold is refused.

What `score` reports for a refused prompt (the choice, documented in docs/inference.md): the
guarded system is scored as a model that answers with the refusal text. At each target position
it puts mass 1 - eps on its planned token (the next refusal token while the target still follows
the refusal, EOS otherwise) and eps on the inner model's distribution:

    p(y_t) = (1 - eps) * [y_t == planned_t] + eps * p_inner(y_t)

so greedy decoding of the scored distribution is exactly the refusal that `generate` returns,
the refusal scores near probability 1, and any other target pays about log(eps) per token while
keeping the inner model's ordering (small eps leaves a finite, attack-visible trace).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from unlearnkit.data.formatting import record_pair
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.methods.base import Method, UnlearnContext, register_method
from unlearnkit.methods.guard_index import GuardIndex, calibrate_threshold, segments
from unlearnkit.models.embedder import DEFAULT_EMBEDDER, Embedder, get_embedder
from unlearnkit.models.stack import WrappedSubject, find_wrapper, register_wrapper
from unlearnkit.models.subject import GenerationSettings, ScoreResult, Subject, cut_at_stop

DEFAULT_REFUSAL = "I'm sorry, but I can't share information about that."
INDEX_FILE = "guard_index.safetensors"
IDS_FILE = "guard_requests.json"


# -- which texts stand for a record ------------------------------------------------------------
def stored_texts(record: Record) -> list[str]:
    """What the guard stores for a removed record: the prompt it is asked with (`record_pair`:
    a question, or a split passage's prompt) and, for a passage, its sentences too."""
    prompt = record_pair(record).prompt
    if record.kind != "passage":
        return [prompt]
    sentences = segments(record.passage_text)[1:] or [record.passage_text]
    return [prompt, *sentences] if prompt else sentences


def query_text(record: Record) -> str:
    """How a record is asked: its prompt (`record_pair`), or an unsplit passage's first sentence."""
    prompt = record_pair(record).prompt
    if prompt:
        return prompt
    parts = segments(record.passage_text)
    return parts[1] if len(parts) > 1 else parts[0]


def held_out_positives(request: ForgetRequest, source: str = "both") -> list[str]:
    """Other phrasings of the removed content: probes and/or paraphrased questions (not stored)."""
    texts = [query_text(p) for p in request.probes] if source in ("probes", "both") else []
    if source in ("paraphrases", "both"):
        texts += [q for r in request.records for q in r.paraphrased_questions]
    return [t for t in dict.fromkeys(texts) if t]


def negative_prompts(context: UnlearnContext, limit: int) -> list[str]:
    """Prompts the guard must answer: the retain set and utility questions (extras['utility'])."""
    utility = context.extras.get("utility") or []
    texts = [query_text(r) for r in context.retain]
    texts += [u if isinstance(u, str) else query_text(u) for u in utility]
    texts = [t for t in dict.fromkeys(texts) if t]
    if len(texts) > limit:  # a fixed random subset keeps calibration cost bounded
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(context.seed))[:limit]
        texts = [texts[i] for i in sorted(order.tolist())]
    return texts


# -- the wrapper ------------------------------------------------------------------------------------
@register_wrapper("guard")
class GuardedSubject(WrappedSubject):
    """Refuses prompts that match the index; passes every other prompt to `inner`."""

    def __init__(self, inner: Subject, *, index: GuardIndex | None = None, embedder: str = DEFAULT_EMBEDDER,
                 refusal: str = DEFAULT_REFUSAL, epsilon: float = 1e-6, name: str | None = None) -> None:
        super().__init__(inner, name)
        self.index = index if index is not None else GuardIndex()
        self.embedder_source = embedder
        self.refusal = refusal
        self.epsilon = epsilon
        self.calibrations: dict[str, dict[str, Any]] = {}

    @property
    def embedder(self) -> Embedder:
        return get_embedder(self.embedder_source)

    def rewrap(self, inner: Subject) -> GuardedSubject:
        other = GuardedSubject(inner, index=self.index, embedder=self.embedder_source, refusal=self.refusal, epsilon=self.epsilon, name=self.name)
        other.calibrations = self.calibrations
        return other

    def own_state(self) -> None:
        self.index, self.calibrations = self.index.copy(), dict(self.calibrations)

    def margins(self, prompts: list[str]) -> torch.Tensor:
        """Per prompt: best (cosine - threshold) over its segments and the index; >= 0 refuses."""
        parts = [segments(p) for p in prompts]
        flat = [s for ps in parts for s in ps]
        if not flat or len(self.index) == 0:
            return torch.full((len(prompts),), -float("inf"))
        per_segment = self.index.margins(self.embedder.encode(flat))
        out, start = [], 0
        for ps in parts:
            out.append(per_segment[start : start + len(ps)].max() if ps else torch.tensor(-float("inf")))
            start += len(ps)
        return torch.stack(out)

    def refused(self, prompts: list[str]) -> list[bool]:
        return (self.margins(prompts) >= 0).tolist()

    # -- verb 2 --------------------------------------------------------------------------------
    def generate(self, prompts: list[str], settings: GenerationSettings | None = None, **kwargs: Any) -> list[list[str]]:  # type: ignore[override]
        settings = settings or GenerationSettings()
        refused = self.refused(prompts)
        passed = [i for i, r in enumerate(refused) if not r]
        answers = self.inner.generate([prompts[i] for i in passed], settings, **kwargs) if passed else []
        results: list[list[str]] = [[] for _ in prompts]
        for i, answer in zip(passed, answers):
            results[i] = answer
        # Capped like a decoded answer would be: at max_new_tokens tokens, then at stop strings.
        ids = self.tokenizer(self.refusal, add_special_tokens=False)["input_ids"][: settings.max_new_tokens]
        text = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), settings.stop)
        for i, r in enumerate(refused):
            if r:
                results[i] = [text] * settings.n
        return results

    # -- verb 1 --------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, prompts: list[str], targets: list[str], *, template: bool = True, add_eos: bool = True,  # type: ignore[override]
              stats: bool = False, **kwargs: Any) -> ScoreResult:
        result = self.inner.score(prompts, targets, template=template, add_eos=add_eos, stats=stats, **kwargs)
        refused = self.refused(prompts)
        if not any(refused):
            return result
        planned = [x for x in self.encode("?", self.refusal, template=template, add_eos=True).labels if x >= 0]
        eos = self.tokenizer.eos_token_id
        eps = self.epsilon
        top = result.token_is_top or [torch.zeros(len(t), dtype=torch.bool) for t in result.token_logprobs]
        for i, r in enumerate(refused):
            if not r:
                continue
            target = result.token_ids[i]
            match = torch.tensor(planned_matches(target, planned, eos), dtype=torch.bool)
            inner_lp = result.token_logprobs[i].double()
            off_path = math.log(eps) + inner_lp
            on_path = torch.logaddexp(torch.full_like(inner_lp, math.log1p(-eps)), off_path)
            result.token_logprobs[i] = torch.where(match, on_path, off_path).float()
            top[i] = match
            if stats and result.token_mu is not None and result.token_sigma is not None:
                result.token_mu[i], result.token_sigma[i] = mixture_stats(result.token_mu[i], result.token_sigma[i], eps)
        result.token_is_top = top
        return result

    # -- saving ----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"embedder": self.embedder_source, "refusal": self.refusal, "epsilon": self.epsilon, "calibrations": self.calibrations}

    def save_files(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.index.tensors(), str(folder / INDEX_FILE))
        (folder / IDS_FILE).write_text(json.dumps(self.index.request_ids))

    @classmethod
    def from_saved(cls, inner: Subject, folder: Path, config: dict[str, Any], device: str) -> GuardedSubject:
        guard = cls(inner, index=load_index(folder), embedder=config["embedder"], refusal=config["refusal"], epsilon=config["epsilon"])
        guard.calibrations = config.get("calibrations", {})
        return guard


def load_index(folder: Path) -> GuardIndex:
    """The index that `save_files` wrote into `folder`."""
    from safetensors.torch import load_file

    return GuardIndex.from_tensors(load_file(str(folder / INDEX_FILE)), json.loads((folder / IDS_FILE).read_text()))


def planned_matches(target: list[int], planned: list[int], eos: int | None) -> list[bool]:
    """Per target position: is it the guard's planned token (refusal while on it, then EOS)?"""
    out, on_path = [], True
    for t, token in enumerate(target):
        expected = planned[t] if on_path and t < len(planned) else eos
        out.append(token == expected)
        on_path = on_path and token == expected
    return out


def mixture_stats(mu: torch.Tensor, sigma: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of log p under the refusal mixture, from the inner model's own (Min-K%++).

    Approximates p_inner(planned) as negligible: mass 1-eps at log(1-eps), the rest at
    log(eps) + log p_inner, whose first two moments follow from the inner mu and sigma.
    """
    mu, sigma = mu.double(), sigma.double()
    log_eps, log_keep = math.log(eps), math.log1p(-eps)
    mean = (1 - eps) * log_keep + eps * (log_eps + mu)
    second = (1 - eps) * log_keep**2 + eps * (log_eps**2 + 2 * log_eps * mu + sigma**2 + mu**2)
    return mean.float(), (second - mean**2).clamp(min=0).sqrt().float()


# -- the method --------------------------------------------------------------------------------------
@register_method("guardrail")
class Guardrail(Method):
    """Embedding-match guard with a refusal; each request is an index append (no weight change)."""

    family: ClassVar[str] = "inference"
    description: ClassVar[str] = "refuse prompts similar (MiniLM embeddings) to removed content; threshold calibrated per request"

    refusal: str = DEFAULT_REFUSAL
    threshold: float | None = Field(None, gt=-1, le=1, description="fixed cosine threshold; None calibrates on probes vs retain/utility")
    default_threshold: float = Field(0.75, gt=-1, le=1, description="used when a request has no probes or paraphrases")
    min_threshold: float = Field(0.5, gt=-1, le=1)
    max_threshold: float = Field(0.95, gt=-1, le=1)
    epsilon: float = Field(1e-6, gt=0, lt=0.5, description="mass a refused prompt's score leaves to the inner model")
    embedder: str = DEFAULT_EMBEDDER
    max_negatives: int = Field(2000, ge=0, description="retain/utility prompts used for calibration")
    calibrate_on: Literal["probes", "paraphrases", "both"] = Field("both", description="held-out positives for calibration")

    def unlearn(self, subject: Subject, request: ForgetRequest, context: UnlearnContext) -> Subject:
        guard = find_wrapper(subject, GuardedSubject)
        result: Subject = subject
        if guard is None:  # first request: wrap; later ones extend the existing index in place
            guard = GuardedSubject(subject, embedder=self.embedder, refusal=self.refusal, epsilon=self.epsilon)
            result = guard
        embedder = guard.embedder
        texts = list(dict.fromkeys(t for r in request.records for t in stored_texts(r) if t))
        block = embedder.encode(texts)
        threshold, info = self.threshold, {"fixed": self.threshold is not None}
        if threshold is None:
            # Only this request's rows take part, so calibration cost does not grow with the index.
            positives = held_out_positives(request, self.calibrate_on)
            negatives = negative_prompts(context, self.max_negatives)
            pos = best_similarity(embedder, positives, block)
            neg = best_similarity(embedder, negatives, block)
            threshold = calibrate_threshold(pos, neg, default=self.default_threshold, floor=self.min_threshold, ceiling=self.max_threshold)
            info.update(positives=len(positives), negatives=len(negatives),
                        refused_positives=float((pos >= threshold).float().mean()) if len(pos) else None,
                        refused_negatives=float((neg >= threshold).float().mean()) if len(neg) else None)
        guard.index.add(request.id, block, threshold)
        guard.calibrations[request.id] = {"threshold": threshold, "rows": len(texts), **info}
        return result


def best_similarity(embedder: Embedder, prompts: list[str], block: torch.Tensor) -> torch.Tensor:
    """Per prompt, the best cosine over its segments against one request's rows."""
    if not prompts:
        return torch.zeros(0)
    parts = [segments(p) for p in prompts]
    sims = embedder.encode([s for ps in parts for s in ps]) @ block.T
    best = sims.max(dim=1).values
    out, start = [], 0
    for ps in parts:
        out.append(best[start : start + len(ps)].max())
        start += len(ps)
    return torch.stack(out)
