"""Pure scoring formulas: numbers in, numbers out. No model, no data files.

Every function follows the benchmark or attack it comes from (TOFU, MUSE, OpenUnlearning "OU",
Min-K%++, Leak@k), as documented in `docs/metrics.md`, whose section is named in its docstring.
Where a reference implementation has a known bug, the intended formula is implemented and the
difference is listed in `docs/metrics.md` (Deliberate differences).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

# Min-K%++: OU clamps the variance of log p at 1e-6 so a peaked distribution cannot divide by 0.
MIN_VARIANCE = 1e-6


# -- ROUGE (Google's rouge-score; docs/metrics.md, Conventions) -------------------------------
@dataclass(frozen=True)
class RougeL:
    recall: float
    precision: float
    f1: float


@lru_cache(maxsize=2)
def _scorer(stemmer: bool) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmer)


def rouge_l(reference: str, prediction: str, *, stemmer: bool = True) -> RougeL:
    """Sentence-level ROUGE-L of `prediction` against `reference` (the first argument, as in
    `rouge_score.score(target, prediction)`). TOFU stems (True); MUSE-original does not."""
    score = _scorer(stemmer).score(reference, prediction)["rougeL"]
    return RougeL(recall=score.recall, precision=score.precision, f1=score.fmeasure)


# -- truth ratio, forget quality, model utility (docs/metrics.md, TOFU) -----------------------
# OU's epsilon: the truth ratio divides by p̄_correct + 1e-10 and the forget aggregation by
# R + 1e-10; probability with options adds it to its denominator, PrivLeak to the oracle's term.
EPSILON = 1e-10


def truth_ratio_log(correct_mean_nll: float, perturbed_mean_nlls: Sequence[float], *, epsilon: float = EPSILON) -> float:
    """log R, R = exp(-mean_j L̄(pert_j)) / (exp(-L̄(correct)) + epsilon): "wrong / correct".

    Computed in log space (`np.logaddexp`), so a collapsed model whose correct answer is
    hundreds of nats less likely than the wrong ones gets the finite value OU computes with
    floats instead of an overflow. The perturbed answers are combined by the geometric mean of
    their length-normalised probabilities (mean of L̄ first), as OU and TOFU's aggregation do.
    `epsilon=0` is TOFU's original (legacy) form.
    """
    if len(perturbed_mean_nlls) == 0:
        raise ValueError("truth_ratio: no perturbed answers")
    wrong = -float(np.mean(perturbed_mean_nlls))
    correct = -float(correct_mean_nll)
    denominator = float(np.logaddexp(correct, math.log(epsilon))) if epsilon > 0 else correct
    return wrong - denominator


def truth_ratio(correct_mean_nll: float, perturbed_mean_nlls: Sequence[float], *, epsilon: float = EPSILON) -> float:
    """R = exp(`truth_ratio_log`): inf only in the legacy form (`epsilon=0`) past float range."""
    return _exp(truth_ratio_log(correct_mean_nll, perturbed_mean_nlls, epsilon=epsilon))


def _exp(log_value: float) -> float:
    return math.exp(log_value) if log_value < 709.78 else math.inf


def truth_ratio_forget_score(ratios: Sequence[float], *, epsilon: float = EPSILON) -> float:
    """TOFU forget aggregation (OU's `closer_to_1_better`): mean of min(R, 1/(R + epsilon));
    1 = the model cannot tell true from false. An infinite R counts 0, as in numpy."""
    r = np.asarray(ratios, dtype=float)
    with np.errstate(divide="ignore", over="ignore"):
        return float(np.mean(np.minimum(r, 1.0 / (r + epsilon))))


def truth_ratio_retain_score(ratios: Sequence[float]) -> float:
    """TOFU retain / real-author / world-fact aggregation (`true_better`): mean of max(0, 1 - R)."""
    r = np.asarray(ratios, dtype=float)
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def forget_quality(ratios: Sequence[float], oracle_ratios: Sequence[float]) -> float:
    """Two-sided two-sample KS p-value (scipy defaults) of the truth ratios against the oracle's.

    KS is invariant under monotone maps, so R and 1/R give the same p-value.
    """
    from scipy.stats import ks_2samp

    if len(ratios) == 0 or len(oracle_ratios) == 0:
        raise ValueError("forget_quality: both samples need at least one truth ratio")
    return float(ks_2samp(list(ratios), list(oracle_ratios)).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean (scipy.stats.hmean) of the utility components; 0 if any component is 0."""
    from scipy.stats import hmean

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("model_utility: no components")
    if np.any(v < 0):
        raise ValueError(f"model_utility: negative component in {v.tolist()}")
    if np.any(v == 0):
        return 0.0
    return float(hmean(v))


def probability_with_options(correct_prob: float, perturbed_probs: Sequence[float], *, epsilon: float = EPSILON) -> float:
    """p̄_c / (p̄_c + Σ_j p̄_j + epsilon), each length-normalised (docs/metrics.md, TOFU); OU's
    1e-10 keeps 0/0 out (TOFU's original aggregation has none: `epsilon=0`)."""
    return correct_prob / (correct_prob + float(np.sum(perturbed_probs)) + epsilon)


# -- membership inference (docs/metrics.md, Membership inference) ------------------------------
# Every score is loss-like: higher means "less likely a member" (OU's sign convention).
def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=float)


