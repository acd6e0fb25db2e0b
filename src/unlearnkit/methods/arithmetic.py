"""Weight-arithmetic unlearning: learn the request on purpose, then subtract what was learned.

- `ssu`: Stable Sequential Unlearning (guangyaodou/SSU_Unlearn; docs/sequential.md, SSU). Per
  request: LoRA fine-tuning on the request with the random-labelling loss and a gradient-saliency
  mask, merge, then
  θ_t = θ_{t-1} − λ·(θ_ft − θ_{t-1}). `faithful=True` reproduces the reference code's quirks.
- `task_vector`: fine-tune on the request (plain NLL, the shared loop), θ − λ·τ (MUSE's
  task vector, swj0419/muse_bench `baselines/baselines/task_vector.py`).
- `negmerge`: several task vectors from different settings; keep entries whose signs all agree,
  average them, subtract (NegMerge, naver-ai/negmerge); λ optionally chosen on a grid against
  the retain set.

Each vector is measured against the model the method receives (the previous step's model),
which is what makes these methods sequential (docs/sequential.md, "Weight-arithmetic
methods"). Weights are changed in place, like every training-based method does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, PrivateAttr, field_validator

from unlearnkit import distributed
from unlearnkit.data.formatting import IGNORE, Encoded, collate, record_pair
from unlearnkit.data.schema import ForgetRequest
from unlearnkit.training import Batch, FineTune, TrainConfig, TrainStats, train
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import LossMethod, UnlearnContext, register_method
from unlearnkit.models.loading import wrap_lora
from unlearnkit.models.subject import Subject
from unlearnkit.models.weights import Vector, scale_change, snapshot

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# -- task-vector pieces ------------------------------------------------------------------------
def negate_into(model: Any, before: Vector, scale: float) -> None:
    """In place: θ ← θ_before − λ·(θ − θ_before), i.e. subtract the task vector just learned."""
    scale_change(model, before, -scale)


@torch.no_grad()
def subtract(model: Any, vector: Vector, scale: float) -> None:
    for name, p in model.named_parameters():
        p.sub_(scale * vector[name].to(p.dtype))


def _examples(subject: Subject, request: ForgetRequest) -> list[dict[str, Encoded]]:
    return [{"x": subject.encode_record(r, where=f"forget record {r.id or i}")} for i, r in enumerate(request.records)]


def fine_tune_vector(subject: Subject, request: ForgetRequest, config: TrainConfig, lora: dict[str, Any] | None, label: str) -> tuple[Vector, TrainStats]:
    """τ = FT(θ; request) − θ, fine-tuned on a copy through the shared loop (θ is untouched)."""
    copy = subject.clone()
    for p in copy.model.parameters():
        p.requires_grad_(True)
    if lora is not None:
        copy = copy.with_model(wrap_lora(copy.model, **lora))
    stats = train(copy, _examples(copy, request), FineTune(), config, description=label)
    tuned = copy.model.merge_and_unload() if lora is not None else copy.model
    before = dict(subject.model.named_parameters())
    with torch.no_grad():
        vector = {k: p.detach().sub_(before[k]) for k, p in tuned.named_parameters()}  # reuses the copy's memory
    return vector, stats


def _row_mean_nll(model: Any, part: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over rows of each row's token-mean NLL (SSU's reduction, not the batch token mean)."""
    logits = model(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits[:, :-1]
    labels = part["labels"][:, 1:]
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels.clamp(min=0), reduction="none")
    mask = (labels != IGNORE).float()
    return ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


