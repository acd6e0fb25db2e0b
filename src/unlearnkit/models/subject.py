"""The Subject: a model, its tokenizer and a prompt format, with two verbs, `score` and `generate`.

Every metric and attack uses only these two verbs, so an inference-time method that wraps a
Subject (and overrides them) is evaluated by exactly the same code as a fine-tuned model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, Field

from unlearnkit import distributed
from unlearnkit.data.formatting import IGNORE, Encoded, Pair, PromptFormat, collate, encode_pair, prompt_ids, record_pair, refuse_long_text
from unlearnkit.data.schema import Record
from unlearnkit.errors import DataError
from unlearnkit.models.batching import length_batches
from unlearnkit.models.precision import autocast, fast_path, resolve_precision
from unlearnkit.models.prefix import MIN_SHARED, cache_argument, common_prefix, forward_sharing_prefix, prefix_cache, supports_kv_cache
from unlearnkit.progress import track


class GenerationSettings(BaseModel):
    """Decoding settings. `temperature == 0` means greedy (do_sample=False)."""

    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0
    batch_size: int = Field(16, ge=1)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class ScoreResult:
    """Per-item log-probs of each target token given its prompt.

    `token_mu` / `token_sigma` (only with `stats=True`) are the mean and standard deviation of
    log p(v) under the model's own next-token distribution at each target position, which
    Min-K%++ needs. `token_is_top` (bool per target position) says whether the teacher-forced
    argmax is the target token (exact memorisation, extraction strength); None when a wrapper
    that overrides `score` does not provide it.
    """

    token_logprobs: list[torch.Tensor]
    token_mu: list[torch.Tensor] | None = None
    token_sigma: list[torch.Tensor] | None = None
    token_ids: list[list[int]] = field(default_factory=list)
    token_is_top: list[torch.Tensor] | None = None

    @property
    def num_tokens(self) -> torch.Tensor:
        return torch.tensor([len(t) for t in self.token_logprobs], dtype=torch.long)

    @property
    def sum_nll(self) -> torch.Tensor:
        return torch.stack([-t.sum() for t in self.token_logprobs])

    @property
    def mean_nll(self) -> torch.Tensor:
        return self.sum_nll / self.num_tokens.clamp(min=1)

    @property
    def prob(self) -> torch.Tensor:
        """Length-normalised probability exp(-mean NLL) (TOFU's "Probability" per item)."""
        return torch.exp(-self.mean_nll)


class Subject:
    """What is unlearned and evaluated."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        fmt: PromptFormat | None = None,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        name: str = "model",
        precision: str = "auto",
        share_prefix: bool = True,
        length_buckets: bool = True,
    ) -> None:
        self.model = model
        # How `score` and `generate` run: bf16 autocast where native (`models/precision.py`;
        # the metrics agree with fp32 within docs/performance.md's tolerance), and a prompt
        # prefix common to a batch run once (`models/prefix.py`), batch sizes by length
        # (`models/batching.py`). Training has its own settings. All three off is the fp32 path
        # from before them (what bench/mfu.py measures as "before").
        self.precision = precision
        self.share_prefix = share_prefix and fast_path()
        self.length_buckets = length_buckets and fast_path()
        self.tokenizer = tokenizer
        self.fmt = (fmt or PromptFormat()).resolve(tokenizer)
        self.batch_size = batch_size
        self.name = name
        limit = getattr(model.config, "max_position_embeddings", None) or 2048
        self.max_length = max_length or min(int(limit), 4096)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def with_model(self, model: Any, name: str | None = None) -> Subject:
        """A Subject sharing tokenizer and format, around another model."""
        return Subject(model, self.tokenizer, self.fmt, batch_size=self.batch_size, max_length=self.max_length, name=name or self.name,
                       precision=self.precision, share_prefix=self.share_prefix, length_buckets=self.length_buckets)

    def inference_precision(self, generation: bool = False) -> str:
        """The resolved precision of `score` or `generate` (bad settings refused, naming it).
        Generation resolves `auto` to float32: in bf16 two of eight greedy answers of the default
        model changed wording, while scores stayed within docs/performance.md's tolerance."""
        if generation and self.precision == "auto":
            return "float32"
        return resolve_precision(self.precision, self.device, "subject precision")

    def clone(self) -> Subject:
        """A deep copy of the model (for methods that must not touch the previous step)."""
        return self.with_model(copy.deepcopy(self.model))

    def encode(self, prompt: str, target: str, *, template: bool = True, add_eos: bool = True, where: str = "", lead: str = "") -> Encoded:
        fmt = self.fmt if template else PromptFormat("raw")
        return encode_pair(self.tokenizer, fmt, prompt, target, add_eos=add_eos, max_length=self.max_length, where=where, lead=lead)

    def encode_record(self, record: Record, target: str | None = None, *, whole_passage: bool = False, where: str = "") -> Encoded:
        """A record as one training example, by the one rule of `record_pair` (QA through the
        prompt format with EOS, passages raw); `target` replaces its answer."""
        pair = record_pair(record, target, whole_passage=whole_passage)
        return self.encode(pair.prompt, pair.target, template=pair.template, add_eos=pair.add_eos, where=where or record.where, lead=pair.lead)

    def check_fits(self, pairs: list[Pair], *, new_tokens: int | None = None) -> None:
        """Refuse, naming the record's file, line and id, any pair that does not fit the model's
        context: with `new_tokens`, a prompt plus that many generated tokens; else prompt and
        target. Lengths in characters are checked before tokenising (`refuse_long_text`)."""
        for number, pair in enumerate(pairs, start=1):
            where = pair.where or f"item {number}"
            if new_tokens is None:
                self.encode(pair.prompt, pair.target, template=pair.template, add_eos=pair.add_eos, where=where)
            else:
                self._prompt_ids(pair.prompt, pair.template, new_tokens, where)

    def _prompt_ids(self, prompt: str, template: bool, new_tokens: int, where: str) -> list[int]:
        """A generation prompt's ids, refused when it and `new_tokens` exceed the context."""
        tok = self.tokenizer
        room = self.max_length - new_tokens
        if room < 1:
            raise DataError(f"{where}: {new_tokens} new tokens leave no room for a prompt: over the model's context of {self.max_length}")
        refuse_long_text(tok, len(prompt), room, where)
        rendered = self.render(prompt, template)
        ids = prompt_ids(tok, rendered) if rendered else [tok.bos_token_id or tok.eos_token_id]
        if len(ids) > room:
            raise DataError(f"{where}: prompt of {len(ids)} tokens + {new_tokens} new tokens is over the model's context of {self.max_length}")
        return ids

    def score_pairs(self, pairs: list[Pair], *, stats: bool = False, progress: str | None = None) -> ScoreResult:
        """`score` over pairs that may mix templated questions and raw passages, in input order."""
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, pair in enumerate(pairs):
            groups.setdefault((pair.template, pair.add_eos), []).append(i)
        parts: dict[int, tuple[ScoreResult, int]] = {}
        for (template, add_eos), indices in groups.items():
            result = self.score([pairs[i].prompt for i in indices], [pairs[i].target for i in indices],
                                template=template, add_eos=add_eos, stats=stats, progress=progress, leads=[pairs[i].lead for i in indices])
            parts.update({i: (result, row) for row, i in enumerate(indices)})
        pick = lambda field_name, i: getattr(parts[i][0], field_name)[parts[i][1]]  # noqa: E731
        order = range(len(pairs))
        return ScoreResult(
            token_logprobs=[pick("token_logprobs", i) for i in order],
            token_mu=[pick("token_mu", i) for i in order] if stats else None,
            token_sigma=[pick("token_sigma", i) for i in order] if stats else None,
            token_ids=[pick("token_ids", i) for i in order],
            token_is_top=[pick("token_is_top", i) for i in order] if all(r.token_is_top is not None for r, _ in parts.values()) else None,
        )

    def render(self, prompt: str, template: bool = True) -> str:
        return self.fmt.render(prompt, self.tokenizer) if template else prompt

    # -- verb 1: score ---------------------------------------------------------------------
    @torch.no_grad()
    def score(
        self,
        prompts: list[str],
        targets: list[str],
        *,
        template: bool = True,
        add_eos: bool = True,
        stats: bool = False,
        batch_size: int | None = None,
        progress: str | None = None,
        leads: list[str] | None = None,
    ) -> ScoreResult:
        """Log-prob of every target token given its prompt (and the answer's `leads`, given as
        context: `Pair.lead`), batched with right padding."""
        if len(prompts) != len(targets):
            raise ValueError(f"score: {len(prompts)} prompts but {len(targets)} targets")
        leads = leads or [""] * len(prompts)
        examples = [self.encode(p, t, template=template, add_eos=add_eos, where=f"item {i}", lead=lead)
                    for i, (p, t, lead) in enumerate(zip(prompts, targets, leads))]
        # Rows of similar length together, as many as a token budget allows (`length_batches`);
        # results are put back in input order.
        batches = length_batches([len(e.input_ids) for e in examples], batch_size or self.batch_size, buckets=self.length_buckets)
        precision = self.inference_precision()
        out_lp: list[torch.Tensor | None] = [None] * len(examples)
        out_mu: list[torch.Tensor | None] = [None] * len(examples)
        out_sd: list[torch.Tensor | None] = [None] * len(examples)
        out_top: list[torch.Tensor | None] = [None] * len(examples)
        was_training = self.model.training
        self.model.eval()

        def run(batch: list[int]) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
            """(item, token log-probs, argmax flags, mu, sigma) of each row of one batch."""
            enc = collate([examples[i] for i in batch], self.tokenizer.pad_token_id)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with autocast(precision, self.device):
                if self.share_prefix:  # logits[t] belongs to position offset + t
                    logits, offset = forward_sharing_prefix(self.model, enc["input_ids"], enc["attention_mask"], enc["labels"], every_position=False)
                else:
                    logits, offset = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, 0
            logp = torch.log_softmax(logits.float()[:, :-1], dim=-1)  # fp32 over the vocabulary
            labels = enc["labels"][:, offset + 1 :]
            mask = labels != IGNORE
            picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            is_top = logp.argmax(-1) == labels
            if stats:
                probs = logp.exp()
                mu = (probs * logp).sum(-1)
                sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp(min=0).sqrt()
            return [(index, picked[row][mask[row]].cpu(), is_top[row][mask[row]].cpu(),
                     mu[row][mask[row]].cpu() if stats else None, sigma[row][mask[row]].cpu() if stats else None)
                    for row, index in enumerate(batch)]

        # Processes working together deal the batches out (`distributed.deal`): each batch is the
        # one a single process runs, so the numbers do not depend on the process count.
        for index, lp, top, mu, sd in distributed.deal(batches, run, self._progress(progress)):
            out_lp[index], out_top[index], out_mu[index], out_sd[index] = lp, top, mu, sd
        self.model.train(was_training)
        return ScoreResult(
            token_logprobs=[t for t in out_lp if t is not None],
            token_mu=[t for t in out_mu if t is not None] if stats else None,
            token_sigma=[t for t in out_sd if t is not None] if stats else None,
            token_ids=[[x for x in e.labels if x != IGNORE] for e in examples],
            token_is_top=[t for t in out_top if t is not None],
        )

    # -- verb 2: generate ------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        settings: GenerationSettings | None = None,
        *,
        template: bool = True,
        progress: str | None = None,
    ) -> list[list[str]]:
        """`settings.n` continuations per prompt, batched with left padding, cut at stop strings."""
        settings = settings or GenerationSettings()
        tok = self.tokenizer
        ids = [self._prompt_ids(p, template, settings.max_new_tokens, f"item {i}") for i, p in enumerate(prompts)]
        # Fixed-size batches: decoding pays per step for every batch, and token-budget buckets
        # made more, smaller batches here (0.8x measured on the default model, docs/performance.md).
        batches = length_batches([len(i) for i in ids], settings.batch_size, buckets=False)
        results: list[list[str]] = [[] for _ in prompts]
        precision = self.inference_precision(generation=True)
        was_training = self.model.training
        self.model.eval()

        def run(number: int) -> list[tuple[int, list[str]]]:
            """(item, continuations) of each row of batch `number`."""
            batch = batches[number]
            rows = [ids[i] for i in batch]
            # One continuation per prompt: a prefix common to the batch's prompts runs once and
            # its KV cache serves every row. Sampling n > 1 would have generate expand the rows
            # (and a given cache) itself, so it keeps the plain path.
            shared = common_prefix(rows) if self.share_prefix and len(rows) > 1 and (settings.greedy or settings.n == 1) and supports_kv_cache(self.model) else 0
            shared = shared if shared >= MIN_SHARED else 0
            # Layout [shared prefix][left padding][rest of the prompt]: generate takes positions
            # from the attention mask's cumulative sum, so every real token keeps its position.
            enc = collate([Encoded(r[shared:], [IGNORE] * (len(r) - shared)) for r in rows], tok.pad_token_id, left=True)
            input_ids = enc["input_ids"].to(self.device)
            attention = enc["attention_mask"].to(self.device)
            kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
            if shared:
                prefix = torch.tensor([rows[0][:shared]], device=self.device)
                with autocast(precision, self.device):
                    _, kwargs[cache_argument(self.model)] = prefix_cache(self.model, prefix, len(rows))
                input_ids = torch.cat([prefix.expand(len(rows), -1), input_ids], 1)
                attention = torch.cat([torch.ones_like(prefix).expand(len(rows), -1), attention], 1)
            if settings.greedy:
                kwargs.update(do_sample=False, num_return_sequences=1, temperature=None, top_p=None, top_k=None)
            else:
                torch.manual_seed(settings.seed + number)
                kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0, num_return_sequences=settings.n)
            with autocast(precision, self.device):
                out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
            new = out[:, input_ids.shape[1] :]
            texts = tok.batch_decode(new, skip_special_tokens=True)
            per_prompt = 1 if settings.greedy else settings.n
            return [(index, [cut_at_stop(t, settings.stop) for t in texts[row * per_prompt : (row + 1) * per_prompt]]) for row, index in enumerate(batch)]

        for index, texts in distributed.deal(list(range(len(batches))), run, self._progress(progress)):  # as in `score`
            results[index] = texts
        if settings.greedy and settings.n > 1:  # greedy samples are identical; keep the shape
            results = [r * settings.n for r in results]
        self.model.train(was_training)
        return results

    @staticmethod
    def _progress(description: str | None) -> Any:
        """How `score` and `generate` go through their batches: with a progress bar if described."""
        return (lambda batches: track(batches, description)) if description else iter

    def greedy(self, prompts: list[str], max_new_tokens: int = 32, stop: list[str] | None = None, *, template: bool = True) -> list[str]:
        """One greedy continuation per prompt."""
        settings = GenerationSettings(max_new_tokens=max_new_tokens, stop=stop or [], batch_size=self.batch_size)
        return [r[0] for r in self.generate(prompts, settings, template=template)]


def cut_at_stop(text: str, stops: list[str]) -> str:
    """Text before the first stop string, stripped."""
    end = len(text)
    for stop in stops:
        pos = text.find(stop)
        if stop and pos != -1:
            end = min(end, pos)
    return text[:end].strip()

