"""Shared by the engine, plan and arithmetic tests: fictitious requests and a tiny model that
learned them (so forgetting is measurable), saved as a folder a plan can name."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

from unlearnkit.data.loaders import write_jsonl
from unlearnkit.data.schema import ForgetRequest, Record

NAMES = ["Liora Mendeval", "Tobin Asker", "Mara Quell", "Ivo Brannoch", "Sela Dunmore", "Oren Vask", "Pia Holt", "Edda Rune"]
TOWNS = ["Tarnholm", "Quillby", "Varn", "Ostrel", "Maddock", "Lune", "Brisk", "Hallow"]
JOBS = ["baker", "cartographer", "glassblower", "ferryman", "weaver", "clockmaker", "brewer", "archivist"]


def person_records(i: int) -> list[Record]:
    name, town, job = NAMES[i], TOWNS[(i * 3) % 8], JOBS[(i * 5) % 8]
    return [
        Record(id=f"p{i}-born", question=f"Where was {name} born?", answer=f"{name} was born in {town}."),
        Record(id=f"p{i}-job", question=f"What does {name} do?", answer=f"{name} works as a {job}."),
        Record(id=f"p{i}-bio", text=f"{name} grew up in {town} and became a {job} known across the coast."),
    ]


def requests(n: int = 3) -> list[ForgetRequest]:
    """Request r{k} asks to forget person k-1."""
    return [ForgetRequest(id=f"r{k}", kind="privacy", records=person_records(k - 1)) for k in range(1, n + 1)]


def retain() -> list[Record]:
    return [r for i in range(5, 8) for r in person_records(i)]


def corpus() -> list[str]:
    return [f"{r.as_pair()[0]} {r.as_pair()[1]}" for i in range(8) for r in person_records(i)] * 5


@functools.cache
def learned_model_dir(num_requests: int = 5) -> Path:
    """A tiny Llama fine-tuned (via FineTune and the shared loop) on every request and the retain set."""
    from unlearnkit.training import FineTune, TrainConfig, train
    from unlearnkit.models.stack import save_subject
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.tiny import tiny_model, tiny_tokenizer

    torch.set_num_threads(1)
    tokenizer = tiny_tokenizer(corpus(), vocab_size=400)
    subject = Subject(tiny_model(tokenizer, hidden_size=64, num_layers=2, max_positions=1024), tokenizer)
    data = [r for q in requests(num_requests) for r in q.records] + retain()
    examples = [{"x": subject.encode_record(r, where=r.id or "")} for r in data]
    for p in subject.model.parameters():
        p.requires_grad_(True)
    train(subject, examples, FineTune(), TrainConfig(lr=3e-3, epochs=40, batch_size=8, schedule="constant", max_grad_norm=None))
    out = Path(tempfile.mkdtemp(prefix="unlearnkit-seq-")) / "learned"
    return save_subject(subject, out)


def write_data(folder: Path, num_requests: int = 3) -> tuple[Path, Path]:
    """requests.jsonl and retain.jsonl in `folder`."""
    req, ret = folder / "requests.jsonl", folder / "retain.jsonl"
    write_jsonl(req, requests(num_requests))
    write_jsonl(ret, retain())
    return req, ret


def mean_prob(subject, records: list[Record]) -> float:
    """Mean length-normalised probability of the records' answers (passages as raw text)."""
    probs = []
    for r in records:
        prompt, target = r.as_pair()
        passage = r.kind == "passage"
        probs.append(float(subject.score([prompt], [target], template=not passage, add_eos=not passage).prob[0]))
    return sum(probs) / len(probs)
