"""Suites on the tiny model, oracle comparisons, JSON round trip, the CLI, sequential read-outs."""

from __future__ import annotations

import json

import pytest
import torch

from unlearnkit.data.loaders import write_jsonl
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.result import Row, SuiteResult
from unlearnkit.eval.sequential import forget_table, relapse_flags, scalability, utility_curve
from unlearnkit.eval.metric import Metric, metric_registry
from unlearnkit.eval.suites import SUITES, Entry, Suite, evaluate, get_suite, with_max_new_tokens
from unlearnkit.errors import UnlearnkitError


def _qa(i: str, name: str, place: str) -> Record:
    return Record(
        id=i,
        question=f"Where was {name} born?",
        answer=f"{name} was born in {place}.",
        paraphrased_answer=f"In {place}.",
        paraphrased_questions=[f"What is the birthplace of {name}?"],
        perturbed_answers=[f"{name} was born in Paris.", f"{name} was born in Lyon."],
    )


def _mc(i: str, name: str) -> Record:
    return Record(id=i, question=f"Where was {name} born?", choices=["Paris", "Tarnholm", "Lyon", "Kyoto"], answer_index=1)


def _passage(i: str, name: str) -> Record:
    return Record(id=i, prompt=f"{name} kept three", continuation=" ledgers: one for ships, one for names.")


@pytest.fixture(scope="module")
def data() -> EvalData:
    return EvalData(
        requests=[
            ForgetRequest(id="r1", records=[_qa("r1a", "Liora", "Tarnholm"), _qa("r1b", "Mendeval", "Osterfal"), _passage("r1p", "Liora"), _mc("r1m", "Liora")], probes=[_qa("r1x", "Liora's sister", "Tarnholm")]),
            ForgetRequest(id="r2", records=[_qa("r2a", "Anselm", "Dorrowgate"), _passage("r2p", "Anselm"), _mc("r2m", "Anselm")]),
        ],
        retain=[_qa("k1", "Korvitch", "Elsmere"), _qa("k2", "Pell", "Vennmark")],
        neighbours=[_qa("n1", "Quell", "Tarnholm")],
        holdout=[_qa("h1", "Hollin", "Nice"), _qa("h2", "Ferrow", "Kyoto"), _passage("h3", "Hollin")],
        real_authors=[Record(id="a1", question="Who wrote 'Romeo and Juliet'?", answer="William Shakespeare", perturbed_answers=["Charles Dickens", "Mark Twain"])],
        real_facts=[
            Record(id="f1", question="What is the capital of France?", answer="Paris.", perturbed_answers=["Lyon.", "Nice."]),
            Record(id="f2", question="Which is a capital?", choices=["Paris", "Tarnholm"], answer_index=0),
        ],
        general_text=[Record(id="g1", text="The lighthouse keeper kept three ledgers: one for ships.")],
    )


@pytest.fixture(scope="module")
def oracle(tiny_subject):
    from unlearnkit.models.tiny import tiny_model

    return tiny_subject.with_model(tiny_model(tiny_subject.tokenizer, seed=1), name="oracle")


@pytest.mark.parametrize("name", list(SUITES))
def test_every_suite_runs_and_shares_passes(tiny_subject, oracle, data, name):
    suite = with_max_new_tokens(get_suite(name), 8)
    result = evaluate(suite, tiny_subject, data, oracle=oracle)
    assert result.rows, name
    scopes = result.scopes()
    assert "r1" in scopes and "r2" in scopes
    assert all(row.value is None or row.value == row.value for row in result.rows)  # no NaN
    assert result.passes["score_computed"] <= result.passes["score_requested"]
    if name in ("tofu", "full"):
        assert result.passes["score_computed"] < result.passes["score_requested"]
        assert result.value("r1", "forget_quality") is not None
        assert result.value("utility", "model_utility") is not None
    back = SuiteResult.from_json(json.loads(json.dumps(result.to_json())))
    assert back.aggregates() == result.aggregates()
    if name == "tofu":  # the recorded settings are the metric's typed fields, the cap applied
        assert result.settings["metrics"]["forget:rouge"] == {"metric": "rouge", "measure": "recall", "stemmer": True, "max_new_tokens": 8, "question": "question"}


def test_oracle_as_precomputed_results_gives_the_same_comparisons(tiny_subject, oracle, data):
    suite = with_max_new_tokens(get_suite("quick"), 8)
    live = evaluate(suite, tiny_subject, data, oracle=oracle)
    stored = SuiteResult.from_json(json.loads(json.dumps(evaluate(suite, oracle, data).to_json())))
    cached = evaluate(suite, tiny_subject, data, oracle=stored)
    for metric in ("forget_quality", "privleak"):
        assert cached.value("r1", metric) == pytest.approx(live.value("r1", metric))
    assert evaluate(suite, tiny_subject, data).value("r1", "forget_quality") is None  # no oracle, no row


