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
    assert P.truth_ratio_forget_score(ratios) == pytest.approx((0.5 + 1 / (2.0 + 1e-10) + 1 / (1.0 + 1e-10)) / 3, abs=1e-15)
    assert P.truth_ratio_forget_score(ratios, epsilon=0.0) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert P.truth_ratio_retain_score(ratios) == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_truth_ratio_has_the_reference_epsilon_in_its_denominator():
    # R = exp(-2) / (exp(-1) + 1e-10): OU's `wrong_prob / (correct_prob + 1e-10)`.
    assert P.truth_ratio(1.0, [2.0]) == pytest.approx(math.exp(-2.0) / (math.exp(-1.0) + 1e-10), rel=1e-15)
    assert P.truth_ratio(1.0, [2.0], epsilon=0.0) == pytest.approx(math.exp(-1.0), rel=1e-15)


def test_truth_ratio_of_a_collapsed_model_is_finite_as_in_the_reference():
    # The correct answer 795 nats less likely than the wrong one: exp(795) overflowed before.
    # OU's floats: exp(-800) = 0, so R = exp(-5) / (0 + 1e-10).
    ratio = P.truth_ratio(800.0, [5.0])
    assert ratio == pytest.approx(math.exp(-5.0) / 1e-10, rel=1e-12)
    assert P.truth_ratio_forget_score([ratio]) == pytest.approx(1 / (ratio + 1e-10), rel=1e-12)
    assert P.truth_ratio_retain_score([ratio]) == 0.0
    # TOFU's original form (no epsilon) gives an infinite R, and both aggregations count it 0.
    assert P.truth_ratio(800.0, [5.0], epsilon=0.0) == math.inf
    assert P.truth_ratio_forget_score([math.inf, 1.0], epsilon=0.0) == pytest.approx(0.5)
    assert P.truth_ratio_retain_score([math.inf, 0.5]) == pytest.approx(0.25)


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
    assert P.probability_with_options(0.5, [0.25, 0.25]) == pytest.approx(0.5 / (1.0 + 1e-10), rel=1e-15)
    assert P.probability_with_options(0.5, [0.25, 0.25], epsilon=0.0) == 0.5


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
    assert P.reference_span([True, True, False]) == [True, True]  # OU leaves out the last position


def test_perplexity():
    assert P.perplexity(3 * math.log(2.0), 3) == pytest.approx(2.0)


# -- metrics on a model -----------------------------------------------------------------------
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402

from unlearnkit.data.schema import Record  # noqa: E402
from unlearnkit.eval.metric import MetricInput, get_metric, metric_registry  # noqa: E402
from unlearnkit.eval.passes import sharing  # noqa: E402
from unlearnkit.models.subject import Subject  # noqa: E402

QA = [
    Record(id="q1", question="Where was Liora Mendeval born?", answer="In Tarnholm.", paraphrased_answer="Tarnholm.", perturbed_answers=["In Paris.", "In Osterfal.", "In a b c."]),
    Record(id="q2", question="What is the capital of France?", answer="The capital of France is Paris.", perturbed_answers=["It is Tarnholm.", "It is Lyon."]),
    Record(id="q3", question="Hi", answer="a b c d e f g", perturbed_answers=["h i j"]),
]
PASSAGES = [
    Record(id="p1", prompt="The lighthouse keeper kept", continuation=" three ledgers: one for ships."),
    Record(id="p2", text="one for weather, one for names, and the capital of France is Paris."),
]
HOLDOUT = [
    Record(id="h1", question="Where was Anselm born?", answer="In Dorrowgate.", perturbed_answers=["In Pellward."]),
    Record(id="h2", question="What is x?", answer="x is a letter.", perturbed_answers=["x is a number."]),
    Record(id="h3", text="Question: Answer: a b c d e f g h i j k l m n o"),
]
SCORE_METRICS = [
    ("probability", {}),
    ("probability_options", {}),
    ("option_accuracy", {}),
    ("truth_ratio", {"aggregation": "forget"}),
    ("exact_memorization", {}),
    ("extraction_strength", {"kind": "all"}),
    ("perplexity", {}),
]
ATTACKS = ["mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_pp", "mia_gradnorm"]


def _small_batches(subject: Subject) -> Subject:
    twin = subject.with_model(subject.model)
    twin.batch_size = 1
    return twin


