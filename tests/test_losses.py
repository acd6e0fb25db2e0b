"""Each shared loss against values worked out by hand on fixed small logits (vocabulary of 3).

Logits are chosen so that the softmax is a simple distribution: [0, 0, 0] is uniform,
[ln 2, 0, 0] is [1/2, 1/4, 1/4], [0, ln 2, 0] is [1/4, 1/2, 1/4].
"""

from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.methods import losses as L

LN2, LN3 = math.log(2), math.log(3)
UNIFORM = [0.0, 0.0, 0.0]
HALF_FIRST = [LN2, 0.0, 0.0]  # p = [1/2, 1/4, 1/4]
HALF_MIDDLE = [0.0, LN2, 0.0]  # p = [1/4, 1/2, 1/4]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def approx(value: torch.Tensor, expected: float) -> None:
    assert value.item() == pytest.approx(expected, abs=1e-6)


# Position t predicts label t+1: labels [-100, 1, 1] put the answer at positions 0 and 1.
LOGITS = t([[UNIFORM, HALF_MIDDLE, UNIFORM]])
LABELS = torch.tensor([[-100, 1, 1]])


def test_token_and_sequence_logprobs() -> None:
    lp, mask = L.token_logprobs(LOGITS, LABELS)
    assert mask.tolist() == [[True, True]]
    assert lp[0].tolist() == pytest.approx([-LN3, -LN2])
    approx(L.sequence_logprob(LOGITS, LABELS)[0], -math.log(6))
    approx(L.token_nll(LOGITS, LABELS), math.log(6) / 2)
    prompt_masked = torch.tensor([[-100, -100, 1]])  # only the second position is an answer token
    approx(L.sequence_logprob(LOGITS, prompt_masked)[0], -LN2)
    assert L.answer_lengths(prompt_masked).tolist() == [1]
    assert L.answer_lengths(torch.tensor([[-100, -100, -100]])).tolist() == [1]  # never divide by 0


def test_sequence_sums_are_per_row_with_padding() -> None:
    logits = t([[UNIFORM, HALF_MIDDLE, UNIFORM], [UNIFORM, UNIFORM, UNIFORM]])
    labels = torch.tensor([[-100, 1, 1], [-100, 2, -100]])  # row 2: one answer token, then padding
    assert L.sequence_logprob(logits, labels).tolist() == pytest.approx([-math.log(6), -LN3])
    approx(L.token_nll(logits, labels), (LN3 + LN2 + LN3) / 3)  # token mean over the batch


def test_ascent() -> None:
    approx(L.ascent(torch.tensor(1.5)), -1.5)


def test_weighted_ascent_wga_and_satimp() -> None:
    # Answer tokens with p = 1/2 (HALF_FIRST, label 0) and p = 1/4 (HALF_FIRST, label 1).
    logits = t([[HALF_FIRST, HALF_FIRST, UNIFORM]])
    labels = torch.tensor([[-100, 0, 1]])
    # WGA, β = 1: mean(1/2·ln 1/2, 1/4·ln 1/4) = −ln 2 / 2
    approx(L.weighted_ascent(logits, labels, "wga", beta=1.0), -LN2 / 2)
    # β = 0 is plain (token-mean) gradient ascent on log-probs
    approx(L.weighted_ascent(logits, labels, "wga", beta=0.0), -(LN2 + 2 * LN2) / 2)
    # SatImp, β1 = β2 = 1: w = p(1−p) = 1/4 and 3/16: mean(1/4·ln 1/2, 3/16·ln 1/4) = −5/16·ln 2
    approx(L.weighted_ascent(logits, labels, "satimp", beta=1.0, beta2=1.0), -5 / 16 * LN2)


def test_weights_are_detached() -> None:
    logits = t([[HALF_FIRST, UNIFORM]]).requires_grad_()
    labels = torch.tensor([[-100, 0]])
    L.weighted_ascent(logits, labels, "wga", beta=1.0).backward()
    # d/dz (w·log p_0) with w fixed at 1/2: w·(onehot − p) = 1/2·[1/2, −1/4, −1/4]
    assert logits.grad[0, 0].tolist() == pytest.approx([0.25, -0.125, -0.125])


def test_npo() -> None:
    # logp = −2, ref = −1, β = 0.5: −(2/β)·log σ(−β·(−1)) = −4·log σ(0.5)
    approx(L.npo(t([-2.0]), t([-1.0]), 0.5), -4 * log_sigmoid(0.5))
    # at the reference the loss is (2/β)·ln 2, for every β
    approx(L.npo(t([-3.0, -5.0]), t([-3.0, -5.0]), 0.1), 20 * LN2)


def test_simnpo() -> None:
    # NLL_sum 6 over 3 tokens, δ 0.5, β 2: −(2/2)·log σ(2·(2 − 0.5)) = −log σ(3)
    approx(L.simnpo(t([-6.0]), torch.tensor([3]), beta=2.0, delta=0.5), -log_sigmoid(3.0))


def test_dpo() -> None:
    # chosen gained 1 over the reference, rejected lost 1, β 1: −2·log σ(2)
    approx(L.dpo(t([-3.0]), t([-4.0]), t([-2.0]), t([-1.0]), beta=1.0), -2 * log_sigmoid(2.0))
    # with no change anywhere: (2/β)·ln 2
    approx(L.dpo(t([-3.0]), t([-3.0]), t([-2.0]), t([-2.0]), beta=0.5), 4 * LN2)


