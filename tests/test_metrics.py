"""Every formula of `unlearnkit.eval.primitives` against hand-computed values."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from unlearnkit.eval import primitives as P


def test_rouge_test_vector_from_the_reference():
    stemmed = P.rouge_l("The cats were running home", "cat run home", stemmer=True)
    assert stemmed.recall == pytest.approx(0.6)
    assert stemmed.f1 == pytest.approx(0.75)
    plain = P.rouge_l("The cats were running home", "cat run home", stemmer=False)
    assert plain.recall == pytest.approx(0.2)
    assert plain.f1 == pytest.approx(0.25)


def test_rouge_reference_is_the_first_argument():
    # recall is LCS / |reference|: swapping the arguments swaps recall and precision.
    forward = P.rouge_l("a b c d", "a b", stemmer=False)
    backward = P.rouge_l("a b", "a b c d", stemmer=False)
    assert (forward.recall, forward.precision) == pytest.approx((0.5, 1.0))
    assert (backward.recall, backward.precision) == pytest.approx((1.0, 0.5))


def test_truth_ratio_is_the_geometric_mean_over_wrong_answers():
    # metrics.md §1.5 toy example: L̄_para = 1; L̄_pert = 2, 3, 4 → 0.135 (arithmetic would be 0.184)
    assert P.truth_ratio(1.0, [2.0, 3.0, 4.0]) == pytest.approx(math.exp(-2.0))
    assert P.truth_ratio(1.0, [2.0, 3.0, 4.0]) == pytest.approx(0.135, abs=5e-4)


def test_truth_ratio_aggregations():
    ratios = [0.5, 2.0, 1.0]
    assert P.truth_ratio_forget_score(ratios) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert P.truth_ratio_retain_score(ratios) == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_forget_quality_ks_p_values():
    # Fully separated samples of 3 and 3: exact two-sided p = 2 / C(6, 3) = 0.1.
    assert P.forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert P.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # Invariant under R -> 1/R (a monotone map applied to both samples).
    a, b = [0.2, 0.5, 0.9, 1.4], [0.3, 1.1, 2.0, 3.0]
    assert P.forget_quality(a, b) == pytest.approx(P.forget_quality(1 / np.array(a), 1 / np.array(b)))


def test_model_utility_harmonic_mean_and_zero():
    assert P.model_utility([1.0, 0.5]) == pytest.approx(2 / 3)
    assert P.model_utility([0.9, 0.0, 0.8]) == 0.0
    with pytest.raises(ValueError):
        P.model_utility([])


def test_probability_with_options():
    assert P.probability_with_options(0.5, [0.25, 0.25]) == pytest.approx(0.5)


def test_auc_direction_members_low_loss_give_one():
    # Members with lower loss than non-members: perfectly recognised → 1.0 (OU convention).
    assert P.mia_auc([1.0, 2.0], [3.0, 4.0]) == pytest.approx(1.0)
    assert P.mia_auc([3.0, 4.0], [1.0, 2.0]) == pytest.approx(0.0)
    assert P.mia_auc([1.0], [1.0]) == pytest.approx(0.5)  # ties count 1/2
    assert P.mia_auc([1.0, 3.0], [2.0, 4.0]) == pytest.approx(0.75)


def test_privleak_relative_to_oracle():
    assert P.privleak(0.5, 0.5) == pytest.approx(0.0)
    assert P.privleak(1.0, 0.5) == pytest.approx(-100.0)  # forget set still recognised
    assert P.privleak(0.25, 0.5) == pytest.approx(50.0)  # over-unlearning is positive


def test_leak_at_k_test_vectors():
    assert P.leak_at_k(200, 1, 1) == pytest.approx(0.005)
    assert P.leak_at_k(200, 1, 128) == pytest.approx(0.64)
    assert P.leak_at_k(200, 10, 16) == pytest.approx(0.574, abs=5e-4)
    assert P.leak_at_k(10, 0, 5) == 0.0
    assert P.leak_at_k(10, 8, 3) == 1.0  # n - c < k
    assert P.leak_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    with pytest.raises(ValueError):
        P.leak_at_k(4, 1, 5)


def test_loss_zlib_and_min_k():
    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert P.loss_score(lp) == pytest.approx(3.0)
    text = "some text to compress"
    assert P.zlib_score(lp, text) == pytest.approx(3.0 / len(zlib.compress(text.encode())))
    assert P.min_k_score(lp, k=0.4) == pytest.approx(4.5)  # the 2 lowest: -5, -4
    assert P.min_k_score(lp, k=0.1) == pytest.approx(5.0)  # floored at one token
    assert P.min_k_score(lp, k=1.0) == pytest.approx(3.0)


def test_min_k_plus_plus_hand_case():
    # metrics.md §3.5: p = (0.5, 0.25, 0.25), target index 0 → μ = −1.0397, σ² = 0.12011, z = 1.
    p = np.array([0.5, 0.25, 0.25])
    mu = float((p * np.log(p)).sum())
    var = float((p * np.log(p) ** 2).sum() - mu**2)
    assert mu == pytest.approx(-1.0397, abs=1e-4)
    assert var == pytest.approx(0.12011, abs=1e-5)
    score = P.min_k_plus_plus_score([math.log(0.5)], [mu], [math.sqrt(var)], k=0.4)
    assert score == pytest.approx(-1.0, abs=1e-3)  # loss-like sign: minus the mean z
    # Two tokens, k = 0.5 keeps the lower z only.
    two = P.min_k_plus_plus_score([0.0, -2.0], [-1.0, -1.0], [1.0, 0.5], k=0.5)
    assert two == pytest.approx(2.0)


def test_exact_memorization_and_extraction_strength():
    assert P.exact_memorization([False, True, True]) == pytest.approx(2 / 3)
    assert P.extraction_strength([False, True, True]) == pytest.approx(2 / 3)
    assert P.extraction_strength([True, True, True]) == pytest.approx(1.0)
    assert P.extraction_strength([True, True, False]) == 0.0  # intended 0, not OU's 1/T
    assert P.extraction_strength([True, False, True, True]) == pytest.approx(0.5)


def test_perplexity():
    assert P.perplexity(3 * math.log(2.0), 3) == pytest.approx(2.0)
