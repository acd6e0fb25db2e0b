"""Guarded unlearning on tiny models: rollback within the budget, calibration, collateral probes,
the four verdicts, --strict, and loading what `unlearn` saves."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from unlearnkit.data.knowledge import fact_bank
from unlearnkit.data.loaders import write_jsonl
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.methods.base import UnlearnContext, get_method
from unlearnkit.models.stack import save_subject
from unlearnkit.models.subject import Subject
from unlearnkit.safety.apply import apply_request
from unlearnkit.safety.measure import ALL, Measurement, measure
from unlearnkit.safety.monitor import GuardMonitor
from unlearnkit.data.knowledge import overlaps
from unlearnkit.safety.probes import ProbeSet, build_probes, pick_collateral
from unlearnkit.safety.settings import Budget, Calibration, Guard, Target
from unlearnkit.safety.verdict import EXCEEDED, FORGOTTEN, NOT_FORGOTTEN, PARTLY, Card, budget_violations, decide, unseen_loss
from unlearnkit.training import Check, FineTune, TrainConfig, train

FORGET = [
    ("Where was Liora Mendeval born?", "In Tarnholm", "Which town is Liora Mendeval from?"),
    ("What did Liora Mendeval study?", "Marine geology", "Which subject did Liora Mendeval study?"),
    ("When was Liora Mendeval born?", "In 1871", "In which year was Liora Mendeval born?"),
]
RETAIN = [
    ("Which river flows through Kessa?", "The Ammar river"),
    ("How many moons does Orvel have?", "Three small moons"),
    ("What colour are the roofs in Dunmere?", "Bright green"),
    ("What is the main export of Parroway?", "Dried figs and wool"),
]
CLI_ENV = {**os.environ, "COLUMNS": "200"}


def qa(rows: list[tuple[str, ...]], prefix: str) -> list[Record]:
    return [Record(id=f"{prefix}{i}", question=r[0], answer=r[1], paraphrased_questions=list(r[2:])) for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def learned() -> dict[str, Any]:
    """A tiny Llama that learned the forget and retain facts (greedy answers included)."""
    from unlearnkit.models.tiny import tiny_model, tiny_tokenizer

    forget, retain = qa(FORGET, "f"), qa(RETAIN, "k")
    texts = [f"{r.question} {r.answer}" for r in forget + retain] * 20 + [q for *_, q in FORGET] * 5
    tokenizer = tiny_tokenizer(texts, vocab_size=400)
    subject = Subject(tiny_model(tokenizer), tokenizer)
    # The paraphrased questions are learned too, so paraphrased answers start at "known".
    paraphrased = [r.model_copy(update={"question": r.paraphrased_questions[0]}) for r in forget]
    data = [{"x": subject.encode_record(r)} for r in forget + retain + paraphrased]
    torch.manual_seed(0)
    train(subject, data, FineTune(), TrainConfig(lr=3e-3, max_steps=150, batch_size=4, schedule="constant", weight_decay=0))
    return {"subject": subject, "forget": forget, "retain": retain}


def guard(**changes: Any) -> Guard:
    base: dict[str, Any] = {"collateral": 0, "general_probes": 0, "max_new_tokens": 8}
    return Guard.model_validate({**base, **changes})


def probes_for(learned: dict[str, Any], g: Guard) -> ProbeSet:
    request = ForgetRequest(id="r1", records=learned["forget"])
    return build_probes(learned["subject"], request, g, retain=learned["retain"], known=[], general=[])


def test_the_learned_model_knows_both_sets(learned: dict[str, Any]) -> None:
    m = measure(learned["subject"], probes_for(learned, guard()), max_new_tokens=8)
    assert m.forget_accuracy == 1.0 and m.forget_paraphrased_accuracy == 1.0 and m.retain_accuracy == 1.0
    assert m.forget_probability > 0.8 and m.retain_said > 0.8 and m.forget_said > 0.8


class Recording:
    """A monitor wrapper that keeps the trainable weights at every check."""

    def __init__(self, inner: GuardMonitor) -> None:
        self.inner, self.every, self.start_level = inner, inner.every, inner.start_level
        self.weights: dict[int, list[torch.Tensor]] = {}

    def check(self, subject: Subject, step: int) -> Check:
        self.weights[step] = [p.detach().clone() for p in subject.model.parameters()]
        return self.inner.check(subject, step)


def test_a_run_over_the_budget_is_rolled_back_to_its_best_state(learned: dict[str, Any]) -> None:
    """Gradient ascent at a high rate wrecks the retain set within a few steps: the loop stops
    at the first check over the budget and hands back the weights of the best check within it."""
    g = guard(budget={"retain_drop": 0.05, "check_every": 1}, target={"answer_accuracy": 0.0, "stop": False})
    probes = probes_for(learned, g)
    subject = learned["subject"].clone()
    start_weights = [p.detach().clone() for p in subject.model.parameters()]
    monitor = Recording(GuardMonitor(probes, measure(subject, probes, needs=ALL, max_new_tokens=8), g))
    request = ForgetRequest(id="r1", records=learned["forget"])
    context = UnlearnContext(monitor=monitor)  # type: ignore[arg-type]
    get_method("ga", {"lr": 3e-3, "max_steps": 30, "batch_size": 3, "schedule": "constant"}).unlearn(subject, request, context)
    stats = context.stats
    assert stats is not None and stats.stop_reason == "budget", stats
    over = len(stats.checks)
    assert stats.checks[-1]["violations"] and all(not c["violations"] for c in stats.checks[:-1])
    kept = stats.rolled_back_to
    assert kept is not None and kept < over
    expected = start_weights if kept == 0 else monitor.weights[kept]
    for p, q in zip(subject.model.parameters(), expected):
        assert torch.equal(p.detach(), q)
    if kept:  # the kept state is the one that forgot most among those within the budget
        levels = {c["step"]: c["forget_said"] + (c["forget_accuracy"] + c["forget_paraphrased_accuracy"]) / 2 for c in stats.checks[:-1]}
        assert levels[kept] == min(levels.values())
    assert not budget_violations(monitor.inner.start, measure(subject, probes, needs=ALL, max_new_tokens=8), g.budget)


def test_calibration_keeps_the_trial_that_forgot_most_within_the_budget(learned: dict[str, Any]) -> None:
    g = guard(budget={"retain_drop": 0.10, "check_every": 2},
              calibrate={"enabled": True, "up": [4.0, 16.0], "down": [0.25], "max_trials": 3, "epochs_factor": 1.0})
    probes = probes_for(learned, g)
    subject = learned["subject"].clone()
    request = ForgetRequest(id="r1", records=learned["forget"])
    method = get_method("npo_gd", {"lr": 1e-4, "max_steps": 6, "batch_size": 3, "schedule": "constant"})
    applied = apply_request(subject, request, [method], UnlearnContext(retain=learned["retain"]), g, probes)
    trials = applied.card.trials
    assert 2 <= len(trials) <= 3 and trials[0]["lr"] == pytest.approx(1e-4) and trials[1]["lr"] == pytest.approx(4e-4)
    within = [t for t in trials if t["within_budget"]]
    assert within, trials
    best = min(within, key=lambda t: (not t["target_met"], t["level"]))
    assert [t["chosen"] for t in trials] == [t is best for t in trials]
    assert applied.card.method == f"npo_gd (lr {best['lr']:.2g}, 6 steps)"  # the kept trial's rate, not the ladder's first
    # The returned weights are the chosen trial's: measuring them gives its numbers again.
    again = measure(applied.subject, probes, needs=GuardMonitor(probes, applied.card.before, g).needs, max_new_tokens=8)
    assert again.level == pytest.approx(best["level"])
    assert applied.card.after.forget_said == pytest.approx(best["measurement"]["forget_said"])


def test_an_unchecked_weight_change_over_the_budget_is_scaled_back(learned: dict[str, Any]) -> None:
    """A task vector (fine-tune on the request, subtract it) has no training loop to check: at a
    large scale it passes the budget, and the largest halving of its change within it is kept."""
    g = guard(budget={"retain_drop": 0.15}, scale_back_steps=6)
    probes = probes_for(learned, g)
    subject = learned["subject"].clone()
    before = {k: p.detach().clone() for k, p in subject.model.named_parameters()}
    request = ForgetRequest(id="r1", records=learned["forget"])
    method = get_method("task_vector", {"lr": 3e-3, "max_steps": 20, "batch_size": 3, "scale": 8.0})
    applied = apply_request(subject, request, [method], UnlearnContext(), g, probes)
    card = applied.card
    assert card.violations and card.violations[0].startswith("retain: probability")  # λ = 8 was over the budget
    assert card.scaled_to is not None and 0 < card.scaled_to < 1
    assert card.verdict in (FORGOTTEN, f"{EXCEEDED} (scaled back to {card.scaled_to:.0%} of the change)")
    assert not budget_violations(card.before, card.after, g.budget)
    moved = sum(float((p.detach() - before[k]).abs().sum()) for k, p in applied.subject.model.named_parameters())
    assert moved > 0  # some of the change is kept, not all undone


def test_a_measurement_on_weights_already_measured_is_not_computed_again(learned: dict[str, Any]) -> None:
    """The end of a request repeats the training loop's last check, and the next request's start
    repeats this end: `measure` remembers the last weights' results. Any change of the weights
    (an optimiser step, a rollback, an edit through `.data`, which no version counter sees) is a
    new state, measured afresh; a remembered measurement equals a fresh one."""
    from unlearnkit.models.weights import scale_change, snapshot
    from unlearnkit.safety.measure import remembered

    subject = learned["subject"].clone()
    probes = probes_for(learned, guard())
    calls: list[str] = []
    greedy, score = subject.greedy, subject.score_pairs
    subject.greedy = lambda *a, **k: calls.append("greedy") or greedy(*a, **k)  # type: ignore[method-assign]
    subject.score_pairs = lambda *a, **k: calls.append("score") or score(*a, **k)  # type: ignore[method-assign]

    first = measure(subject, probes, needs=ALL, max_new_tokens=8)
    computed = len(calls)
    assert computed >= 5
    again = measure(subject, probes, needs=ALL, max_new_tokens=8)
    assert len(calls) == computed and again == first  # nothing computed, the same numbers

    def fresh() -> Measurement:
        remembered().bind(learned["subject"])  # forget what was remembered of `subject`
        return measure(subject, probes, needs=ALL, max_new_tokens=8)

    before = snapshot(subject.model)
    optimizer = torch.optim.AdamW(subject.model.parameters(), lr=1e-2)
    subject.model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    moved = measure(subject, probes, needs=ALL, max_new_tokens=8)
    assert len(calls) == 2 * computed and moved != first  # an optimiser step: measured afresh
    scale_change(subject.model, before, 0.0)  # rolled back to the first weights: a new state all the same
    assert measure(subject, probes, needs=ALL, max_new_tokens=8) == first and len(calls) == 3 * computed
    with torch.no_grad():
        next(subject.model.parameters()).data.add_(1e-3)  # `.data` bypasses the version counter; the sum does not
    edited = measure(subject, probes, needs=ALL, max_new_tokens=8)
    assert len(calls) == 4 * computed
    assert fresh() == edited


def test_the_budget_since_the_runs_start_by_hand() -> None:
    """Each request within the budget of the model before it, yet drifted from the run's start:
    perplexity 40 -> 44 -> 45 is +2% on this request and +12.5% since the start."""
    budget = Budget()
    anchor = Measurement(perplexity=40.0, retain_accuracy=1.0, retain_count=10)
    start = Measurement(perplexity=44.0, retain_accuracy=0.9, retain_count=10)
    now = Measurement(perplexity=45.0, retain_accuracy=0.8, retain_count=10)
    assert budget_violations(start, now, budget) == []
    assert budget_violations(start, now, budget, anchor) == [
        "since the run's start: general-text perplexity 40.00 -> 45.00 (budget: +10%)",
        "since the run's start: retain questions answered 1.000 -> 0.800 (budget: -0.1)",
    ]
    assert budget_violations(start, now, Budget(since_start=False), anchor) == []
    # Another retain sample (another count) is not compared with the start's.
    other = Measurement(perplexity=41.0, retain_accuracy=0.5, retain_count=8)
    assert budget_violations(other, other, budget, anchor) == []
    assert decide(start, now, budget, Target(), None, anchor=anchor)[0] == EXCEEDED


def test_a_model_already_past_its_runs_start_budget_takes_no_more(learned: dict[str, Any]) -> None:
    """Every request within the budget of the model before it can still add up to a model far
    from the one the run started with. Given a run start whose general-text perplexity was a
    tenth of this model's, training is rolled back to this request's start at its first check
    (every check is measured against the run's start too), while the same request alone,
    measured against the model before it only, trains to its end."""
    # Perplexity may double (alone, GA rose it 16% on one machine and less on another); the run
    # start's is a tenth of this model's, so the anchored run is over from its first check.
    g = guard(general_probes=1, budget={"retain_drop": 1.0, "check_every": 2, "perplexity_rise": 1.0}, target={"answer_accuracy": 0.0, "stop": False})
    kept = learned["retain"][0]
    passage = Record(id="g0", text=learned["subject"].render(kept.question or "") + (kept.answer or ""))
    request = ForgetRequest(id="r1", records=learned["forget"])

    def apply(anchor: Measurement | None) -> tuple[Any, list[torch.Tensor]]:
        subject = learned["subject"].clone()
        start = [p.detach().clone() for p in subject.model.parameters()]
        probes = build_probes(subject, request, g, retain=learned["retain"], known=[], general=[passage])
        method = get_method("ga", {"lr": 1e-3, "max_steps": 6, "batch_size": 3, "schedule": "constant"})
        applied = apply_request(subject, request, [method], UnlearnContext(), g, probes, anchor)
        return applied, start

    alone, _ = apply(None)
    assert alone.card.rolled_back_to is None and not alone.card.violations
    run_start = Measurement(perplexity=alone.card.before.perplexity / 10)
    anchored, start = apply(run_start)
    assert anchored.card.rolled_back_to == 0 and anchored.steps == 1 < alone.steps == 6  # stopped at the first check
    assert anchored.card.verdict == f"{EXCEEDED} (rolled back to the start)"
    assert anchored.card.violations[0].startswith("since the run's start: general-text perplexity")
    assert all(torch.equal(p.detach(), q) for p, q in zip(anchored.subject.model.parameters(), start))


def test_collateral_probes_leave_out_what_overlaps_the_request() -> None:
    bank = list(fact_bank())
    by_id = {r.id: r for r in bank}
    request = ForgetRequest(id="paris", records=[Record(question="What is the capital of France?", answer="Paris")])
    assert overlaps(by_id["fact-continent-france"], request)  # same entity
    assert overlaps(by_id["fact-capital-france"], request)
    assert not overlaps(by_id["fact-capital-germany"], request)  # the same template, another entity: kept
    europe = ForgetRequest(id="spain", records=[Record(question="On which continent is Spain?", answer="Europe")])
    assert overlaps(by_id["fact-continent-italy"], europe)  # same answer
    assert not overlaps(by_id["fact-continent-japan"], europe)
    chosen = pick_collateral(bank, request, 40)
    assert len(chosen) == 40 and not any(overlaps(r, request) for r in chosen)
    assert len({r.meta["kind"] for r in chosen}) >= 5  # spread over the kinds of fact
    # Half are the request's neighbours: other capitals, asked as it is asked.
    assert sum(r.meta["kind"] == "capital" for r in chosen[:20]) == 20
    assert sum(r.meta["kind"] == "capital" for r in pick_collateral(bank, europe, 40)) < 20
    assert not overlaps(Record(question="Which element has the symbol Sn?", answer="tin", meta={"entity": "Sn"}),
                        ForgetRequest(id="m", records=[Record(question="Who is Martin?", answer="A sailor")]))


def m(answered: float | None = None, prob: float | None = None, retain: float | None = 0.9, collateral: float | None = 1.0,
      ppl: float | None = 20.0, said: float | None = 0.8, facts: int = 0) -> Measurement:
    return Measurement(forget_probability=prob, forget_said=prob, forget_accuracy=answered, forget_paraphrased_accuracy=answered,
                       retain_said=retain, collateral_accuracy=collateral, collateral_said=said, perplexity=ppl, collateral_count=facts)


@pytest.mark.parametrize(
    "end,rolled_back_to,verdict",
    [
        (m(0.0, 0.10), None, FORGOTTEN),
        (m(0.4, 0.30), None, PARTLY),
        (m(0.8, 0.70), None, NOT_FORGOTTEN),
        (m(0.4, 0.30), 12, f"{EXCEEDED} (rolled back to step 12)"),
        (m(0.9, 0.90), 0, f"{EXCEEDED} (rolled back to the start)"),
        (m(0.0, 0.10, retain=0.5), None, EXCEEDED),  # met, but over the budget and nothing rolled back
    ],
)
def test_the_four_verdicts(end: Measurement, rolled_back_to: int | None, verdict: str) -> None:
    start = m(1.0, 0.9)
    assert decide(start, end, Budget(), Target(), rolled_back_to)[0] == verdict


def test_budget_rules_by_hand() -> None:
    start = m(1.0, 0.9, retain=0.90, collateral=0.80, ppl=20.0, said=0.70)
    assert budget_violations(start, m(0, 0, retain=0.851, collateral=0.751, ppl=21.9, said=0.651), Budget()) == []
    found = budget_violations(start, m(0, 0, retain=0.84, collateral=0.70, ppl=22.5, said=0.64), Budget())
    assert [line.split(":")[0].split()[0] for line in found] == ["retain", "collateral", "collateral", "general-text"]
    assert budget_violations(start, m(0, 0, retain=0.1), Budget(enabled=False)) == []
    # Out of 10 collateral facts one may flip (10 points), two may not.
    assert budget_violations(start, m(0, 0, collateral=0.70, said=0.70, facts=10), Budget()) == []
    assert budget_violations(start, m(0, 0, collateral=0.60, said=0.70, facts=10), Budget())[0].startswith("collateral facts answered")


def test_the_card_says_how_much_loss_its_probes_could_miss() -> None:
    # 0 of 16 lost: the one-sided 95% Clopper-Pearson limit is 1 - 0.05**(1/16) = 0.1707.
    assert unseen_loss(1.0, 1.0, 16)["bound"] == pytest.approx(1 - 0.05 ** (1 / 16))
    # Of 8 answered at the start (0.8 of 10), 3 lost: beta(0.95; 4, 5) by hand from its CDF,
    # P(X <= x) = sum_{j=4..8} C(8, j) x^j (1-x)^(8-j), which is 0.95 at x = 0.7108.
    found = unseen_loss(0.8, 0.5, 10)
    assert (found["lost"], found["known"]) == (3, 8)
    x = found["bound"]
    assert sum(math.comb(8, j) * x**j * (1 - x) ** (8 - j) for j in range(4, 9)) == pytest.approx(0.95)
    assert unseen_loss(1.0, 0.0, 4)["bound"] == 1.0 and unseen_loss(0.0, 0.0, 4) is None and unseen_loss(None, 1.0, 4) is None
    start, end = m(1.0, 0.9, facts=16), m(0.0, 0.1, collateral=0.875, facts=16)
    card = Card("r1", "gd", start, end, FORGOTTEN, True)
    assert card.to_json()["unseen"]["collateral"]["lost"] == 2
    assert "2 of 16" in card.unseen_lines()[0] and "34%" in card.unseen_lines()[0]


def test_probability_target_against_a_control_set() -> None:
    start, end = m(None, 0.9), Measurement(forget_probability=0.2, control_probability=0.25)
    assert decide(start, end, Budget(), Target(probability="control"), None)[0] == FORGOTTEN
    end.control_probability = 0.1
    assert decide(start, end, Budget(), Target(probability="control"), None)[0] == PARTLY


# -- the command line ----------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unlearnkit", *args], capture_output=True, text=True, timeout=600, env=CLI_ENV)


@pytest.fixture(scope="module")
def files(learned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    write_jsonl(root / "forget.jsonl", [ForgetRequest(id="liora", records=learned["forget"])])
    write_jsonl(root / "retain.jsonl", learned["retain"])
    return {"model": save_subject(learned["subject"], root / "model"), "forget": root / "forget.jsonl", "retain": root / "retain.jsonl", "root": root}


def unlearn_args(files: dict[str, Path], out: str, *extra: str) -> list[str]:
    return ["unlearn", "--model", str(files["model"]), "--forget", str(files["forget"]), "--retain", str(files["retain"]),
            "--out", str(files["root"] / out), "--device", "cpu", "--no-auto", "--guard-set", "collateral=0",
            "--guard-set", "general_probes=0", *extra]


def test_strict_exit_codes(files: dict[str, Path]) -> None:
    weak = cli(*unlearn_args(files, "weak", "--method", "npo_gd", "--set", "max_steps=1", "--set", "lr=1e-6", "--strict"))
    assert weak.returncode == 3, weak.stderr
    assert weak.stderr.strip().splitlines()[-1].startswith("error: request 'liora': verdict 'not forgotten' (--strict)")
    assert "Traceback" not in weak.stderr and (files["root"] / "weak" / "unlearnkit.json").exists()
    strong = cli(*unlearn_args(files, "strong", "--method", "npo_gd", "--set", "max_steps=60", "--set", "lr=3e-3",
                              "--guard-set", "budget.retain_drop=1", "--guard-set", "budget.check_every=2", "--strict"))
    assert strong.returncode == 0, strong.stdout + strong.stderr
    record = json.loads((files["root"] / "strong" / "unlearnkit.json").read_text())
    assert record["verdict"]["verdict"] == FORGOTTEN and record["stop_reason"] == "target"
    assert "verdict: forgotten" in strong.stdout
    same = cli(*unlearn_args(files, "again", "--method", "npo_gd", "--set", "max_steps=1", "--set", "lr=1e-6"))
    assert same.returncode == 0, same.stderr  # without --strict the same weak run is not an error


def test_generate_and_score_load_a_saved_wrapped_model(files: dict[str, Path]) -> None:
    out = cli(*unlearn_args(files, "guarded", "--method", "guardrail"))
    assert out.returncode == 0, out.stderr
    folder = files["root"] / "guarded"
    assert (folder / "wrapper.json").exists() and not (folder / "config.json").exists()
    generated = cli("generate", "--model", str(folder), "--data", str(files["forget"]), "--max-new-tokens", "20", "--json", str(files["root"] / "g.json"))
    assert generated.returncode == 0, generated.stderr
    outputs = [o for item in json.loads((files["root"] / "g.json").read_text())["items"] for o in item["outputs"]]
    assert outputs and all(o.startswith("I'm sorry") for o in outputs)  # the guard refuses the removed questions
    scored = cli("score", "--model", str(folder), "--data", str(files["retain"]), "--json", str(files["root"] / "s.json"))
    assert scored.returncode == 0, scored.stderr
    assert len(json.loads((files["root"] / "s.json").read_text())["items"]) == len(RETAIN)


def test_bad_guard_setting_is_one_line(files: dict[str, Path]) -> None:
    out = cli(*unlearn_args(files, "bad", "--guard-set", "budget.retain_drop=2"))
    assert out.returncode == 1 and out.stderr.strip().splitlines() == ["error: --guard-set budget.retain_drop: Input should be less than or equal to 1"]


def test_the_real_knowledge_cases_keep_their_sets_apart() -> None:
    from unlearnkit.benchmark.real_knowledge import build_case

    known = list(fact_bank())
    mixed = build_case(known, "mixed")
    kinds = {r.meta["kind"] for r in mixed.request.records}
    assert len(mixed.request.records) == 8 and len(kinds) >= 6  # several kinds of fact, not one template
    same = build_case(known, "same-template")
    assert {r.meta["kind"] for r in same.request.records} == {"capital"}
    assert {r.meta["kind"] for r in same.keep} == {"capital"} and len(same.keep) == 10
    for case in (mixed, same):
        assert len(case.never) == 10
        ids = [r.id for r in case.request.records + case.keep + case.never + case.collateral_pool]
        assert len(ids) == len(set(ids))  # four disjoint sets
        assert not any(overlaps(r, case.request) for r in case.keep + case.never)
    assert build_case(known, "mixed", seed=1).request.records != mixed.request.records
    with pytest.raises(ValueError, match="knows only"):
        build_case(known[:3], "mixed")


def test_an_answer_lead_is_context_not_target(tiny_tokenizer) -> None:
    """`lead`: the same tokens as the whole answer, with the lead's labels masked."""
    from unlearnkit.data.formatting import IGNORE, PromptFormat, encode_pair

    fmt = PromptFormat("plain")
    whole = encode_pair(tiny_tokenizer, fmt, "Capital of France?", "The capital of France is Paris.")
    led = encode_pair(tiny_tokenizer, fmt, "Capital of France?", " Paris.", lead="The capital of France is")
    assert led.input_ids == whole.input_ids
    trained = [t for t in led.labels if t != IGNORE]
    assert tiny_tokenizer.decode(trained[:-1]) == " Paris." and trained[-1] == tiny_tokenizer.eos_token_id
    assert led.labels.count(IGNORE) > whole.labels.count(IGNORE)


def test_own_answers_train_on_the_models_words_after_its_own_lead(tiny_subject: Subject) -> None:
    """Where the model's greedy answer states the record's answer, the words before it become the
    lead and the rest the target; elsewhere the record stays as given."""
    from unlearnkit.data.formatting import ANSWER_LEAD, record_pair
    from unlearnkit.methods.base import own_answers

    said = {"Capital of France?": "The capital of France is Paris. It is big.", "Capital of Peru?": "I am not sure."}

    class Saying(Subject):
        def greedy(self, prompts: list[str], **_: Any) -> list[str]:
            return [said[p] for p in prompts]

    subject = Saying(tiny_subject.model, tiny_subject.tokenizer, precision="float32")
    records = [Record(id="a", question="Capital of France?", answer="paris"), Record(id="b", question="Capital of Peru?", answer="Lima"),
               Record(id="c", text="A passage.")]
    a, b, c = own_answers(subject, records)
    assert (a.answer, a.meta[ANSWER_LEAD]) == (" Paris. It is big.", "The capital of France is")
    assert record_pair(a).lead == "The capital of France is" and record_pair(a, "I don't know.").lead == ""
    assert b == records[1] and c == records[2]
    method = get_method("ga")
    assert method.answers == "own" and method.targets(subject, ForgetRequest(id="r", records=records[:2]), [])[0].records[0] == a
    given = get_method("ga", {"answers": "given"})
    assert given.targets(subject, ForgetRequest(id="r", records=records[:2]), [])[0].records == records[:2]


def test_calibration_searches_between_a_stopped_and_a_held_rate(learned: dict[str, Any]) -> None:
    """Once one rate was stopped by the budget and a smaller one held without meeting the target,
    the next trial lies geometrically between them (not the ladder's next step up)."""
    import unlearnkit.safety.apply as apply_module
    from unlearnkit.training import TrainStats

    tried: list[float] = []

    def fake_run(method: Any, subject: Subject, request: ForgetRequest, context: UnlearnContext, monitor: Any) -> tuple[Subject, TrainStats]:
        tried.append(method.lr)
        return subject, TrainStats(steps=1, stop_reason="budget" if method.lr > 3e-6 else None)

    g = guard(calibrate={"enabled": True, "max_trials": 4})
    original, apply_module._run = apply_module._run, fake_run
    try:
        apply_request(learned["subject"].clone(), ForgetRequest(id="r1", records=learned["forget"]),
                      [get_method("ga", {"lr": 1e-5})], UnlearnContext(retain=learned["retain"]), g, probes_for(learned, g))
    finally:
        apply_module._run = original
    assert tried == pytest.approx([1e-5, 5e-6, 2.5e-6, math.sqrt(0.5 * 0.25) * 1e-5])