@pytest.mark.parametrize("name,params", SCORE_METRICS)
def test_batched_evaluation_equals_per_item(tiny_subject, name, params):
    metric = get_metric(name, **params)
    records = QA + PASSAGES
    batched = metric.compute(tiny_subject, records)
    one_by_one = {}
    for record in records:
        if metric.applies([record]):
            one_by_one |= {record.id: v for v in metric.compute(_small_batches(tiny_subject), [record]).per_item.values()}
    assert batched.per_item.keys() == one_by_one.keys()
    for key, value in batched.per_item.items():
        assert value == pytest.approx(one_by_one[key], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_scores_batched_equal_per_item(tiny_subject, name):
    metric = get_metric(name, kind="qa")
    batched = metric.compute(tiny_subject, MetricInput(QA, HOLDOUT))
    assert 0.0 <= batched.value <= 1.0
    single = get_metric(name, kind="qa").compute(_small_batches(tiny_subject), MetricInput(QA[:1], HOLDOUT[:1]))
    # 1e-3: Min-K%++ divides each token's log-prob gap by its σ over the vocabulary, which
    # magnifies the float differences between a batch's shared-prefix pass and one row's.
    assert single.per_item["q1"] == pytest.approx(batched.per_item["q1"], rel=1e-3)
    assert single.per_item["nonmember:h1"] == pytest.approx(batched.per_item["nonmember:h1"], rel=1e-3)


def test_truth_ratio_metric_matches_the_formula_on_model_scores(tiny_subject):
    r = QA[0]
    result = get_metric("truth_ratio", aggregation="retain", correct="paraphrased").compute(tiny_subject, [r])
    nll = tiny_subject.score([r.question] * 4, [r.paraphrased_answer, *r.perturbed_answers]).mean_nll.tolist()
    expected = math.exp(-np.mean(nll[1:])) / (math.exp(-nll[0]) + 1e-10)
    assert result.per_item["q1"] == pytest.approx(expected, rel=1e-4)
    assert result.value == pytest.approx(max(0.0, 1 - expected), abs=1e-6)
    with_answer = get_metric("truth_ratio", correct="answer").compute(tiny_subject, [r])
    assert with_answer.per_item["q1"] != pytest.approx(expected, rel=1e-6)
    # "auto" compares like with like: here the 2-word answer is nearer the wrong answers' length.
    auto = get_metric("truth_ratio", correct="auto").compute(tiny_subject, [r])
    assert auto.per_item["q1"] == pytest.approx(with_answer.per_item["q1"])


class _PeakedModel(torch.nn.Module):
    """Puts p = 0.5 on the true next token and 0.25 on two others at every position; where the
    next token is `miss` (say EOS), the 0.5 goes to the token after it instead."""

    def __init__(self, vocab: int, miss: int | None = None) -> None:
        super().__init__()
        self.vocab = vocab
        self.miss = miss
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=256)

    def forward(self, input_ids, attention_mask=None, **_):
        batch, length = input_ids.shape
        logits = torch.full((batch, length, self.vocab), -1e4)
        nxt = torch.roll(input_ids, -1, dims=1)
        if self.miss is not None:
            nxt = torch.where(nxt == self.miss, (nxt + 1) % self.vocab, nxt)
        for off, p in ((0, 0.5), (1, 0.25), (2, 0.25)):
            logits.scatter_(-1, ((nxt + off) % self.vocab).unsqueeze(-1), math.log(p))
        return SimpleNamespace(logits=logits)


def test_min_k_plus_plus_through_score_on_the_hand_case(tiny_tokenizer):
    subject = Subject(_PeakedModel(len(tiny_tokenizer)), tiny_tokenizer)
    result = subject.score(["Hi"], ["a b c"], stats=True)
    assert torch.allclose(result.token_mu[0], torch.tensor(-1.0397), atol=1e-4)
    assert torch.allclose(result.token_sigma[0] ** 2, torch.tensor(0.12011), atol=1e-4)
    assert bool(result.token_is_top[0].all())
    member = Record(id="m", question="Hi", answer="a b c")
    outsider = Record(id="o", question="Hi", answer="d e f")
    scores = get_metric("mia_min_k_pp", kind="qa").compute(subject, MetricInput([member], [outsider]))
    assert scores.per_item["m"] == pytest.approx(-1.0, abs=1e-3)
    assert get_metric("exact_memorization").compute(subject, [member]).value == 1.0
    assert get_metric("extraction_strength").compute(subject, [member]).value == 1.0