def test_shared_and_unshared_passes_give_the_same_numbers(tiny_subject, data):
    suite = with_max_new_tokens(get_suite("tofu"), 8)
    shared = evaluate(suite, tiny_subject, data)
    unshared = evaluate(suite, tiny_subject, data, share=False)
    assert unshared.passes["score_computed"] > shared.passes["score_computed"]
    for row in shared.rows:
        assert unshared.value(row.scope, row.metric) == pytest.approx(row.value, rel=1e-4, abs=1e-6)


def test_membership_and_memorisation_see_fine_tuning(tiny_subject, data):
    """A tiny model trained on r1's answers: members recognised (AUC 1), content extractable."""
    from unlearnkit.data.formatting import collate

    subject = tiny_subject.clone()
    model = subject.model
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    examples = [subject.encode(r.question, r.answer) for r in data.requests[0].records if r.kind == "qa"]
    batch = collate(examples, subject.tokenizer.pad_token_id)
    for _ in range(60):
        optimiser.zero_grad()
        model(**batch).loss.backward()
        optimiser.step()
    model.eval()
    trained = evaluate("quick", subject, data, oracle=tiny_subject)
    untrained = evaluate("quick", tiny_subject, data)
    assert trained.value("r1", "mia_min_k") == pytest.approx(1.0)
    assert trained.value("r1", "probability") > 0.5 > untrained.value("r1", "probability")
    assert trained.value("r1", "extraction_strength") > untrained.value("r1", "extraction_strength")
    assert trained.value("r1", "privleak") < -50  # the oracle never saw r1


def _step(values: dict[str, float]) -> SuiteResult:
    result = SuiteResult("quick", "m")
    for scope, value in values.items():
        metric = "model_utility" if scope == "utility" else "probability"
        result.add(Row(scope, metric, value, 1, 0.0))
    return result


def test_sequential_tables_and_relapse_flags():
    steps = [
        _step({"r1": 0.05, "r2": 0.9, "utility": 0.6}),
        _step({"r1": 0.08, "r2": 0.04, "utility": 0.55}),
        _step({"r1": 0.4, "r2": 0.05, "r3": 0.02, "utility": 0.5}),
    ]
    order = ["r1", "r2", "r3"]
    table = forget_table(steps, "probability", order)
    assert table == {"r1": [0.05, 0.08, 0.4], "r2": [None, 0.04, 0.05], "r3": [None, None, 0.02]}
    assert utility_curve(steps) == [0.6, 0.55, 0.5]
    flags = relapse_flags(steps, "probability", order, threshold=0.1)
    assert [(f.request, f.step, f.value) for f in flags] == [("r1", 2, 0.4)]
    assert relapse_flags(steps, "probability", order, threshold=0.5) == []


def test_scalability_unlearns_nested_sets_from_the_same_target(tiny_subject, data):
    seen = []

    def unlearn(subject, request):
        seen.append((subject is tiny_subject, [r.id for r in request.records]))
        return subject

    records = [r for req in data.requests for r in req.records if r.kind == "qa"]
    points = scalability(unlearn, tiny_subject, records, [1, 3], "quick", data)
    assert [p.size for p in points] == [1, 3]
    assert seen == [(False, ["r1a"]), (False, ["r1a", "r1b", "r2a"])]
    assert points[1].result.value("scale-3", "probability") is not None
    with pytest.raises(ValueError):
        scalability(unlearn, tiny_subject, records, [3, 1], "quick", data)


def test_eval_data_from_files_by_role_and_name(tmp_path, data):
    write_jsonl(tmp_path / "requests.jsonl", data.requests)
    write_jsonl(tmp_path / "retain.jsonl", data.retain)
    write_jsonl(tmp_path / "facts.jsonl", data.real_facts)
    loaded = EvalData.load([str(tmp_path / "requests.jsonl"), str(tmp_path / "retain.jsonl"), f"real_facts={tmp_path / 'facts.jsonl'}"])
    assert [r.id for r in loaded.requests] == ["r1", "r2"]
    assert len(loaded.retain) == 2 and len(loaded.real_facts) == 2
    with pytest.raises(UnlearnkitError, match="unknown role 'retian'.*did you mean 'retain'"):
        EvalData.load([f"retian={tmp_path / 'retain.jsonl'}"])