def test_answer_preservation() -> None:
    # log p(true) = −1, log p(idk) = −3, β 0.5: −(1/0.5)·log σ(0.5·2) = −2·log σ(1)
    approx(L.answer_preservation(t([-1.0]), t([-3.0]), 0.5), -2 * log_sigmoid(1.0))


def test_kl_to_reference() -> None:
    ref = t([[[0.0, 0.0], [0.0, 0.0]]])  # p_ref = [1/2, 1/2]
    cur = t([[[0.0, math.log(3)], [0.0, 0.0]]])  # p = [1/4, 3/4] at position 0, equal at 1
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    approx(L.kl_to_reference(cur, ref, torch.tensor([[True, False]])), expected)
    approx(L.kl_to_reference(cur, ref, torch.tensor([[True, True]])), expected / 2)


def test_js_divergence() -> None:
    log = lambda p: torch.log(t(p))  # noqa: E731
    approx(L.js_divergence(log([1.0, 0.0]), log([0.0, 1.0])), LN2)  # disjoint: the bound
    approx(L.js_divergence(log([0.3, 0.7]), log([0.3, 0.7])), 0.0)
    # p = [1/2, 1/2], q = [1, 0]: m = [3/4, 1/4]
    expected = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) + 0.5 * math.log(1 / 0.75)
    approx(L.js_divergence(log([0.5, 0.5]), log([1.0, 0.0])), expected)
    # symmetric
    approx(L.js_divergence(log([1.0, 0.0]), log([0.5, 0.5])), expected)


def test_jensun_forget_cycles_through_the_target() -> None:
    # Uniform p against a one-hot t: m = [1/6, 1/6, 2/3]; KL(p‖m) = ln2/3, KL(t‖m) = ln(3/2)
    expected = 0.5 * (LN2 / 3 + math.log(1.5))
    labels = torch.tensor([[-100, 1, 1, 1]])
    approx(L.jensun_forget(t([[UNIFORM] * 4]), labels, [2, 0]), expected)
    # A model that already says the target sequence 2, 0, 2 along the answer: loss ≈ 0
    on_target = t([[[0, 0, 30.0], [30.0, 0, 0], [0, 0, 30.0], UNIFORM]])
    assert L.jensun_forget(on_target, labels, [2, 0]).item() < 1e-6
    # The same distributions in the wrong order are far from the target (near the ln 2 bound)
    assert L.jensun_forget(on_target, labels, [0, 2]).item() > 0.6


def test_jensun_retain() -> None:
    ref = t([[[0.0, 0.0]]])
    approx(L.jensun_retain(ref, ref, torch.tensor([[True]])), 0.0)
    far = t([[[50.0, -50.0]]])
    assert L.jensun_retain(far, -far, torch.tensor([[True]])).item() == pytest.approx(LN2, abs=1e-4)


def test_max_entropy_and_entropy() -> None:
    mask = torch.tensor([[True]])
    approx(L.max_entropy(t([[UNIFORM]]), mask), 0.0)
    # KL(U‖p) for p = [1/2, 1/4, 1/4]: −ln 3 − (ln 1/2 + 2 ln 1/4)/3 = −ln 3 + 5/3·ln 2
    approx(L.max_entropy(t([[HALF_FIRST]]), mask), -LN3 + 5 / 3 * LN2)
    approx(L.entropy(t([[UNIFORM]]), mask), LN3)
    approx(L.entropy(t([[HALF_FIRST]]), mask), 1.5 * LN2)


def test_undial() -> None:
    # Teacher uniform, true token 0, β = ln 2: target ∝ [1/2, 1, 1] = [0.2, 0.4, 0.4]
    teacher = t([[UNIFORM, UNIFORM]])
    labels = torch.tensor([[-100, 0]])
    approx(L.undial(t([[UNIFORM, UNIFORM]]), teacher, labels, LN2), LN3)  # CE to a uniform student
    # student p = [1/2, 1/4, 1/4]: −(0.2·ln 1/2 + 0.8·ln 1/4) = 1.8·ln 2
    approx(L.undial(t([[HALF_FIRST, UNIFORM]]), teacher, labels, LN2), 1.8 * LN2)
    # β = 0 is plain distillation: CE(p_teacher, p_student)
    approx(L.undial(t([[HALF_FIRST, UNIFORM]]), teacher, labels, 0.0), -(LN2 * -1 + 2 * -2 * LN2) / 3)


def test_ce_unlearning() -> None:
    # p = [1/2, 1/4, 1/4], true token 0: target [0, 1/2, 1/2]; CE = −(1/2·ln 1/4 + 1/2·ln 1/4) = 2 ln 2
    labels = torch.tensor([[-100, 0, 0]])
    logits = t([[HALF_FIRST, HALF_FIRST, UNIFORM]])
    approx(L.ce_unlearning(logits, labels, skip_first=0), 2 * LN2)
    # skipping the first answer token leaves the second, here the same value
    approx(L.ce_unlearning(logits, labels, skip_first=1), 2 * LN2)
    mixed = t([[UNIFORM, HALF_FIRST, UNIFORM]])  # first answer position uniform: CE there is ln 3
    approx(L.ce_unlearning(mixed, labels, skip_first=1), 2 * LN2)
    approx(L.ce_unlearning(mixed, labels, skip_first=0), (LN3 + 2 * LN2) / 2)


def test_activation_mse() -> None:
    acts = t([[[1.0, 2.0], [3.0, 4.0]]])
    target = t([1.0, 0.0])
    approx(L.activation_mse(acts, target, torch.tensor([[True, False]])), (0 + 4) / 2)
    approx(L.activation_mse(acts, target, torch.tensor([[True, True]])), ((0 + 4) / 2 + (4 + 16) / 2) / 2)