def loss_score(token_logprobs: Any) -> float:
    """LOSS attack: the mean NLL of the scored tokens (OU's `loss` attack)."""
    lp = _as_array(token_logprobs)
    return float(-lp.mean())


def zlib_score(token_logprobs: Any, text: str) -> float:
    """zlib attack: mean NLL divided by the zlib-compressed byte length of the text (OU's `zlib`)."""
    return loss_score(token_logprobs) / len(zlib.compress(text.encode("utf-8")))


def _lowest_k_mean(values: np.ndarray, k: float) -> float:
    # OU floors the subset at one token; MUSE does not and yields NaN on short texts
    # (docs/metrics.md, Deliberate differences).
    m = max(1, int(len(values) * k))
    return float(np.sort(values)[:m].mean())


def min_k_score(token_logprobs: Any, k: float = 0.4) -> float:
    """Min-K% Prob (Shi et al.; OU's `min_k`): minus the mean of the m = max(1, int(n·k)) lowest
    token log-probs."""
    return -_lowest_k_mean(_as_array(token_logprobs), k)


def min_k_plus_plus_score(token_logprobs: Any, token_mu: Any, token_sigma: Any, k: float = 0.4) -> float:
    """Min-K%++ (Zhang et al., zjysteven/mink-plus-plus): z_t = (ℓ_t − μ_t)/σ_t, minus the mean of
    the m lowest z_t.

    σ² is clamped at 1e-6 as in OU; `token_mu`/`token_sigma` come from `score(..., stats=True)`.
    """
    lp, mu, sigma = _as_array(token_logprobs), _as_array(token_mu), _as_array(token_sigma)
    z = (lp - mu) / np.sqrt(np.maximum(sigma**2, MIN_VARIANCE))
    return -_lowest_k_mean(z, k)


def reference_score(mean_nll: float, reference_mean_nll: float) -> float:
    """Reference-model attack: L̄_target − L̄_reference (OU's difference form)."""
    return mean_nll - reference_mean_nll


def mia_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """The one AUC convention of unlearnkit: OU's (docs/metrics.md, Membership inference).

    `roc_auc_score` with members (forget items) labelled 0 and non-members (holdout) labelled 1,
    on loss-like scores: AUC = P(s_nonmember > s_member), ties 1/2. 1.0 means the forget set is
    perfectly recognised as members; 0.5 is chance. (MUSE's AUC is 1 minus this.)
    """
    from sklearn.metrics import roc_auc_score

    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        raise ValueError("mia_auc: need at least one member and one non-member score")
    labels = [0] * len(member_scores) + [1] * len(nonmember_scores)
    return float(roc_auc_score(labels, [*member_scores, *nonmember_scores]))


def privleak(auc: float, oracle_auc: float) -> float:
    """PrivLeak in percent relative to the oracle (MUSE; OU's port), from OU-convention AUCs.

    ((1 − A) − (1 − A_ref)) / (1 − A_ref) × 100, which equals MUSE's
    (AUC_unl − AUC_retrain)/AUC_retrain × 100 in MUSE's convention. 0 is ideal; about −100 means
    the forget set is still recognised; positive means over-unlearning.
    """
    return ((1.0 - auc) - (1.0 - oracle_auc)) / ((1.0 - oracle_auc) + EPSILON) * 100.0


# -- memorisation from teacher-forced argmax (docs/metrics.md, Memorisation) ------------------
def reference_span(flags: Any) -> Any:
    """The positions OU measures for EM, ES and its Min-K attacks: every scored position but
    the last (`tokenwise_logprobs` drops it as the EOS prediction; on a passage it is a real
    token)."""
    return flags[:-1]


def exact_memorization(is_top: Sequence[bool]) -> float:
    """EM: fraction of target positions where the teacher-forced argmax is the target token."""
    flags = np.asarray(is_top, dtype=bool)
    if flags.size == 0:
        raise ValueError("exact_memorization: no scored tokens")
    return float(flags.mean())


def extraction_strength(is_top: Sequence[bool]) -> float:
    """ES = 1 − k/T for the smallest k with argmax == target on every position from k on.

    Intended formula: when not even the last position matches, k = T and ES = 0. (OU returns
    1/T there; deliberate difference, see docs/metrics.md, Deliberate differences.)
    """
    flags = np.asarray(is_top, dtype=bool)
    total = flags.size
    if total == 0:
        return 0.0
    k = total
    while k > 0 and flags[k - 1]:
        k -= 1
    return 1.0 - k / total


# -- perplexity and leak@k ---------------------------------------------------------------------
def perplexity(sum_nll: float, num_tokens: int) -> float:
    """exp(total NLL / total tokens)."""
    if num_tokens <= 0:
        raise ValueError("perplexity: no tokens")
    return math.exp(sum_nll / num_tokens)


def leak_at_k(n: int, c: int, k: int) -> float:
    """Unbiased leak@k (pass@k form; Reisizadeh et al., OptimAI-Lab/Leak-k): 1 − C(n−c, k)/C(n, k)
    from n samples, c leaking.

    Computed as 1 − Π_{i=n−c+1..n} (1 − k/i), which equals the binomial form without huge
    integers. k > n is an error here (the reference returns 0, which hides a misconfiguration).
    """
    if not 0 <= c <= n:
        raise ValueError(f"leak_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"leak_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))

