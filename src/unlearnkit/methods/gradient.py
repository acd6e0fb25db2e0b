"""Gradient-based unlearning: every method is `γ·L_forget + α·L_retain` on the shared loop.

`Unlearning` holds what they all share once: the two weights, the retain term (NLL, KL or
Jensen–Shannon to the model before the request), the frozen reference and the cache of reference
sequence log-probs. A method defines only `forget_loss`. Formulas: `losses.py` and
`docs/methods.md`; where each default comes from: docs/methods.md, "The methods".

Reference models. `reference_logprobs` computes the frozen model's sequence log-probs on the
fixed forget examples once, in `prepare`, and looks them up by `batch["index"]`: objectives that
only need those (NPO, IdkPO) never run a second model. Objectives that need whole next-token
distributions on batches that change every step (KL or JSD on random retain batches, UNDIAL's
teacher) keep a `Frozen` model: a deep copy (eval, no grad; twice the weights in memory) in
full-parameter mode, the same network with its adapter switched off in LoRA mode (no copy).
Under FSDP the teacher shares the weights until the loop shards it like the trained model
(`unlearnkit.sharding`): a shard of a second copy per process, never a full one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from unlearnkit import distributed, sharding
from unlearnkit.data.schema import Record
from unlearnkit.errors import UnlearnkitError
from unlearnkit.training import Batch, Example, make_batch, select_rows, to_device
from unlearnkit.methods import losses as L
from unlearnkit.methods.anchor import ANCHOR_TOPICS, START_LOGPROB
from unlearnkit.methods.base import LossMethod, Need, UnlearnContext, register_method
from unlearnkit.models.subject import Subject

Logs = dict[str, float]


class Frozen:
    """The model as it was before the request, for full next-token distributions."""

    def __init__(self, model: Any) -> None:
        self.adapter = hasattr(model, "disable_adapter")  # peft: switch the adapter off instead of copying
        if self.adapter:
            self.model = model
        elif distributed.sharded():  # the loop shards it before training (`Unlearning.frozen_networks`)
            self.model = sharding.plain_twin(model).eval()
        else:
            self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @contextmanager
    def network(self) -> Iterator[Any]:
        """The frozen network, under no_grad (in LoRA mode: with the adapter off meanwhile)."""
        # In LoRA mode the network is the one in training: switch it to eval mode meanwhile too
        # (no dropout in the reference), and back.
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), (self.model.disable_adapter() if self.adapter else nullcontext()):
                yield self.model
        finally:
            self.model.train(was_training)

    def logits(self, part: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.network() as model:
            return L.forward_logits(model, part)


@torch.no_grad()
def reference_logprobs(subject: Subject, examples: list[Example], part: str, size: int = 8) -> torch.Tensor:
    """log π_ref(y|x) (summed over answer tokens) of `part` of every example, in example order.
    Computed once: under several processes each computes its share of the chunks and all of
    them receive the whole, in order (`distributed.deal`)."""
    model, pad, device = subject.model, subject.tokenizer.pad_token_id, subject.device
    was_training = model.training
    model.eval()

    def chunk(start: int) -> list[torch.Tensor]:
        batch = to_device(make_batch(examples, list(range(start, min(start + size, len(examples)))), pad), device)
        return [L.sequence_logprob(L.forward_logits(model, batch[part]), batch[part]["labels"]).cpu()]

    out = distributed.deal(list(range(0, len(examples), size)), chunk)
    model.train(was_training)
    return torch.cat(out)


RetainLoss = Literal["nll", "kl", "jsd", "floor"]  # the retain terms of `Unlearning.retain_term`


class Unlearning(LossMethod):
    """L = γ·forget_loss + α·retain_loss. α = 0 means no retain set is needed."""

    gamma: float = Field(1.0, ge=0, description="weight of the forget term")
    alpha: float = Field(0.0, ge=0, description="weight of the retain term (0: no retain set)")
    retain_loss: RetainLoss = Field(
        "nll", description="retain term: NLL, KL(p_ref‖p), JSD(p_ref, p), or floor: NLL only where an answer fell below the model before the request (never trained above it)",
    )

    anchor_weight: float = Field(
        0.0, ge=0, description="weight of the anchor term: passages the run's start model wrote, each pulled back up to the start's log-prob (floor), never above (0: off; needs a sequential run)",
    )
    anchor_passages: int = Field(len(ANCHOR_TOPICS), ge=1, le=len(ANCHOR_TOPICS), description="how many anchor passages")

    uses_frozen: ClassVar[bool] = False  # the forget term itself needs a frozen model (UNDIAL)

    @property
    def needs_retain(self) -> bool:
        return self.alpha > 0 or self.anchor_weight > 0

    @property
    def anchor_wanted(self) -> int:
        return self.anchor_passages if self.anchor_weight > 0 else 0

    def retain_records(self, kept: list[Record], context: UnlearnContext) -> list[Record]:
        """The retain set (α > 0), then the anchor passages (`anchor_weight` > 0), whose floors are
        the start model's log-probs (`methods/anchor.py`); `loss` tells them apart by index."""
        kept = kept if self.alpha > 0 else []
        if self.alpha > 0 and not kept:
            raise UnlearnkitError(f"method '{self.registry_name}': needs a retain set (--retain FILE)")
        if not self.anchor_wanted:
            return kept
        anchor = context.anchor[: self.anchor_passages]
        if not anchor:
            raise UnlearnkitError(f"method '{self.registry_name}': anchor_weight needs the run's anchor passages, which a sequential run writes (unlearnkit run)")
        floors = [float("nan")] * len(kept) + [float(r.meta[START_LOGPROB]) for r in anchor]
        self._cache.update(anchor_from=len(kept), ref_anchor=torch.tensor(floors))
        return [*kept, *anchor]

    def prepare(self, subject: Subject, forget: list[Example], retain: list[Example]) -> None:
        if self.uses_frozen or (self.needs_retain and self.retain_loss in ("kl", "jsd")):
            self._cache["frozen"] = Frozen(subject.model)
        if self.needs_retain and self.retain_loss == "floor":
            self._cache["ref_retain"] = reference_logprobs(subject, retain, "x")

    def frozen_networks(self) -> list[Any]:
        """The frozen teachers the training loop shards with the model under FSDP."""
        return [f.model for f in self._cache.values() if isinstance(f, Frozen) and not f.adapter]

    def reference(self, name: str, batch: Batch) -> torch.Tensor:
        """A value cached in `prepare`, for the examples of this batch."""
        return self._cache[name][batch["index"].cpu()].to(batch["x"]["input_ids"].device)

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        raise NotImplementedError

    def retain_term(self, model: Any, retain: Batch) -> torch.Tensor:
        part = retain["x"]
        logits = L.forward_logits(model, part)
        if self.retain_loss == "nll":
            return L.token_nll(logits, part["labels"])
        if self.retain_loss == "floor":
            # On one request of the stream world, NLL training retain answers above where they
            # were moved general text most (docs/sequential.md, "What costs fluency over a
            # stream"); this only restores what a retain answer lost.
            return self.floor_term(logits, retain, "ref_retain")
        # Distribution matching over every real (non-pad) position, prompt included: the whole
        # next-token behaviour on retain inputs should stay (open-unlearning does not mask at
        # all; pad positions carry no meaning, so they are left out here).
        ref = self._cache["frozen"].logits(part)
        mask = part["attention_mask"].bool()
        if self.retain_loss == "kl":
            return L.kl_to_reference(logits, ref, mask)
        return L.jensun_retain(logits, ref, mask)

    def floor_term(self, logits: torch.Tensor, batch: Batch, reference: str) -> torch.Tensor:
        """Mean over rows of max(0, (log π_ref − log π)/|y|), log π_ref the cached `reference`."""
        labels = batch["x"]["labels"]
        return L.floor_hinge(L.sequence_logprob(logits, labels), L.answer_lengths(labels), self.reference(reference, batch))

    def anchor_term(self, model: Any, anchor: Batch) -> torch.Tensor:
        """Mean over the anchor passages of max(0, (log π_start − log π)/|y|)."""
        return self.floor_term(L.forward_logits(model, anchor["x"]), anchor, "ref_anchor")

    def loss(self, model: Any, forget: Batch, retain: Batch | None) -> tuple[torch.Tensor, Logs]:
        forget_loss, logs = self.forget_loss(model, forget)
        total = self.gamma * forget_loss
        logs["forget_loss"] = forget_loss.item()
        if not self.needs_retain or retain is None:
            return total, logs
        # A retain batch draws from the retain set and the anchor passages alike: each part
        # runs on its own rows (no QA padded to a passage's length).
        start = self._cache.get("anchor_from")
        is_anchor = retain["index"] >= start if start is not None else torch.zeros_like(retain["index"], dtype=torch.bool)
        if self.alpha > 0 and not is_anchor.all():
            retain_loss = self.retain_term(model, select_rows(retain, ~is_anchor) if is_anchor.any() else retain)
            total = total + self.alpha * retain_loss
            logs["retain_loss"] = retain_loss.item()
        if self.anchor_weight > 0 and is_anchor.any():
            anchor_loss = self.anchor_term(model, select_rows(retain, is_anchor))
            total = total + self.anchor_weight * anchor_loss
            logs["anchor_loss"] = anchor_loss.item()
        return total, logs


