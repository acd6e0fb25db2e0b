"""The shared loss pieces of every training-based method, each once, as a short named function.

Conventions (docs/methods.md, "The methods" and "Deviations from the reference code"):

- `logits` are `[B, T, V]` model outputs and `labels` `[B, T]` with -100 on prompt and padding;
  `shift` aligns them (position t predicts label t+1), so every function here works on answer
  tokens only unless it says otherwise.
- "Sequence" quantities (NPO, SimNPO, DPO) are **sums over answer tokens**, never the token mean
  over the batch that HF's `outputs.loss` returns (docs/methods.md, Deviations 1).
- KL and Jensen–Shannon are computed from log-softmax on both sides (docs/methods.md,
  Deviations 2).
- Every loss returns a scalar to *minimise*.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from unlearnkit.training import model_logits

IGNORE = -100


# -- plumbing -----------------------------------------------------------------------------------
def forward_logits(model: Any, part: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of a padded part `{"input_ids", "attention_mask", "labels"}` at every position, in
    float32 for stable losses (the training loop's precision and prefix sharing:
    `training.model_logits`)."""
    return model_logits(model, part)


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits[:, :-1], labels[:, 1:], mask of answer tokens): position t predicts token t+1."""
    labels = labels[:, 1:]
    return logits[:, :-1], labels, labels != IGNORE


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the positions where `mask` is true (0 when there are none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def answer_positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits `[N, V]`, labels `[N]`, mask `[B, T-1]`) at the N answer positions only.

    Vocabulary-sized work (softmax, entropy, distillation targets) is then done for answer tokens
    only, not for prompt and padding positions that are masked out anyway.
    """
    logits, labels, mask = shift(logits, labels)
    return logits[mask], labels[mask], mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_t | x, y_<t) per position `[B, T-1]` (0 off the answer) and the answer mask."""
    z, y, mask = answer_positions(logits, labels)
    # z_y − logsumexp(z): the same as gathering from log_softmax without a second [N, V] tensor.
    picked = z.gather(-1, y.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, -1)
    return torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask, picked), mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(y|x) = Σ_t log p(y_t | x, y_<t) over answer tokens, one value per sequence `[B]`."""
    lp, _ = token_logprobs(logits, labels)
    return lp.sum(-1)


