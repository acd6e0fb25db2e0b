"""Preference-style unlearning: NPO, SimNPO, IdkPO (DPO with IDK answers), IdkNLL, IDK+AP.

All are `γ·L_forget + α·L_retain` (`gradient.Unlearning`). Sequence log-probs are sums over
answer tokens (docs/methods.md, "Deviations from the reference code" 1). The reference model's
log-probs on the fixed forget examples are computed once in `prepare` and looked up by example
index, so no second model runs per step.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
from pydantic import Field

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.training import Batch, Example
from unlearnkit.methods import losses as L
from unlearnkit.methods.base import Need, UnlearnContext, register_method
from unlearnkit.methods.gradient import Logs, RetainLoss, Unlearning, reference_logprobs
from unlearnkit.methods.idk import encode_idk
from unlearnkit.models.subject import Subject


def _logprob(model: Any, part: dict[str, torch.Tensor]) -> torch.Tensor:
    return L.sequence_logprob(L.forward_logits(model, part), part["labels"])


@register_method("npo")
class NPO(Unlearning):
    """NPO: L = −(2/β)·E log σ(−β·[log π_θ(y|x) − log π_ref(y|x)]), no retain term.

    Source: Zhang et al., 2024 (Negative Preference Optimization); open-unlearning
    `src/trainer/unlearn/npo.py`.

    Caches log π_ref(y|x) of every forget example in `prepare` (the reference is the model
    before the request); training runs one model only.
    """

    family: ClassVar[str] = "preference"
    needs: ClassVar[tuple[Need, ...]] = ("reference",)
    description: ClassVar[str] = "negative preference optimisation on forget (cached reference log-probs)"
    beta: float = Field(0.1, gt=0, description="inverse temperature β")

    def prepare(self, subject: Subject, forget: list[Example], retain: list[Example]) -> None:
        super().prepare(subject, forget, retain)
        self._cache["ref_x"] = reference_logprobs(subject, forget, "x")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        logp = _logprob(model, forget["x"])
        return L.npo(logp, self.reference("ref_x", forget), self.beta), {"forget_logp": logp.mean().item()}


@register_method("npo_gd")
class NPORetain(NPO):
    """NPO + α·NLL(D_r) (open-unlearning's NPO, "NPO+GD/RT"); `retain_loss=kl` for NPO+KL."""

    needs: ClassVar[tuple[Need, ...]] = ("retain", "reference")
    description: ClassVar[str] = "NPO on forget + NLL (or KL) on retain"
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")


@register_method("npo_kl")
class NPOKL(NPORetain):
    """NPO + α·KL(p_ref ‖ p_θ) on retain inputs (keeps a frozen model for the KL)."""

    description: ClassVar[str] = "NPO on forget + KL to the frozen model on retain"
    retain_loss: RetainLoss = Field("kl", description="retain term: NLL, KL(p_ref‖p), JSD(p_ref, p) or floor (see Unlearning)")


@register_method("npo_replay")
class NPOReplay(NPORetain):
    """NPO + α·NLL(D_r) on the request, plus earlier requests replayed against a ceiling, for
    long request streams (docs/sequential.md, "A recipe for streams"):

        L = γ·[NPO(the request's rows above c) + ρ·mean_replayed max(0, log π(y|x)/|y| − c)] + α·NLL(D_r)

    Each step adds `replay` QA records drawn (seeded by the step) from the requests applied
    before it. c = log of the mean length-normalised probability of the control records (a
    world's holdout people, whom no model saw) under the model before the request: a replayed
    answer that came back above the level of a never-seen person is pushed down to it, one
    already there is left alone, so earlier requests neither relapse nor get forgotten further
    than a retrained model would have them. With `stop_at_control` the request's own rows are
    held to the same level: NPO acts on a row only while its length-normalised log-prob is above
    c, because NPO alone pushed each request of a 50-request stream far below a retrained
    model (0.02 against 0.28, docs/sequential.md) and the extra distance cost fluency. The
    replay set has a fixed size, so a step costs the same however long the stream. Without a
    control set it is `npo_gd`.
    """

    description: ClassVar[str] = "NPO + NLL on retain, earlier requests replayed down to a never-seen level"
    # The demo's npo_gd setting (`demo.DEFAULT_METHOD`): the rate that stays within the damage
    # budget on a prepared target (bench/demo_recipe.py).
    lr: float = Field(1.75e-5, gt=0)
    epochs: float = Field(4, gt=0)
    warmup_ratio: float = Field(0.2, ge=0, lt=1)
    alpha: float = Field(2.0, ge=0, description="weight of the retain term (0: no retain set)")
    replay: int = Field(8, ge=0, description="earlier QA records replayed per request (a seeded sample)")
    replay_weight: float = Field(1.0, ge=0, description="ρ, the weight of the replay term")
    stop_at_control: bool = Field(True, description="NPO leaves a row of the request alone once it is at the never-seen level c")

    def forget_records(self, request: ForgetRequest, context: UnlearnContext) -> list[Record]:
        earlier = [r for r in context.earlier if r.kind == "qa"]
        control = [r for r in context.control if r.kind == "qa"]
        drawn = random.Random(context.seed).sample(earlier, min(self.replay, len(earlier))) if control and self.replay_weight > 0 else []
        self._cache.update(current=len(request.records), control=control)
        return [*request.records, *drawn]

    def prepare(self, subject: Subject, forget: list[Example], retain: list[Example]) -> None:
        super().prepare(subject, forget, retain)
        if self._cache["control"] and (self.stop_at_control or len(forget) > self._cache["current"]):  # c: the never-seen level, under the model before the request
            control = [{"x": subject.encode_record(r, where=f"control record {r.id or i}")} for i, r in enumerate(self._cache["control"])]
            per_token = reference_logprobs(subject, control, "x") / torch.tensor([max(1, e["x"].num_target_tokens) for e in control])
            self._cache["ceiling"] = float(torch.log(per_token.exp().mean()))

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        part = forget["x"]
        logp = _logprob(model, part)
        replayed = forget["index"].to(logp.device) >= self._cache["current"]
        # Zero, but on the graph: once every row is at the never-seen level and nothing is
        # replayed, a step without a retain term (α 0) still has something to backpropagate.
        loss = 0.0 * logp.sum()
        logs: Logs = {}
        lengths = L.answer_lengths(part["labels"])
        own = ~replayed
        if own.any():
            logs["forget_logp"] = logp[own].mean().item()
        if self.stop_at_control and "ceiling" in self._cache:
            own = own & (logp.detach() / lengths > self._cache["ceiling"])
            logs["forget_above_control"] = own.sum().item()
        if own.any():
            loss = loss + L.npo(logp[own], self.reference("ref_x", forget)[own], self.beta) * own.sum() / (~replayed).sum()
        if replayed.any():
            hinge = L.ceiling_hinge(logp[replayed], lengths[replayed], self._cache["ceiling"])
            loss = loss + self.replay_weight * hinge
            logs["replay_hinge"] = hinge.item()
        return loss, logs


@register_method("simnpo")
class SimNPO(Unlearning):
    """SimNPO: L = −(2/β)·E log σ(β·[NLL_sum(y|x)/|y| − δ]) + α·NLL(D_r). No reference.

    Source: OPTML-Group/Unlearn-Simple; open-unlearning `src/trainer/unlearn/simnpo.py`.

    Defaults: open-unlearning's TOFU config (β 4.5, δ 0, γ 0.125, α 1).
    """

    family: ClassVar[str] = "preference"
    needs: ClassVar[tuple[Need, ...]] = ("retain",)
    description: ClassVar[str] = "reference-free, length-normalised NPO + NLL on retain"
    beta: float = Field(4.5, gt=0, description="inverse temperature β")
    delta: float = Field(0.0, description="margin δ (inside the β-scaling)")
    gamma: float = Field(0.125, ge=0, description="weight of the forget term")
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        part = forget["x"]
        logp = _logprob(model, part)
        return L.simnpo(logp, L.answer_lengths(part["labels"]), self.beta, self.delta), {"forget_logp": logp.mean().item()}


class WithIdk(Unlearning):
    """Forget examples carry an "idk" part: the question answered with an IDK phrase."""

    def forget_example(self, subject: Subject, record: Record, index: int) -> Example:
        return {**super().forget_example(subject, record, index), "idk": encode_idk(subject, record, self.seed, index)}


@register_method("idkpo")
class IdkPO(WithIdk):
    """IdkPO: DPO preferring an IDK answer over the true one, + α·NLL(D_r).

    Source: open-unlearning `src/trainer/unlearn/dpo.py` with TOFU's IDK answers.

    L = −(2/β)·E log σ(β·[(log π_θ(y_idk|x) − log π_ref(y_idk|x)) − (log π_θ(y|x) − log π_ref(y|x))]).
    Caches both reference log-probs in `prepare`. The IDK phrase is drawn once per example
    (seeded), not anew each epoch as TOFU's dataset does, so that the cache holds.
    """

    family: ClassVar[str] = "preference"
    needs: ClassVar[tuple[Need, ...]] = ("retain", "reference", "idk")
    description: ClassVar[str] = "DPO preferring 'I don't know' over the true answer + NLL on retain"
    beta: float = Field(0.1, gt=0, description="inverse temperature β")
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")

    def prepare(self, subject: Subject, forget: list[Example], retain: list[Example]) -> None:
        super().prepare(subject, forget, retain)
        self._cache["ref_x"] = reference_logprobs(subject, forget, "x")
        self._cache["ref_idk"] = reference_logprobs(subject, forget, "idk")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        rejected, chosen = _logprob(model, forget["x"]), _logprob(model, forget["idk"])
        loss = L.dpo(chosen, self.reference("ref_idk", forget), rejected, self.reference("ref_x", forget), self.beta)
        return loss, {"forget_logp": rejected.mean().item(), "idk_logp": chosen.mean().item()}


@register_method("idk_nll")
class IdkNLL(WithIdk):
    """IdkNLL: L = NLL(forget question → IDK phrase) + α·NLL(D_r).

    Source: TOFU's `idk` loss, locuslab/tofu `dataloader.py`."""

    family: ClassVar[str] = "relabel"
    needs: ClassVar[tuple[Need, ...]] = ("retain", "idk")
    description: ClassVar[str] = "fine-tune forget questions to 'I don't know' + NLL on retain"
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        part = forget["idk"]
        return L.token_nll(L.forward_logits(model, part), part["labels"]), {}


@register_method("idk_ap")
class IdkAP(IdkNLL):
    """IDK+AP: L = γ·NLL(forget q → IDK) + α·L_AP on retain, where
    L_AP = −(1/β)·E log σ(β·[NLL_sum(y_idk|x) − NLL_sum(y|x)]) keeps true retain answers
    preferred over IDK. No reference model.

    Source: sail-sg/closer-look-LLM-unlearning, `trainer/losses.py`."""

    needs: ClassVar[tuple[Need, ...]] = ("retain", "idk")
    description: ClassVar[str] = "IDK answers on forget + answer preservation (true over IDK) on retain"
    beta: float = Field(0.1, gt=0, description="inverse temperature β of the AP term")

    def retain_example(self, subject: Subject, record: Record, index: int) -> Example:
        # Offset the index so retain records draw their own phrases, not the forget ones'.
        return {**super().retain_example(subject, record, index), "idk": encode_idk(subject, record, self.seed, 1_000_000 + index)}

    def retain_term(self, model: Any, retain: Batch) -> torch.Tensor:
        return L.answer_preservation(_logprob(model, retain["x"]), _logprob(model, retain["idk"]), self.beta)