# -- SSU ---------------------------------------------------------------------------------------
@register_method("ssu")
class SSU(LossMethod):
    """Stable Sequential Unlearning (Dou et al.), defaults from the configs of
    guangyaodou/SSU_Unlearn (docs/sequential.md, SSU)."""

    family: ClassVar[str] = "arithmetic"
    description: ClassVar[str] = "LoRA fine-tune with random labels + gradient saliency, then subtract the task vector"

    lr: float = Field(1e-5, gt=0)
    epochs: float = Field(1, gt=0)
    batch_size: int = Field(2, ge=1)
    grad_accum: int = Field(2, ge=1)
    max_grad_norm: float | None = Field(None, gt=0)  # the reference does not clip
    epsilon: float = Field(0.5, ge=0, description="weight of the random-labelling loss")
    random_pairs: int = Field(3, ge=1, description="K random continuations per iteration")
    saliency: bool = True
    num_std: float = Field(1.0, ge=0, description="saliency threshold: mean(|g|) + num_std·std(|g|)")
    scale: float = Field(1.0, gt=0, description="λ, the task-vector scaling")
    lora_r: int = Field(32, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.01, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_PROJECTIONS))
    faithful: bool = Field(False, description="reproduce the reference code's quirks (g⊙m + g; random-label loss over the prompt)")
    # The reference seeds torch with 8888 when its utils.py is imported, before the LoRA adapter
    # is built, in a fresh process per request: every request starts from the same adapter.
    seed: int = Field(8888, description="seeds the LoRA initialisation (the same for every request), the batch order and the random labels")

    _state: dict[str, Any] = PrivateAttr(default_factory=dict)  # per-request: records, answers, rng

    def unlearn(self, subject: Subject, request: ForgetRequest, context: UnlearnContext) -> Subject:
        if self.faithful and distributed.world_size() > 1:  # its second backward inside the loss is per process
            raise UnlearnkitError("method 'ssu': faithful=true runs on one process only (the reference's double backward does not split across processes)")
        request, _ = self.targets(subject, request, context.retain)  # as given, or in its own words
        model = subject.model
        before = snapshot(model)  # θ_{t-1}
        flags = [(p, p.requires_grad) for p in model.parameters()]
        with torch.random.fork_rng(devices=[]):  # the adapter's initialisation depends on the seed only
            torch.manual_seed(self.seed)
            peft_model = wrap_lora(model, r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout, target_modules=self.target_modules)
        working = subject.with_model(peft_model)
        self._state.update(subject=working, records=request.records, answers=[record_pair(r).target for r in request.records])
        try:
            context.stats = train(working, _examples(working, request), self, self.train_config(), description=f"ssu on {request.id}")
        except BaseException:
            working.model.unload()  # take peft's layers out again: the caller keeps θ_{t-1}
            raise
        finally:
            self._state.clear()
            for p, flag in flags:  # peft froze the base weights
                p.requires_grad_(flag)
        # working.model, not peft_model: under FSDP the loop hands back another module object
        # around the same parameters (`training.train`).
        tuned = working.model.merge_and_unload()  # θ_ft: the base modules, LoRA folded in
        negate_into(tuned, before, self.scale)  # θ_t = θ_{t-1} − λ·(θ_ft − θ_{t-1})
        return subject.with_model(tuned)

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, dict[str, float]]:
        fit = _row_mean_nll(model, forget["x"])
        loss, logs = fit, {"fit": fit.item()}
        if self.epsilon > 0:
            rand = _row_mean_nll(model, self._random_labels(forget["index"].tolist(), forget["x"]["input_ids"].device))
            loss = fit + self.epsilon * rand
            logs["rand"] = rand.item()
        if self.faithful and self.saliency:
            # The reference backpropagates, masks the (accumulated) gradient, then backpropagates
            # the same loss again (the shared loop does that second backward): g⊙m + g.
            (loss / self.grad_accum).backward(retain_graph=True)
            self._mask(model)
        return loss, logs

    def schedule_steps(self, optimizer_steps: int) -> int:
        """The length of the linear schedule. The reference (fine_tune_books.py) builds it for
        len(loader) × epochs micro-batches but calls `lr_scheduler.step()` only with
        `optimizer.step()`, every `grad_accum` micro-batches: the rate falls from lr to
        lr·(1 − 1/grad_accum), half of it with the default accumulation of 2, never to 0."""
        return optimizer_steps * self.grad_accum

    def before_optimizer_step(self, model: Any) -> None:
        """Clean SSU: only salient coordinates of the accumulated gradient are updated (g⊙m)."""
        if self.saliency and not self.faithful:
            self._mask(model)

    def _random_labels(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Each forget prompt of the batch paired with the same K answers drawn from this request."""
        subject, records, answers = self._state["subject"], self._state["records"], self._state["answers"]
        k = min(self.random_pairs, len(answers))
        # The global RNG, which the loop seeds per micro-batch from its place in the global batch:
        # the same draw on one process or several (a generator of our own would advance only
        # with the micro-batches this process runs).
        drawn = torch.randperm(len(answers))[:k].tolist()
        rows = []
        for i in indices:
            for j in drawn:
                enc = subject.encode_record(records[i], answers[j], where=f"random label {i}/{j}")
                if self.faithful:  # quirk: answer start = len(BatchEncoding) = 2, so the prompt is in the loss
                    enc = Encoded(enc.input_ids, [IGNORE, IGNORE] + enc.input_ids[2:])
                rows.append(enc)
        return {k2: v.to(device) for k2, v in collate(rows, subject.tokenizer.pad_token_id).items()}

    def _mask(self, model: Any) -> None:
        """Keep gradient entries with |g| ≥ mean(|g|) + k·std(|g|), a threshold over all of them."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
        if not named:
            return
        magnitudes = torch.cat([p.grad.detach().abs().flatten().float() for _, p in named])
        gamma = magnitudes.mean() + self.num_std * magnitudes.std()
        for name, p in named:
            if any(t in name for t in self.target_modules):
                p.grad.mul_((p.grad.abs() >= gamma).to(p.grad.dtype))
            else:
                p.grad.zero_()


# -- task-vector negation ----------------------------------------------------------------------
@register_method("task_vector")
class TaskVector(LossMethod):
    """Fine-tune a copy on the request, τ = θ_ft − θ, return θ − λ·τ (MUSE's `tv`)."""

    family: ClassVar[str] = "arithmetic"
    description: ClassVar[str] = "fine-tune on the request, subtract λ·τ"

    scale: float = Field(1.0, gt=0, description="λ (MUSE used 5.0)")

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, dict[str, float]]:
        return FineTune().loss(model, forget, retain)

    def unlearn(self, subject: Subject, request: ForgetRequest, context: UnlearnContext) -> Subject:
        request, _ = self.targets(subject, request, context.retain)  # as given, or in its own words
        vector, context.stats = fine_tune_vector(subject, request, self.train_config(), context.lora, f"task vector on {request.id}")
        subtract(subject.model, vector, self.scale)
        return subject


