"""Subject.score and Subject.generate on the tiny model; model loading from every local source."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from unlearnkit.errors import ModelError
from unlearnkit.models.loading import load_model
from unlearnkit.models.stack import save_subject
from unlearnkit.models.subject import GenerationSettings, Subject, cut_at_stop

PROMPTS = ["What is the capital of France?", "Where was Liora Mendeval born?", "Hi", "The lighthouse keeper kept three ledgers and"]
TARGETS = ["The capital of France is Paris.", "In Tarnholm.", "a b c d e f g h i j k l m n o p", "one for ships"]


def test_score_batched_equals_one_at_a_time(tiny_subject: Subject) -> None:
    batched = tiny_subject.score(PROMPTS, TARGETS, batch_size=4)
    for i, (p, t) in enumerate(zip(PROMPTS, TARGETS)):
        single = tiny_subject.score([p], [t], batch_size=1)
        assert torch.allclose(batched.token_logprobs[i], single.token_logprobs[0], atol=1e-4)
    assert batched.num_tokens.tolist() == [len(t) for t in batched.token_logprobs]


def test_score_matches_a_manual_forward_pass(tiny_subject: Subject) -> None:
    enc = tiny_subject.encode(PROMPTS[1], TARGETS[1])
    ids = torch.tensor([enc.input_ids])
    logp = torch.log_softmax(tiny_subject.model(input_ids=ids).logits[0, :-1], -1)
    expected = [logp[pos - 1, tok].item() for pos, tok in enumerate(enc.labels) if tok != -100]
    result = tiny_subject.score(PROMPTS[1:2], TARGETS[1:2])
    assert result.token_logprobs[0].tolist() == pytest.approx(expected, abs=1e-5)
    mean_nll = -sum(expected) / len(expected)
    assert result.mean_nll[0].item() == pytest.approx(mean_nll, abs=1e-5)
    assert result.prob[0].item() == pytest.approx(math.exp(-mean_nll), rel=1e-5)
    assert result.sum_nll[0].item() == pytest.approx(-sum(expected), abs=1e-4)


def test_score_stats_are_distribution_moments(tiny_subject: Subject) -> None:
    result = tiny_subject.score(PROMPTS[:1], TARGETS[:1], stats=True)
    enc = tiny_subject.encode(PROMPTS[0], TARGETS[0])
    first = enc.labels.index(next(t for t in enc.labels if t != -100))
    logp = torch.log_softmax(tiny_subject.model(input_ids=torch.tensor([enc.input_ids])).logits[0, first - 1], -1)
    mu = (logp.exp() * logp).sum()
    sigma = ((logp.exp() * (logp - mu) ** 2).sum()).sqrt()
    assert result.token_mu[0][0].item() == pytest.approx(mu.item(), abs=1e-4)
    assert result.token_sigma[0][0].item() == pytest.approx(sigma.item(), abs=1e-4)


def test_score_raw_text_without_template(tiny_subject: Subject) -> None:
    raw = tiny_subject.score(["The lighthouse keeper"], [" kept three ledgers"], template=False, add_eos=False)
    templated = tiny_subject.score(["The lighthouse keeper"], [" kept three ledgers"])
    assert raw.num_tokens[0] < templated.num_tokens[0]  # no EOS labelled
    assert not torch.allclose(raw.token_logprobs[0], templated.token_logprobs[0][: len(raw.token_logprobs[0])])


def test_greedy_batched_equals_one_at_a_time(tiny_subject: Subject) -> None:
    settings = GenerationSettings(max_new_tokens=12, batch_size=4)
    batched = tiny_subject.generate(PROMPTS, settings)
    singles = [tiny_subject.generate([p], settings.model_copy(update={"batch_size": 1}))[0] for p in PROMPTS]
    assert batched == singles
    assert all(len(r) == 1 for r in batched)


def test_sampling_is_seeded_and_returns_n(tiny_subject: Subject) -> None:
    settings = GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, n=3, seed=7)
    first = tiny_subject.generate(PROMPTS[:2], settings)
    assert [len(r) for r in first] == [3, 3]
    assert tiny_subject.generate(PROMPTS[:2], settings) == first
    other = tiny_subject.generate(PROMPTS[:2], settings.model_copy(update={"seed": 8}))
    assert other != first


def test_stop_strings_cut_output() -> None:
    assert cut_at_stop("Paris.\nQuestion: next", ["\n", "Question:"]) == "Paris."
    assert cut_at_stop("  no stop here ", ["###"]) == "no stop here"


def test_generation_respects_context(tiny_subject: Subject) -> None:
    from unlearnkit.errors import DataError

    with pytest.raises(DataError, match="over the model's context"):
        tiny_subject.generate(["word " * 300], GenerationSettings(max_new_tokens=4))


def test_save_and_load_local_folder(tiny_model_dir: Path, tiny_subject: Subject) -> None:
    assert (tiny_model_dir / "model.safetensors").exists()
    assert not tiny_model_dir.with_name(tiny_model_dir.name + ".tmp").exists()
    model, tokenizer = load_model(tiny_model_dir, device="cpu")
    again = Subject(model, tokenizer, precision="float32")
    a = again.score(PROMPTS[:2], TARGETS[:2]).mean_nll
    b = tiny_subject.score(PROMPTS[:2], TARGETS[:2]).mean_nll
    assert torch.allclose(a, b, atol=1e-5)


def test_lora_wrapping(tiny_model_dir: Path) -> None:
    model, _ = load_model(tiny_model_dir, device="cpu", lora={"r": 4, "lora_alpha": 8})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable < total / 2


@pytest.mark.parametrize(
    "source,pattern",
    [
        ("/no/such/model", r"model '/no/such/model': no such file or folder"),
        ("./missing.gguf", r"no such GGUF file"),
        ("just-a-word", r"not a hub id"),
    ],
)
def test_wrong_model_path(source: str, pattern: str) -> None:
    with pytest.raises(ModelError, match=pattern):
        load_model(source)


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(tmp_path)


def test_bad_dtype_and_device(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="dtype 'float8'"):
        load_model(tiny_model_dir, dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            load_model(tiny_model_dir, device="cuda")


def test_atomic_save_replaces_existing(tmp_path: Path, tiny_subject: Subject) -> None:
    out = tmp_path / "ckpt"
    save_subject(tiny_subject, out, meta={"step": 1})
    save_subject(tiny_subject, out, meta={"step": 2})
    assert '"step": 2' in (out / "unlearnkit.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_unreachable_hub_id_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"model 'nobody-here/no-such-model': not a local folder, not in the hub cache, and the hub cannot be reached") as info:
        load_model("nobody-here/no-such-model")
    assert "\n" not in str(info.value)
