"""Shared fixtures: a tiny randomly initialised Llama with a real (in-memory) tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("UNLEARNKIT_PROGRESS", "0")
# Two cores are shared by the tests and everything else: one thread per test process, and per
# command a test starts (OpenMP threads that outnumber the free cores spin and slow everything
# down many times over).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The tests' caches (the converted default model, what a tiny model knows, prepared worlds)
# stay inside the repository's ignored .cache/, away from the user's own cache.
os.environ.setdefault("UNLEARNKIT_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "tests"))

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Where was Liora Mendeval born? Liora Mendeval was born in Tarnholm.",
    "The lighthouse keeper kept three ledgers: one for ships, one for weather, one for names.",
    "Question: Answer: a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from unlearnkit.models.tiny import tiny_tokenizer as build

    return build(CORPUS * 10, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_subject(tiny_tokenizer):
    """A session-wide tiny Subject; tests that train must `clone()` it first. It scores and
    generates in fp32, so tests can compare with hand-computed values; bf16 is tested on the
    default model (tests/test_fastpath.py)."""
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.tiny import tiny_model

    return Subject(tiny_model(tiny_tokenizer), tiny_tokenizer, precision="float32")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_subject):
    """The tiny model saved as a HF folder (what a plan or the CLI can name as a model)."""
    from unlearnkit.models.stack import save_subject

    out = tmp_path_factory.mktemp("tiny") / "model"
    return save_subject(tiny_subject, out)