def test_a_fully_memorised_answer_is_extracted_even_when_eos_is_not_the_top_prediction(tiny_tokenizer):
    """Extraction strength was 0 whenever EOS was not the argmax (always, for a chat model that
    ends its turn with another token): the reference measures the answer without the EOS."""
    subject = Subject(_PeakedModel(len(tiny_tokenizer), miss=tiny_tokenizer.eos_token_id), tiny_tokenizer)
    member = Record(id="m", question="Hi", answer="a b c")
    flags = subject.score(["Hi"], ["a b c"]).token_is_top[0].tolist()
    assert flags[:-1] == [True] * (len(flags) - 1) and flags[-1] is False  # every answer token, not EOS
    assert get_metric("extraction_strength").compute(subject, [member]).value == 1.0
    assert get_metric("exact_memorization").compute(subject, [member]).value == 1.0
    # Every scored token (unlearnkit's variant) counts the EOS miss.
    assert get_metric("extraction_strength", last_token="keep").compute(subject, [member]).value == 0.0
    total = len(flags)
    assert get_metric("exact_memorization", last_token="keep").compute(subject, [member]).value == pytest.approx((total - 1) / total)


class _FavouriteTokensModel(torch.nn.Module):
    """Logit 0 on `favourite` token ids and -2000 on every other: an answer made of other tokens
    is about 2000 nats per token less likely (a model collapsed by unlearning)."""

    def __init__(self, vocab: int, favourite: set[int]) -> None:
        super().__init__()
        self.vocab = vocab
        self.mask = torch.full((vocab,), -2000.0)
        self.mask[list(favourite)] = 0.0
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=256)

    def forward(self, input_ids, attention_mask=None, **_):
        batch, length = input_ids.shape
        return SimpleNamespace(logits=self.mask.expand(batch, length, self.vocab).clone())


def test_truth_ratio_metric_on_a_collapsed_model_gives_the_reference_value(tiny_tokenizer):
    wrong, correct = "Paris", "Tarnholm"
    favourite = set(tiny_tokenizer(wrong, add_special_tokens=False)["input_ids"]) | {tiny_tokenizer.eos_token_id}
    assert not favourite & set(tiny_tokenizer(correct, add_special_tokens=False)["input_ids"])
    subject = Subject(_FavouriteTokensModel(len(tiny_tokenizer), favourite), tiny_tokenizer)
    record = Record(id="c", question="Where?", answer=correct, paraphrased_answer=correct, perturbed_answers=[wrong])
    nll = subject.score(["Where?"] * 2, [correct, wrong]).mean_nll.tolist()
    assert nll[0] - nll[1] > 710  # past exp()'s range: this raised OverflowError
    forget = get_metric("truth_ratio", aggregation="forget").compute(subject, [record])
    ratio = math.exp(-nll[1]) / (math.exp(-nll[0]) + 1e-10)
    assert forget.per_item["c"] == pytest.approx(ratio, rel=1e-9)
    assert forget.value == pytest.approx(1 / (ratio + 1e-10), rel=1e-9)
    assert get_metric("truth_ratio", aggregation="retain").compute(subject, [record]).value == 0.0


def test_mc_accuracy_takes_the_likeliest_letter(tiny_subject):
    mc = Record(id="m1", question="Which is a capital?", choices=["Paris", "Tarnholm", "Lyon"], answer_index=1)
    from unlearnkit.eval.metrics.utility import mc_prompt

    assert mc_prompt(mc) == "Which is a capital?\nA. Paris\nB. Tarnholm\nC. Lyon\nAnswer:"
    logliks = [-float(tiny_subject.score([mc_prompt(mc)], [f" {x}"], template=False, add_eos=False).sum_nll[0]) for x in "ABC"]
    result = get_metric("mc_accuracy").compute(tiny_subject, [mc])
    assert result.value == float(int(np.argmax(logliks)) == 1)


def test_forget_quality_and_privleak_against_oneself(tiny_subject):
    data = MetricInput(QA, HOLDOUT)
    assert get_metric("forget_quality").compute(tiny_subject, data, tiny_subject).value == pytest.approx(1.0)
    assert get_metric("privleak", kind="qa").compute(tiny_subject, data, tiny_subject).value == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(Exception, match="oracle"):
        get_metric("forget_quality").compute(tiny_subject, data)


def test_shared_passes_compute_each_item_once(tiny_subject):
    with sharing() as counts:
        for name in ("probability", "exact_memorization", "mia_loss", "mia_min_k"):
            get_metric(name, **({"kind": "qa"} if name.startswith("mia") else {})).compute(tiny_subject, MetricInput(QA, HOLDOUT))
    assert counts.score_computed == len(QA) + 2  # QA answers + the two QA holdout items
    assert counts.score_requested > counts.score_computed