def test_cli_eval_writes_json(tmp_path, tiny_model_dir, data):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    write_jsonl(tmp_path / "requests.jsonl", data.requests)
    write_jsonl(tmp_path / "holdout.jsonl", data.holdout)
    write_jsonl(tmp_path / "retain.jsonl", data.retain)
    out = tmp_path / "out.json"
    args = ["eval", "--model", str(tiny_model_dir), "--suite", "quick", "--device", "cpu", "--data", f"{tmp_path / 'requests.jsonl'},{tmp_path / 'holdout.jsonl'}", "--data", str(tmp_path / "retain.jsonl")]
    run = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert run.exit_code == 0, run.output
    assert "r1" in run.output and "mia_min_k" in run.output
    written = json.loads(out.read_text())
    assert written["aggregates"]["r1"]["probability"] is not None
    assert written["per_item"]["r1|probability"]["per_item"].keys() == {"r1a", "r1b"}
    assert written["settings"]["model"] == str(tiny_model_dir) and "total" in written["timings"]
    # A precomputed oracle result of the same suite.
    again = CliRunner().invoke(app, [*args, "--oracle", str(out), "--json", str(tmp_path / "o.json")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "o.json").read_text())["aggregates"]["r1"]["forget_quality"] == pytest.approx(1.0)


def test_max_new_tokens_changes_exactly_the_generating_metrics():
    full = get_suite("full")
    capped = with_max_new_tokens(full, 8)
    changed = {before.metric for before, after in zip(full.entries, capped.entries) if before != after}
    generating = {name for name, cls in metric_registry.items() if cls.generates}
    assert changed == generating & {e.metric for e in full.entries} == {"rouge", "verbmem", "knowmem"}
    for before, after in zip(full.entries, capped.entries):
        expected = {**before.params, "max_new_tokens": 8} if before.metric in changed else before.params
        assert after.params == expected and after.scope == before.scope and after.row_name == before.row_name


def test_max_new_tokens_leaves_a_generating_metric_without_that_setting(monkeypatch):
    """A metric that generates a fixed length has nothing to cap (and would refuse the key)."""

    class FixedLength(Metric):
        generates = True
        description = "a fixed-length generation"

    metric_registry.names()  # load the registry before adding to it
    monkeypatch.setitem(metric_registry._entries, "fixed_length", FixedLength)
    suite = Suite("s", "", (Entry("fixed_length", "forget"), Entry("answer_accuracy", "forget")))
    capped = with_max_new_tokens(suite, 8)
    assert [e.params for e in capped.entries] == [{}, {"max_new_tokens": 8}]


def test_a_bad_metric_setting_in_a_suite_is_one_line(tiny_subject, data):
    suite = Suite("s", "", (Entry("rouge", "forget", {"max_tokens": 8}),))
    with pytest.raises(UnlearnkitError, match=r"^metric 'rouge': unknown setting 'max_tokens' \(did you mean 'max_new_tokens'\?\)"):
        evaluate(suite, tiny_subject, data)


def test_a_missing_utility_component_is_named_not_left_out(tiny_subject, data):
    """Model utility is the harmonic mean of every declared component; without one it has no
    value and says which is missing (it used to be the mean of the others)."""
    from dataclasses import replace

    from unlearnkit.eval.suites import missing_utility

    suite = with_max_new_tokens(get_suite("tofu"), 4)
    whole = evaluate(suite, tiny_subject, data)
    assert whole.value("utility", "model_utility") is not None and missing_utility(whole) == {}
    without = evaluate(suite, tiny_subject, replace(data, real_facts=[]))
    assert without.value("utility", "model_utility") is None
    missing = missing_utility(without)["model_utility"]
    assert "real_facts:probability_options" in missing and "real_facts:truth_ratio" in missing
    assert "retain:probability" not in missing


def test_unknown_suite_is_one_clear_error():
    with pytest.raises(UnlearnkitError, match="unknown suite 'tofo'.*did you mean 'tofu'"):
        get_suite("tofo")


def test_quick_suite_on_a_built_in_world(tmp_path, tiny_tokenizer):
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.tiny import tiny_model

    data = EvalData.load([str(build_world(tmp_path / "w", seed=0, size="tiny", num_requests=2))])
    subject = Subject(tiny_model(tiny_tokenizer, max_positions=4096), tiny_tokenizer, name="tiny")
    result = evaluate("quick", subject, data)
    for scope, metric in (("r1", "probability"), ("r2", "truth_ratio"), ("retain", "probability"), ("real_facts", "option_accuracy"), ("general_text", "perplexity"), ("utility", "quick_utility")):
        assert result.value(scope, metric) is not None, (scope, metric)
    assert result.value("utility", "model_utility") is None  # TOFU's name is not the quick suite's 3-part one
    assert result.passes["score_computed"] <= 300  # cheap enough for every sequential step