def _ascent(model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
    nll = L.token_nll(L.forward_logits(model, forget["x"]), forget["x"]["labels"])
    return L.ascent(nll), {"forget_nll": nll.item()}


@register_method("ga")
class GradientAscent(Unlearning):
    """Gradient ascent: L = −NLL_mean(D_f). Unbounded: keep steps few or stop early.

    Source: open-unlearning `src/trainer/unlearn/grad_ascent.py`."""

    needs: ClassVar[tuple[Need, ...]] = ()
    description: ClassVar[str] = "gradient ascent on the forget set (unbounded; few steps)"

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        return _ascent(model, forget)


@register_method("gd")
class GradientDifference(GradientAscent):
    """Gradient difference: L = −γ·NLL(D_f) + α·NLL(D_r); `retain_loss=kl` for the KL variant.

    Source: open-unlearning `src/trainer/unlearn/grad_diff.py`."""

    needs: ClassVar[tuple[Need, ...]] = ("retain",)
    description: ClassVar[str] = "gradient ascent on forget + NLL (or KL) on retain"
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")


@register_method("ga_kl")
class GradientAscentKL(GradientDifference):
    """GA+KL: L = −NLL(D_f) + α·KL(p_ref ‖ p_θ) on retain inputs; keeps a frozen model.

    Source: open-unlearning `src/trainer/unlearn/grad_diff.py` with `retain_loss_type: KL`."""

    needs: ClassVar[tuple[Need, ...]] = ("retain", "reference")
    description: ClassVar[str] = "gradient ascent on forget + KL to the frozen model on retain"
    retain_loss: Literal["nll", "kl", "jsd"] = Field("kl", description="retain term: NLL, KL(p_ref‖p) or JSD(p_ref, p)")


@register_method("wga")
class WeightedGradientAscent(Unlearning):
    """WGA (Wang et al. 2025; open-unlearning `wga.py`): L = γ·mean_t p_t^β·log p_t + α·NLL(D_r).

    Tokens are weighted by their own (detached) probability, so the push fades as they are
    forgotten. No reference model (open-unlearning builds one, used only for the KL retain).
    """

    needs: ClassVar[tuple[Need, ...]] = ("retain",)
    description: ClassVar[str] = "gradient ascent weighted by token probability p^β, + NLL on retain"
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")
    beta: float = Field(1.0, ge=0, description="weight exponent: w_t = p_t^β")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        return L.weighted_ascent(L.forward_logits(model, forget["x"]), forget["x"]["labels"], "wga", self.beta), {}


@register_method("satimp")
class SaturationImportance(Unlearning):
    """SatImp (Yang et al. 2025; open-unlearning `satimp.py`): weights p_t^β1·(1 − p_t)^β2.

    Defaults from `configs/trainer/SatImp.yaml` (γ = 0.1, α = 1), which differ from the class
    defaults in `satimp.py` (γ = 1, α = 0.1); the config is what runs.
    """

    needs: ClassVar[tuple[Need, ...]] = ("retain",)
    description: ClassVar[str] = "ascent weighted by saturation p^β1 and importance (1-p)^β2, + NLL on retain"
    gamma: float = Field(0.1, ge=0, description="weight of the forget term")
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")
    beta1: float = Field(5.0, ge=0, description="saturation exponent on p_t")
    beta2: float = Field(1.0, ge=0, description="importance exponent on 1 - p_t")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        return L.weighted_ascent(L.forward_logits(model, forget["x"]), forget["x"]["labels"], "satimp", self.beta1, self.beta2), {}


@register_method("ce_u")
class CrossEntropyUnlearning(Unlearning):
    """CE-U (Yang 2025; open-unlearning `ceu.py`): CE towards the model's own distribution with the
    true token's logit at −∞ (detached). Forget-only; the first answer token is skipped."""

    needs: ClassVar[tuple[Need, ...]] = ()
    description: ClassVar[str] = "cross-entropy to the model's own distribution without the true token"
    ignore_first_n: int = Field(1, ge=0, description="answer tokens at the start left out of the loss")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        return L.ce_unlearning(L.forward_logits(model, forget["x"]), forget["x"]["labels"], self.ignore_first_n), {}


@register_method("me_gd")
class MaxEntropyGD(Unlearning):
    """ME+GD: L = 0.1·mean KL(U ‖ p_θ) on forget answers + 1.0·NLL(D_r).

    Source: sail-sg/closer-look-LLM-unlearning, `trainer/losses.py` and `config/tofu.yaml`.

    The entropy term covers answer tokens only: the reference's `mask=false` also includes the
    question and the padding positions, a side effect of its padding, not the method
    (docs/methods.md, "Deviations from the reference code" 4).
    """

    needs: ClassVar[tuple[Need, ...]] = ("retain",)
    description: ClassVar[str] = "push forget next-token distributions to uniform + NLL on retain"
    gamma: float = Field(0.1, ge=0, description="weight of the forget term")
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        logits, _, _ = L.answer_positions(L.forward_logits(model, forget["x"]), forget["x"]["labels"])
        return L.max_entropy(logits), {}


@register_method("undial")
class Undial(Unlearning):
    """UNDIAL: self-distillation from the frozen model with the true token's logit lowered by β,
    over answer tokens (open-unlearning `src/trainer/utils.py::compute_undial_loss`). Keeps a
    frozen teacher (full distributions on every forget position are too large to cache).
    Defaults: β 10, α 0 (no retain set), lr 1e-4, 10 epochs."""

    needs: ClassVar[tuple[Need, ...]] = ("reference",)
    description: ClassVar[str] = "self-distil from the frozen model with the true token's logit lowered by β"
    uses_frozen: ClassVar[bool] = True
    lr: float = Field(1e-4, gt=0)
    epochs: float = Field(10, gt=0)
    beta: float = Field(10.0, ge=0, description="how much the true token's teacher logit is lowered")

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        part = forget["x"]
        return L.undial(L.forward_logits(model, part), self._cache["frozen"].logits(part), part["labels"], self.beta), {}


@register_method("jensun")
class JensUn(Unlearning):
    """JensUn (nmndeep/JensUn-Unlearning, `src/trainer/unlearn/jensun.py`): JSD(p_θ, one-hot on
    a target answer) on forget answers + JSD(p_ref, p_θ) on retain. Both bounded by log 2.
    Keeps a frozen model for the retain term."""

    needs: ClassVar[tuple[Need, ...]] = ("retain", "reference")
    description: ClassVar[str] = "bounded Jensen-Shannon pull of forget answers to 'No idea' + JSD retain"
    lr: float = Field(8e-6, gt=0)
    epochs: float = Field(10, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    alpha: float = Field(1.0, ge=0, description="weight of the retain term (0: no retain set)")
    retain_loss: Literal["nll", "kl", "jsd"] = Field("jsd", description="retain term: NLL, KL(p_ref‖p) or JSD(p_ref, p)")
    target: str = Field("No idea", min_length=1, description="answer the forget answers are pulled to")

    def prepare(self, subject: Subject, forget: list[Example], retain: list[Example]) -> None:
        super().prepare(subject, forget, retain)
        # Tokenised as an answer is (after the format's answer prefix), so the ids match.
        ids = subject.tokenizer(subject.fmt.answer_prefix + self.target.strip(), add_special_tokens=False)["input_ids"]
        self._cache["target_ids"] = list(ids) or [subject.tokenizer.eos_token_id]

    def forget_loss(self, model: Any, forget: Batch) -> tuple[torch.Tensor, Logs]:
        part = forget["x"]
        return L.jensun_forget(L.forward_logits(model, part), part["labels"], self._cache["target_ids"]), {}
