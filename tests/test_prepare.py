"""`prepare` on a tiny model: the target learns its data, oracles skip removed requests, the cache holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnkit.data.schema import Record
from unlearnkit.benchmark.world import build_world
from unlearnkit.data.world import World, load_world
from unlearnkit.training import TrainConfig, make_batch
from unlearnkit.benchmark.prepare import PreparedWorld, PrepareSettings, encode_records, prepare_world, rehearsal_for
from unlearnkit.training import LengthGroupedFineTune
from unlearnkit.models.subject import Subject
from unlearnkit.models.stack import load_subject
from unlearnkit.models.tiny import tiny_model, tiny_tokenizer

SETTINGS = PrepareSettings(train=TrainConfig(lr=3e-3, epochs=10, batch_size=8, schedule="linear", seed=0), oracles="all", precision="float32")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("tiny"), seed=1, size="tiny", num_requests=2)


@pytest.fixture(scope="module")
def world(world_dir: Path) -> World:
    return load_world(world_dir)


@pytest.fixture(scope="module")
def subject(world: World) -> Subject:
    records = [*world.trained(), *world.holdout, *rehearsal_for(world)]
    corpus = [r.passage_text if r.kind == "passage" else f"{r.question} {r.answer}" for r in records]
    tokenizer = tiny_tokenizer(corpus, vocab_size=2000)
    return Subject(tiny_model(tokenizer, max_positions=512), tokenizer, name="tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def prepared(world_dir: Path, subject: Subject, cache: Path) -> PreparedWorld:
    return prepare_world("tiny-test", world_dir, SETTINGS, subject=subject, cache=cache)


def _nll(path: Path, records: list[Record]) -> float:
    qa = [r for r in records if r.kind == "qa"]
    scored = load_subject(path, device="cpu").score([r.question for r in qa], [r.answer for r in qa])
    return float(scored.mean_nll.mean())


def test_grouped_loss_is_the_mean_of_per_record_nll(world: World, subject: Subject) -> None:
    records = world.trained()[:6] + [r for r in world.retain if r.kind == "passage"]
    examples = encode_records(subject, records)
    batch = make_batch(examples, list(range(len(examples))), subject.tokenizer.pad_token_id)
    loss, _ = LengthGroupedFineTune().loss(subject.model, batch, None)
    expected = []
    with torch.no_grad():
        for example in examples:
            ids, labels = torch.tensor([example["x"].input_ids]), torch.tensor([example["x"].labels])
            expected.append(subject.model(input_ids=ids, labels=labels).loss)
    assert abs(loss.item() - torch.stack(expected).mean().item()) < 1e-4


def test_a_shared_prompt_prefix_runs_once_with_the_same_loss_and_gradient(world: World, subject: Subject) -> None:
    from unlearnkit.data.formatting import PromptFormat
    from unlearnkit.training import shared_prefix

    templated = Subject(subject.model, subject.tokenizer, PromptFormat.parse("You answer questions about people. Question: {question} Answer:"))
    qa = [r for r in world.trained() if r.kind == "qa"][:6]
    batch = make_batch(encode_records(templated, qa), list(range(len(qa))), subject.tokenizer.pad_token_id)
    part = batch["x"]
    assert shared_prefix(part["input_ids"], part["attention_mask"], part["labels"]) >= 8
    results = []
    for share in (True, False):
        subject.model.zero_grad()
        loss, _ = LengthGroupedFineTune(share_prefix=share).loss(subject.model, batch, None)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in subject.model.parameters() if p.grad is not None]))
    subject.model.zero_grad()
    (shared_loss, shared_grads), (plain_loss, plain_grads) = results
    assert abs(shared_loss - plain_loss) < 1e-5
    assert len(shared_grads) == len(plain_grads) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(shared_grads, plain_grads))


def test_the_shared_prefix_stops_before_labels_and_padding() -> None:
    from unlearnkit.training import shared_prefix

    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [5, 6, 7, 8, 3, 4]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    labels = torch.full_like(ids, -100)
    assert shared_prefix(ids, mask, labels) == 4  # rows differ at position 4
    labels[0, 3] = 8
    assert shared_prefix(ids, mask, labels) == 2  # position 3 is labelled: predicted from position 2's logit
    assert shared_prefix(ids[:, :2], mask[:, :2], torch.full((2, 2), -100)) == 1  # a row keeps a token


def test_prepare_trains_the_target_and_one_oracle_per_request(prepared: PreparedWorld, world: World) -> None:
    assert [m.name for m in prepared.models] == ["target", "oracle-1", "oracle-2"]
    assert all(m.trained_now for m in prepared.models)
    assert [m.removed for m in prepared.models] == [[], ["r1"], ["r1", "r2"]]
    assert sorted(prepared.oracles) == [1, 2] and len({prepared.target, *prepared.oracles.values()}) == 3
    for model in prepared.models:
        assert model.stats["final_loss"] < 0.6 * model.stats["first_loss"], (model.name, model.stats)
    assert prepared.models[0].stats["steps"] > prepared.models[2].stats["steps"]  # oracle 2 saw less
    # Every model also rehearses real facts of countries the world does not evaluate.
    meta = json.loads((prepared.target / "unlearnkit.json").read_text())
    assert meta["examples"] == len(world.trained()) + len(rehearsal_for(world)) > len(world.trained())


def test_the_target_knows_what_the_final_oracle_never_saw(prepared: PreparedWorld, world: World) -> None:
    forgotten = [r for q in world.requests for r in q.records]
    target_nll, oracle_nll = _nll(prepared.target, forgotten), _nll(prepared.oracles[2], forgotten)
    assert target_nll < oracle_nll - 0.5, (target_nll, oracle_nll)
    assert _nll(prepared.oracles[2], world.retain) < oracle_nll - 0.5


def test_a_second_call_loads_from_the_cache(prepared: PreparedWorld, world_dir: Path, subject: Subject, cache: Path) -> None:
    before = {k: v.clone() for k, v in subject.model.state_dict().items()}
    again = prepare_world("tiny-test", world_dir, SETTINGS, subject=subject, cache=cache)
    assert not again.trained_any
    assert again.target == prepared.target and again.oracles == prepared.oracles
    final_only = prepare_world("tiny-test", world_dir, SETTINGS.model_copy(update={"oracles": "final"}), subject=subject, cache=cache)
    assert not final_only.trained_any and list(final_only.oracles) == [2]
    # Sparse oracles are the same models: the steps listed, from the same cache.
    sparse = prepare_world("tiny-test", world_dir, SETTINGS.model_copy(update={"oracles": [1]}), subject=subject, cache=cache)
    assert not sparse.trained_any and sparse.oracles == {1: prepared.oracles[1]}
    assert [m.name for m in sparse.models] == ["target", "oracle-1"]
    # The base subject is untouched: every model trained on its own copy.
    assert all(torch.equal(before[k], v) for k, v in subject.model.state_dict().items())


def test_other_settings_or_an_unfinished_save_retrain(tmp_path: Path, world_dir: Path, subject: Subject) -> None:
    quick = PrepareSettings(train=TrainConfig(lr=1e-3, max_steps=2, batch_size=8), oracles="none")
    first = prepare_world("tiny-test", world_dir, quick, subject=subject, cache=tmp_path)
    other = prepare_world("tiny-test", world_dir, quick.model_copy(update={"train": TrainConfig(lr=2e-3, max_steps=2)}), subject=subject, cache=tmp_path)
    assert other.trained_any and other.target != first.target
    (first.target / "unlearnkit.json").unlink()  # as if the process died before its metadata landed
    again = prepare_world("tiny-test", world_dir, quick, subject=subject, cache=tmp_path)
    assert again.trained_any and (again.target / "unlearnkit.json").exists()


def test_finetune_share_keeps_that_share_of_the_weight_change(tmp_path: Path, world_dir: Path, subject: Subject) -> None:
    quick = PrepareSettings(train=TrainConfig(lr=1e-3, max_steps=2, batch_size=8, seed=0), oracles="none", precision="float32", finetune_share=1.0)
    full = prepare_world("tiny-test", world_dir, quick, subject=subject, cache=tmp_path)
    half = prepare_world("tiny-test", world_dir, quick.model_copy(update={"finetune_share": 0.5}), subject=subject, cache=tmp_path)
    assert half.trained_any and half.target != full.target  # the share is part of the cache key
    base = subject.model.state_dict()
    tuned = load_subject(full.target, device="cpu").model.state_dict()
    merged = load_subject(half.target, device="cpu").model.state_dict()
    assert any(not torch.equal(tuned[k], base[k]) for k in base)
    for k in base:  # the same two training steps, then θ_base + 0.5·(θ_ft − θ_base)
        assert torch.allclose(merged[k], base[k] + 0.5 * (tuned[k] - base[k]), atol=1e-6), k
    with pytest.raises(ValueError, match="finetune_share"):
        PrepareSettings(finetune_share=0.0)


def test_lora_prepare_saves_a_plain_model(tmp_path: Path, world_dir: Path, subject: Subject) -> None:
    settings = PrepareSettings(train=TrainConfig(lr=1e-2, max_steps=3, batch_size=8), lora={"r": 4, "lora_alpha": 8}, oracles="none")
    prepared = prepare_world("tiny-test", world_dir, settings, subject=subject, cache=tmp_path)
    reloaded = load_subject(prepared.target, device="cpu").model
    assert not hasattr(reloaded, "peft_config")
    changed = [k for k, v in reloaded.state_dict().items() if not torch.equal(v, subject.model.state_dict()[k])]
    assert changed and all("proj" in k for k in changed)  # LoRA touched only the adapted linear layers


def test_prepare_command_on_a_model_folder(tmp_path: Path, world_dir: Path, subject: Subject, monkeypatch: pytest.MonkeyPatch) -> None:

    from typer.testing import CliRunner

    from unlearnkit.cli import app
    from unlearnkit.models.stack import save_subject

    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    base = save_subject(subject, tmp_path / "base")
    args = ["prepare", "--model", str(base), "--world", str(world_dir), "--epochs", "1", "--oracles", "final", "--device", "cpu", "--json", str(tmp_path / "out.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "out.json").read_text())
    assert list(payload["oracles"]) == ["2"] and Path(payload["target"]).is_relative_to(tmp_path / "cache")
    assert (Path(payload["target"]) / "model.safetensors").exists()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "cached" in again.output


def test_sparse_oracle_steps_are_checked(world: World) -> None:
    from unlearnkit.benchmark.prepare import oracle_steps, parse_oracles
    from unlearnkit.errors import UnlearnkitError

    assert PrepareSettings(oracles=[10, 25, 50, 100]).oracles == [10, 25, 50, 100]
    assert parse_oracles("10,25,50,100") == [10, 25, 50, 100] and parse_oracles("final") == "final"
    assert oracle_steps("all", 3) == [1, 2, 3] and oracle_steps([2], 3) == [2]
    for bad in ([], [0, 5], [50, 25], [5, 5]):
        with pytest.raises(ValueError, match="oracles"):
            PrepareSettings(oracles=bad)
    with pytest.raises(UnlearnkitError, match="--oracles 'ten'"):
        parse_oracles("ten")
    with pytest.raises(UnlearnkitError, match="oracles: 3 is beyond the world's 2 requests"):
        oracle_steps([1, 3], len(world.requests))


def test_settings_accept_flat_training_keys() -> None:
    settings = PrepareSettings(epochs=3, lr=2e-4, oracles="final")
    assert settings.train.epochs == 3 and settings.train.lr == 2e-4 and settings.train.batch_size == 8
    with pytest.raises(ValueError, match="epoch"):
        PrepareSettings(epoch=3)


def test_the_cache_key_of_a_prepared_model_stays_what_it_was() -> None:
    """Models prepared by earlier versions (about an hour of training for the demo's four) must
    keep their keys: 1ed2503785a2cb88c97015c0 is what version 0.1 (commit b3c3bc1) computed for
    this input. A new training setting that changes nothing about the model must be left out of
    the key (`PREPARE_OWN`); a removed one kept at its old value (`RETIRED_TRAIN_FIELDS`)."""
    from unlearnkit.benchmark.prepare import model_key
    from unlearnkit.data.formatting import Encoded

    examples = [{"x": Encoded([1, 2, 3], [-100, 2, 3])}]
    assert model_key({"source": "tiny"}, examples, "chat", PrepareSettings(precision="float32")) == "1ed2503785a2cb88c97015c0"