def answer_lengths(labels: torch.Tensor) -> torch.Tensor:
    """|y|: the number of answer tokens per sequence `[B]` (at least 1, to divide by)."""
    return (labels[:, 1:] != IGNORE).sum(-1).clamp(min=1)


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL_mean over the batch: −mean of log p(y_t) over every answer token (HF's `outputs.loss`)."""
    lp, mask = token_logprobs(logits, labels)
    return -lp.sum() / mask.sum().clamp(min=1)


# -- gradient ascent family ---------------------------------------------------------------------
def ascent(nll: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: L = −NLL (minimising it raises the NLL of the forget data)."""
    return -nll


def weighted_ascent(logits: torch.Tensor, labels: torch.Tensor, weights: str = "wga", beta: float = 1.0, beta2: float = 1.0) -> torch.Tensor:
    """Token-weighted ascent: L = mean_t w_t · log p(y_t), the weights detached.

    `wga` (WGA, Wang et al. 2025): w_t = p_t^β.  `satimp` (SatImp, Yang et al. 2025):
    w_t = p_t^β · (1 − p_t)^β2 (`beta` is SatImp's β1). Tokens the model still predicts well
    get the weight, so the loss fades as they are forgotten instead of diverging like GA.
    """
    z, y, _ = answer_positions(logits, labels)
    lp = z.gather(-1, y.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, -1)
    p = lp.detach().exp()
    w = p**beta if weights == "wga" else p**beta * (1 - p) ** beta2
    return (w * lp).sum() / max(1, lp.numel())


def npo(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: L = −(2/β)·mean log σ(−β·[log π_θ(y|x) − log π_ref(y|x)]), log π summed over tokens."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def ceiling_hinge(logp: torch.Tensor, lengths: torch.Tensor, ceiling: float) -> torch.Tensor:
    """mean over sequences of max(0, log π(y|x)/|y| − c): pushes a sequence's mean token
    log-prob down only while it is above the ceiling c, and leaves it alone below."""
    return F.relu(logp / lengths - ceiling).mean()


def floor_hinge(logp: torch.Tensor, lengths: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """mean over sequences of max(0, (log π_ref(y|x) − log π(y|x))/|y|): pulls a sequence back up
    only while its mean token log-prob is below where the reference had it, never above."""
    return F.relu((floor - logp) / lengths).mean()


def simnpo(logp: torch.Tensor, lengths: torch.Tensor, beta: float, delta: float = 0.0) -> torch.Tensor:
    """SimNPO: L = −(2/β)·mean log σ(β·[NLL_sum(y|x)/|y| − δ]) (reference-free, length-normalised).

    The margin δ sits inside the β-scaling, as in both reference code bases (δ = γ_paper/β).
    """
    return -(2.0 / beta) * F.logsigmoid(beta * (-logp / lengths - delta)).mean()


def dpo(chosen: torch.Tensor, chosen_ref: torch.Tensor, rejected: torch.Tensor, rejected_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO: L = −(2/β)·mean log σ(β·[(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))]).

    The 2/β scale follows open-unlearning (it makes NPO the DPO with no preferred answer).
    """
    return -(2.0 / beta) * F.logsigmoid(beta * ((chosen - chosen_ref) - (rejected - rejected_ref))).mean()


def answer_preservation(logp_true: torch.Tensor, logp_idk: torch.Tensor, beta: float) -> torch.Tensor:
    """AP (closer-look): L = −(1/β)·mean log σ(β·[NLL_sum(y_idk|x) − NLL_sum(y|x)]).

    Prefers the true retain answer over "I don't know"; the factor is 1/β, not 2/β (closer-look
    `trainer/losses.py`).
    """
    return -(1.0 / beta) * F.logsigmoid(beta * (logp_true - logp_idk)).mean()


# -- distribution matching ----------------------------------------------------------------------
def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p_θ) = Σ_v p_ref(v)·(log p_ref(v) − log p_θ(v)), mean over positions in `mask`."""
    log_p = torch.log_softmax(logits, -1)
    log_ref = torch.log_softmax(ref_logits, -1)
    kl = (log_ref.exp() * (log_ref - log_p)).sum(-1)
    return masked_mean(kl, mask)


def js_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """JSD(p, q) = ½KL(p‖m) + ½KL(q‖m), m = ½(p + q), per position (last axis is the vocabulary).

    Bounded by log 2. Computed in log space; log-probs are floored at −1e4 so that an exact
    zero probability contributes 0·finite = 0 rather than 0·(−∞) = NaN.
    """
    log_p, log_q = log_p.clamp(min=-1e4), log_q.clamp(min=-1e4)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return 0.5 * (kl_pm + kl_qm)


def jensun_forget(logits: torch.Tensor, labels: torch.Tensor, target_ids: list[int], eps: float = 1e-9) -> torch.Tensor:
    """JensUn forget loss: mean over answer tokens of JSD(p_θ, t).

    t is a one-hot (clamped at `eps`) on the target sequence (e.g. the tokens of "No idea"),
    cycling through it along the answer: the k-th answer token's target is target_ids[k mod n].
    """
    z, _, mask = answer_positions(logits, labels)
    k = (mask.cumsum(-1) - 1) % len(target_ids)  # position within the answer
    targets = torch.tensor(target_ids, device=logits.device)[k[mask]]
    t = F.one_hot(targets, z.shape[-1]).to(z.dtype).clamp(min=eps)
    log_t = torch.log(t / t.sum(-1, keepdim=True))
    return js_divergence(torch.log_softmax(z, -1), log_t).mean() if len(z) else z.sum()


def jensun_retain(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """JensUn retain loss: mean over positions in `mask` of JSD(p_ref, p_θ)."""
    return masked_mean(js_divergence(torch.log_softmax(ref_logits, -1), torch.log_softmax(logits, -1)), mask)


def max_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ME (closer-look): mean over `mask` of KL(U ‖ p_θ) = Σ_v (1/V)(log(1/V) − log p_θ(v)).

    Zero exactly when the next-token distribution is uniform.
    """
    log_p = torch.log_softmax(logits, -1)
    kl = -math.log(logits.shape[-1]) - log_p.mean(-1)
    return kl.mean() if mask is None else masked_mean(kl, mask)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy H(p_θ) = −Σ_v p log p over positions in `mask` (a diagnostic)."""
    log_p = torch.log_softmax(logits, -1)
    return masked_mean(-(log_p.exp() * log_p).sum(-1), mask)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """CE(q, p_θ) = −Σ_v q(v) log p_θ(v), mean over positions in `mask` (default: all)."""
    ce = -(target_probs * torch.log_softmax(logits, -1)).sum(-1)
    return ce.mean() if mask is None else masked_mean(ce, mask)


def undial(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """UNDIAL: CE(softmax(z_teacher − β·e_y), p_θ), mean over answer tokens.

    The teacher's logit of the true next token is lowered by β; the student distils the rest.
    Only answer tokens count (the open-unlearning port's −100 indexing bug is not reproduced;
    docs/methods.md, Deviations 3).
    """
    z, y, mask = answer_positions(logits, labels)
    teacher = teacher_logits[:, :-1][mask] - beta * F.one_hot(y, z.shape[-1]).to(z.dtype)
    return soft_cross_entropy(z, torch.softmax(teacher, -1).detach()) if len(z) else z.sum()


def ce_unlearning(logits: torch.Tensor, labels: torch.Tensor, skip_first: int = 1) -> torch.Tensor:
    """CE-U: CE(softmax(z with z_y = −∞), p_θ) over answer tokens, the target detached.

    The target is the model's own distribution with the true token removed; the first
    `skip_first` answer tokens are left out (the paper's footnote trick, as in open-unlearning).
    """
    logits, labels, mask = shift(logits, labels)
    mask = mask & (mask.cumsum(-1) > skip_first)
    z, y = logits[mask], labels[mask]
    target = z.detach().scatter(-1, y.unsqueeze(-1), float("-inf"))
    return soft_cross_entropy(z, torch.softmax(target, -1)) if len(z) else z.sum()


def activation_mse(acts: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's distance: mean over tokens in `mask` and hidden dimensions of (h − target)²."""
    return masked_mean((acts - target).pow(2).mean(-1), mask)