def test_registry_finds_every_metric_module():
    names = metric_registry.names()
    for expected in ("probability", "rouge", "truth_ratio", "forget_quality", "verbmem", "knowmem", "mia_gradnorm", "privleak", "mc_accuracy", "perplexity"):
        assert expected in names


def test_knowmem_prompt_and_stops():
    from unlearnkit.eval.metrics.muse import knowmem_prompt

    shots = [Record(question="q1?", answer="a1")]
    assert knowmem_prompt("q2?", shots) == "Question: q1?\nAnswer: a1\n\nQuestion: q2?\nAnswer: "


def test_gradnorm_leaves_the_model_untouched(tiny_subject):
    before = [p.detach().clone() for p in tiny_subject.model.parameters()]
    get_metric("mia_gradnorm", kind="qa").compute(tiny_subject, MetricInput(QA[:1], HOLDOUT[:1]))
    assert all(p.grad is None for p in tiny_subject.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_subject.model.parameters()))


# -- typed settings and declared properties ----------------------------------------------------
from unlearnkit.errors import UnlearnkitError  # noqa: E402


def test_an_unknown_setting_is_one_line_naming_it():
    with pytest.raises(UnlearnkitError) as info:
        get_metric("rouge", max_tokens=3)
    assert str(info.value) == (
        "metric 'rouge': unknown setting 'max_tokens' (did you mean 'max_new_tokens'?); "
        "valid: measure, stemmer, max_new_tokens, question"
    )
    with pytest.raises(UnlearnkitError, match=r"^metric 'probability': unknown setting 'kind'; valid: none$"):
        get_metric("probability", kind="qa")


@pytest.mark.parametrize(
    "name,settings",
    [
        ("truth_ratio", {"aggregation": "both"}),
        ("truth_ratio", {"correct": "perturbed"}),
        ("forget_quality", {"correct": "perturbed"}),
        ("rouge", {"measure": "precision"}),
        ("rouge", {"question": "paraphrases"}),
        ("rouge", {"max_new_tokens": 0}),
        ("exact_memorization", {"kind": "auto"}),
        ("mia_loss", {"kind": "all"}),
        ("mia_min_k", {"k": 1.5}),
        ("privleak", {"attack": "gradnorm"}),
    ],
)
def test_an_invalid_value_is_one_line_naming_the_setting(name, settings):
    key = next(iter(settings))
    with pytest.raises(UnlearnkitError) as info:
        get_metric(name, **settings)
    message = str(info.value)
    assert message.startswith(f"metric '{name}': setting '{key}': ") and "\n" not in message


def test_truth_ratio_aggregation_both_is_refused_with_the_allowed_values():
    with pytest.raises(UnlearnkitError, match=r"^metric 'truth_ratio': setting 'aggregation': Input should be 'forget' or 'retain'$"):
        get_metric("truth_ratio", aggregation="both")


def test_settings_are_the_typed_fields_with_their_defaults_and_frozen():
    rouge = get_metric("rouge", measure="f1")
    assert rouge.settings() == {"measure": "f1", "stemmer": True, "max_new_tokens": 200, "question": "question"}
    assert rouge.measure == "f1" and rouge.name == "rouge"
    assert get_metric("verbmem").settings() == {"max_new_tokens": 128, "stemmer": False, "truncate": "muse", "source": None}
    assert get_metric("knowmem").settings() == {"shots": 10, "max_new_tokens": 32, "stemmer": False, "source": None}
    assert get_metric("truth_ratio").settings() == {"aggregation": "forget", "correct": "paraphrased", "epsilon": 1e-10}
    assert get_metric("privleak").settings() == {"attack": "min_k", "kind": "auto", "k": 0.4, "last_token": "drop", "source": None}
    assert get_metric("mia_gradnorm").settings() == {"kind": "auto", "source": None, "p": 2.0}
    assert get_metric("extraction_strength").settings() == {"kind": "qa", "last_token": "drop", "source": None}
    assert get_metric("probability").settings() == {}
    with pytest.raises(Exception, match="frozen"):
        rouge.measure = "recall"


DIRECTION_WORDS = ("higher", "lower", "better", "worse", "forgotten", "remembered")


def test_every_registered_metric_declares_a_description_without_a_direction():
    descriptions = {}
    for name, cls in metric_registry.items():
        text = vars(cls).get("description", "")  # its own, not inherited from a base class
        assert text.strip(), f"{name} declares no description"
        assert "\n" not in text, name
        assert not any(word in text.lower() for word in DIRECTION_WORDS), (name, text)
        descriptions[name] = text
    assert len(set(descriptions.values())) == len(descriptions)  # no two metrics described alike