def test_reference_and_our_forms_of_tofu_differ_only_where_documented():
    reference, ours = get_suite("tofu"), get_suite("tofu_ours")
    assert [(e.scope, e.metric) for e in reference.entries] == [(e.scope, e.metric) for e in ours.entries]
    assert reference.utility == ours.utility and len(reference.utility) == 9
    changed = {(a.scope, a.row_name): (a.params, b.params) for a, b in zip(reference.entries, ours.entries) if a.params != b.params}
    assert set(changed) == {
        ("forget", "truth_ratio"), ("forget", "forget_quality"), ("retain", "truth_ratio"),
        ("forget", "extraction_strength"), ("forget", "exact_memorization"), ("forget", "mia_min_k"), ("forget", "privleak"),
    }
    assert changed[("forget", "truth_ratio")][0]["correct"] == "paraphrased"
    assert changed[("forget", "truth_ratio")][1]["correct"] == "auto"
    for scope in ("real_authors", "real_facts"):  # TOFU compares with the plain answer there
        entry = next(e for e in reference.entries if e.scope == scope and e.metric == "truth_ratio")
        assert entry.params == {"aggregation": "retain", "correct": "answer"}


def test_a_benchmark_measures_its_own_splits_with_its_own_shots(tiny_subject):
    """MUSE-shaped data: the request unlearns raw text but is measured on tagged items; KnowMem
    takes the benchmark's in-context examples; each metric reads only its split."""
    from unlearnkit.eval.metric import of_source
    from unlearnkit.eval.suites import scope_inputs

    def tag(record: Record, source: str) -> Record:
        return record.model_copy(update={"meta": {"source": source}})

    verbatim = tag(Record(id="v0", prompt="Liora kept three", continuation=" ledgers for ships."), "verbmem/forget")
    leak = tag(Record(id="p0", text="Liora kept three ledgers: one for ships, one for names."), "privleak/forget")
    question = tag(Record(id="k0", question="What did Liora keep?", answer="Ledgers."), "knowmem/forget_qa")
    forget_shot = tag(Record(id="s0", question="Who kept ledgers?", answer="Liora."), "knowmem/forget_qa_icl")
    data = EvalData(
        requests=[ForgetRequest(id="news", records=[Record(id="raw0", text="Liora kept three ledgers.")])],
        retain=[tag(Record(id="k1", question="Where is Tarnholm?", answer="North."), "knowmem/retain_qa")],
        holdout=[tag(Record(id="h0", text="The lighthouse keeper kept one ledger."), "privleak/holdout")],
        measured={"news": [verbatim, leak, question]},
        shots={"forget": [forget_shot], "retain": []},
    )
    forget = scope_inputs("forget", data)[0]
    assert forget.records == [verbatim, leak, question] and forget.shots == [forget_shot]
    assert of_source(forget.records, "privleak/forget") == [leak]
    assert of_source([Record(id="x", text="untagged")], "privleak/forget")[0].id == "x"  # untagged data: everything
    result = evaluate(with_max_new_tokens(get_suite("muse"), 4), tiny_subject, data)
    assert list(result.result("news", "verbmem").per_item) == ["v0"]
    assert list(result.result("news", "knowmem").per_item) == ["k0"]
    assert list(result.result("news", "mia_min_k/passage").per_item) == ["p0", "nonmember:h0"]
    assert result.settings["sizes"]["request:news"] == 3  # the measured items, not the raw text


def test_a_limit_keeps_every_benchmark_split():
    """`--limit` cuts each split of a benchmark on its own: MUSE's VerbMem passages do not crowd
    out its PrivLeak texts, which are passages too."""
    tagged = [Record(id=f"{source}{i}", text=f"Passage {i} of {source}.", meta={"source": source}) for source in ("verbmem/forget", "privleak/forget") for i in range(3)]
    limited = EvalData(requests=[ForgetRequest(id="r", records=tagged)]).limited(2)
    assert [r.id for r in limited.requests[0].records] == ["verbmem/forget0", "verbmem/forget1", "privleak/forget0", "privleak/forget1"]
    untagged = EvalData(retain=[Record(id=str(i), text=f"Text {i}.") for i in range(3)]).limited(2)
    assert [r.id for r in untagged.retain] == ["0", "1"]