# -- NegMerge ----------------------------------------------------------------------------------
def _default_variants() -> list[dict[str, Any]]:
    return [{"lr": 1e-5}, {"lr": 2e-5}, {"lr": 5e-5}]


@register_method("negmerge")
class NegMerge(LossMethod):
    """Task vectors from several fine-tuning settings, merged where all signs agree (NegMerge,
    naver-ai/negmerge; docs/sequential.md, NegMerge)."""

    family: ClassVar[str] = "arithmetic"
    description: ClassVar[str] = "sign-consensus merge of several task vectors, subtracted"

    variants: list[dict[str, Any]] = Field(default_factory=_default_variants, min_length=2, description="train-setting overrides, one per task vector")
    scale: float = Field(1.0, gt=0)
    scale_grid: list[float] = Field(default_factory=list, description="choose λ here: lowest forget prob with retain prob ≥ keep × before")
    keep: float = Field(0.95, gt=0, le=1)

    @field_validator("variants")
    @classmethod
    def _known_settings(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for variant in value:
            for key in variant:
                if key not in TrainConfig.model_fields:
                    raise ValueError(f"'{key}' is not a training setting (valid: {', '.join(TrainConfig.model_fields)})")
        return value

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, dict[str, float]]:
        return FineTune().loss(model, forget, retain)

    def unlearn(self, subject: Subject, request: ForgetRequest, context: UnlearnContext) -> Subject:
        request, _ = self.targets(subject, request, context.retain)  # as given, or in its own words
        base = self.train_config().model_dump()
        total: Vector = {}
        signs: Vector = {}
        stats = TrainStats()
        for number, variant in enumerate(self.variants, start=1):
            config = TrainConfig(**{**base, **variant})
            vector, s = fine_tune_vector(subject, request, config, context.lora, f"negmerge {number}/{len(self.variants)} on {request.id}")
            stats.steps, stats.tokens, stats.seconds = stats.steps + s.steps, stats.tokens + s.tokens, stats.seconds + s.seconds
            for name, tau in vector.items():  # running sums keep memory at two vectors, not K
                if name in total:
                    total[name].add_(tau)
                    signs[name].add_(torch.sign(tau))
                else:
                    total[name], signs[name] = tau.clone(), torch.sign(tau)
            del vector
        count = len(self.variants)
        # An exact zero has sign 0, so it breaks consensus by itself, as in the reference.
        merged = {n: torch.where(signs[n].abs() == count, total[n] / count, torch.zeros_like(total[n])) for n in total}
        context.stats = stats
        scale = self._choose_scale(subject, request, context, merged) if self.scale_grid else self.scale
        subtract(subject.model, merged, scale)
        context.extras["negmerge_scale"] = scale
        return subject

    def _choose_scale(self, subject: Subject, request: ForgetRequest, context: UnlearnContext, merged: Vector) -> float:
        if not context.retain:
            raise UnlearnkitError("method 'negmerge': scale_grid needs a retain set to check utility against")
        control = context.retain[:64]

        def mean_prob(records: list[Any]) -> float:
            return float(subject.score_pairs([record_pair(r) for r in records]).prob.mean())

        before = snapshot(subject.model)
        floor = self.keep * mean_prob(control)
        best: tuple[float, float] | None = None
        for scale in self.scale_grid:
            subtract(subject.model, merged, scale)
            forget, kept = mean_prob(request.records), mean_prob(control)
            if kept >= floor and (best is None or forget < best[1]):
                best = (scale, forget)
            with torch.no_grad():
                for name, p in subject.model.named_parameters():
                    p.copy_(before[name])
        return best[0] if best else min(self.scale_grid)