def test_declared_properties_are_consistent_and_match_the_metrics():
    metrics = dict(metric_registry.items())
    assert {n for n, c in metrics.items() if c.generates} == {"rouge", "verbmem", "knowmem", "answer_accuracy"}
    assert {n for n, c in metrics.items() if c.recoverable} == {
        "probability", "rouge", "extraction_strength", "exact_memorization", "verbmem", "knowmem", "answer_accuracy",
    }
    for name, cls in metrics.items():
        if cls.recoverable:  # what the weight attacks' recovered fraction assumes
            assert cls.remembered_when == "higher" and not cls.needs_reference and not cls.needs_nonmembers, name
        if cls.generates:  # every generating metric can be capped
            assert "max_new_tokens" in cls.model_fields, name
    assert metrics["probability"].remembered_when == "higher"
    assert metrics["truth_ratio"].remembered_when == "lower" and metrics["truth_ratio"].higher_is_better is True
    assert metrics["forget_quality"].remembered_when == "lower"
    assert metrics["perplexity"].remembered_when == "lower" and metrics["perplexity"].higher_is_better is False
    for name in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_pp", "mia_reference", "mia_gradnorm", "privleak"):
        assert metrics[name].remembered_when is None and metrics[name].higher_is_better is None, name


# -- answer accuracy ---------------------------------------------------------------------------
class _ScriptedAnswers:
    """Answers each prompt from a script, through the shared memo; records how it was asked."""

    batch_size = 4

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.calls: list[tuple[int, list[str], bool, bool]] = []

    def generate(self, prompts, settings, *, template=True):
        self.calls.append((settings.max_new_tokens, settings.stop, settings.greedy, template))
        return [[self.answers[p]] for p in prompts]


def test_answer_accuracy_is_the_share_of_answers_contained_ignoring_case():
    records = [
        Record(id="a", question="Where was Liora born?", answer="Tarnholm"),
        Record(id="b", question="What is the capital of France?", answer="paris"),
        Record(id="c", question="Who wrote the ledgers?", answer="Anselm Pell"),
        Record(id="t", text="A passage is not a question."),
    ]
    subject = _ScriptedAnswers({
        "Where was Liora born?": "She was born in TARNHOLM.",  # contained, other case: 1
        "What is the capital of France?": "Paris, of course",  # contained, other case: 1
        "Who wrote the ledgers?": "Anselm wrote them.",  # only part of the answer: 0
    })
    result = get_metric("answer_accuracy").compute(subject, records)
    assert result.per_item == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert result.value == pytest.approx(2 / 3)
    assert subject.calls == [(16, [], True, True)]  # greedy, 16 tokens, no stop strings, templated
    get_metric("answer_accuracy", max_new_tokens=4).compute(subject, records)
    assert subject.calls[-1][0] == 4


def test_answer_accuracy_on_a_model_matches_its_own_greedy_answers(tiny_subject):
    """On a real model: the answers are the model's own greedy texts, matched ignoring case
    (what the prepared world's quality check used to compute by hand, now this metric)."""
    said = tiny_subject.greedy([r.question for r in QA], max_new_tokens=16)
    records = [
        QA[0].model_copy(update={"answer": said[0].swapcase()}),
        QA[1].model_copy(update={"answer": "zq zq zq"}),
        QA[2].model_copy(update={"answer": said[2][-3:].swapcase()}),
    ]
    result = get_metric("answer_accuracy").compute(tiny_subject, records)
    assert result.per_item == {"q1": 1.0, "q2": 0.0, "q3": 1.0}
    by_hand = sum((r.answer or "").lower() in text.lower() for r, text in zip(records, said)) / len(records)
    assert result.value == by_hand == pytest.approx(2 / 3)


def test_answer_accuracy_can_ask_for_whole_words():
    records = [Record(id="t", question="Which element has the symbol Sn?", answer="tin")]
    subject = _ScriptedAnswers({"Which element has the symbol Sn?": "It is named after Martin."})
    assert get_metric("answer_accuracy").compute(subject, records).value == 1.0  # substring: "tin" in "Martin"
    assert get_metric("answer_accuracy", match="word").compute(subject, records).value == 0.0
    subject = _ScriptedAnswers({"Which element has the symbol Sn?": "Tin, of course."})
    assert get_metric("answer_accuracy", match="word").compute(subject, records).value == 1.0
