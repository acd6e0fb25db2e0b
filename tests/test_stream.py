"""A long request stream on a tiny model: 20 requests of the stream world with sparse oracles,
the rotating sample of earlier requests, the holdout reference, coalescing and the budget."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from scipy.stats import ks_2samp

from sequential_helpers import learned_model_dir, write_data
from unlearnkit.benchmark.world import build_world
from unlearnkit.data.world import load_world
from unlearnkit.engine.ledger import Ledger
from unlearnkit.engine.rotation import schedule
from unlearnkit.engine.runner import run_plan
from unlearnkit.eval.result import SuiteResult
from unlearnkit.models.stack import load_subject
from unlearnkit.plan import PlanError, load_plan, parse_plan

REQUESTS = 20
ORACLES = [5, 10, 20]
PER_SET, EARLIER, FULL_EVERY = 2, 6, 8  # 2 questions + 1 biography per request: 2 earlier requests a step
ITEMS = 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("UNLEARNKIT_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("stream") / "world", seed=0, size="stream", num_requests=REQUESTS)


@pytest.fixture(scope="module")
def base_model(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama with a tokenizer of the world's words, saved where a plan can name it."""
    from unlearnkit.benchmark.prepare import rehearsal_for
    from unlearnkit.models.stack import save_subject
    from unlearnkit.models.subject import Subject
    from unlearnkit.models.tiny import tiny_model, tiny_tokenizer

    loaded = load_world(world)
    records = [*loaded.trained(), *loaded.holdout, *loaded.real_facts, *rehearsal_for(loaded)]
    corpus = [r.passage_text if r.kind == "passage" else f"{r.question} {r.answer} {' '.join(r.perturbed_answers)}" for r in records]
    tokenizer = tiny_tokenizer(corpus, vocab_size=800)
    return save_subject(Subject(tiny_model(tokenizer, max_positions=512), tokenizer), tmp_path_factory.mktemp("base") / "model")


def stream_plan(folder: Path, world: Path, model: Path, **changes: object) -> Path:
    plan = {
        "model": str(model),
        "method": {"name": "ga", "settings": {"max_steps": 1, "lr": 1e-4, "batch_size": 8}},
        "requests": [{"world": str(world)}],
        "prepare": {"oracles": ORACLES, "max_steps": 8, "lr": 3e-3, "batch_size": 16, "precision": "float32"},
        "evaluation": {"suite": "quick", "per_set": PER_SET, "earlier": EARLIER, "full_every": FULL_EVERY, "holdout_reference": True},
        "relapse": {"metric": "probability", "threshold": 0.5},
        "guard": {"enabled": False},
        "checkpoints": {"keep": "last:1"},
        "final": {"references": True, "report": True},
        "output": "run",
        "seed": 1,
        "precision": "float32",  # scores compared with fp32 hand computations below
        **changes,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


@pytest.fixture(scope="module")
def stream_run(cache: Path, world: Path, base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_plan(load_plan(stream_plan(tmp_path_factory.mktemp("run"), world, base_model)))


def rows(run: Path) -> dict[tuple[int, str, str], float | None]:
    ledger = Ledger(run / "ledger.sqlite")
    out = {(r["step"], r["scope"], r["name"]): r["value"] for r in ledger.metrics()}
    ledger.close()
    return out


def measured_steps(run: Path) -> dict[str, list[int]]:
    """Request id -> the steps whose evaluation measured it."""
    seen: dict[str, list[int]] = {}
    for step, scope, name in sorted(rows(run)):
        if name == "probability" and re.fullmatch(r"r\d+", scope):
            seen.setdefault(scope, []).append(step)
    return seen


FULL_STEPS = sorted({*ORACLES, *range(FULL_EVERY, REQUESTS + 1, FULL_EVERY)})


# -- the stream ----------------------------------------------------------------------------------
def test_every_request_is_in_the_ledger_exactly_once(stream_run: Path) -> None:
    ledger = Ledger(stream_run / "ledger.sqlite")
    assert ledger.check() == []
    assert ledger.request_steps() == {f"r{i}": i for i in range(1, REQUESTS + 1)}
    assert [s.step for s in ledger.steps()] == list(range(1, REQUESTS + 1)) and all(s.evaluated for s in ledger.steps())
    assert {r["status"] for r in ledger.requests()} == {"verified"}
    ledger.close()
    results = json.loads((stream_run / "results.json").read_text())
    assert [r["step"] for r in results["requests"]] == list(range(1, REQUESTS + 1))


def test_evaluation_cost_per_step_is_flat_in_the_number_of_earlier_requests(stream_run: Path) -> None:
    values = rows(stream_run)
    cost = {step: values[(step, "evaluation", "score_items")] for step in range(1, REQUESTS + 1)}
    measured = {step: values[(step, "evaluation", "requests")] for step in range(1, REQUESTS + 1)}
    rotating = [s for s in range(3, REQUESTS + 1) if s not in FULL_STEPS]
    # From step 3 on a rotating step measures its own request and two earlier ones, whether 2 or
    # 18 came before, and scores the same number of items (one request's worth of variation).
    assert {measured[s] for s in rotating} == {3.0}
    assert {values[(s, "evaluation", "earlier")] for s in rotating} == {2.0}
    assert max(cost[s] for s in rotating) - min(cost[s] for s in rotating) <= cost[1]
    # A full step measures every request so far, and its cost grows with them.
    for step in FULL_STEPS:
        assert measured[step] == step and values[(step, "evaluation", "full")] == 1.0
    assert cost[REQUESTS] > 4 * max(cost[s] for s in rotating)


def test_the_rotation_covers_every_earlier_request_within_its_bound(stream_run: Path) -> None:
    seen = measured_steps(stream_run)
    assert sorted(seen, key=lambda r: int(r[1:])) == [f"r{i}" for i in range(1, REQUESTS + 1)]
    for request, steps in seen.items():
        own = int(request[1:])
        assert steps[0] == own and steps[-1] == REQUESTS  # measured fully at its own step and at the end
        for before, after in zip(steps, steps[1:]):
            # R earlier requests of 3 items each, 6 items a step: each waits at most ceil(3R/6).
            assert after - before <= max(1, math.ceil((after - 1) * ITEMS / EARLIER)), (request, steps)


def test_rotation_schedule_by_hand() -> None:
    own = {f"r{i}": i for i in range(1, 11)}
    items = {r: 2 for r in own}
    plan = schedule(own, items, budget=4, full=[8], seed=0, upto=10)
    assert plan[1] == [] and plan[2] == ["r1"] and sorted(plan[3]) == ["r1", "r2"]
    assert all(len(plan[t]) == 2 for t in range(3, 11) if t != 8) and sorted(plan[8]) == [f"r{i}" for i in range(1, 8)]
    # Least recently measured first: r1..r3 were all last measured at step 3, so step 4 takes two
    # of them (in the seeded order) and step 5 the one left over before r4 (measured at step 4).
    (left,) = {"r1", "r2", "r3"} - set(plan[4])
    assert len(plan[4]) == 2 and plan[5][0] == left
    assert plan == schedule(own, items, budget=4, full=[8], seed=0, upto=10)  # a pure function
    ties = [schedule({"a": 1, "b": 1, "c": 1, "d": 2}, {k: 1 for k in "abcd"}, budget=1, full=[], seed=s, upto=2)[2] for s in range(8)]
    assert len({tuple(t) for t in ties}) > 1  # ties among requests last seen together follow the seed
    assert schedule(own, items, budget=None, full=[], seed=0, upto=4)[4] == ["r1", "r2", "r3"]
    big = schedule(own, {r: 5 for r in own}, budget=4, full=[], seed=0, upto=4)
    assert all(len(big[t]) == 1 for t in (2, 3, 4))  # a request larger than the budget still goes, alone


def test_sparse_oracles_are_matched_to_their_steps(stream_run: Path) -> None:
    references = json.loads((stream_run / "references.json").read_text())
    assert sorted(int(s) for s in references["oracles"]) == ORACLES
    assert "probability" in references["holdout"]
    values, measured = rows(stream_run), measured_steps(stream_run)["r1"]
    for step in range(1, REQUESTS + 1):  # against an oracle where one exists, against the holdout wherever measured
        assert ((step, "r1", "forget_quality") in values) == (step in ORACLES)
        assert ((step, "r1", "forget_quality/holdout") in values) == (step in measured)


def test_the_holdout_reference_is_computed_as_documented(stream_run: Path, world: Path) -> None:
    """The start model's (the target's) mean answer probability on the holdout questions, and its
    truth ratios there, with the suite's `correct: auto` (docs/sequential.md)."""
    from unlearnkit.benchmark.prepare import PrepareSettings, prepare_world

    plan = load_plan(stream_run.parent / "plan.yaml")
    target = load_subject(prepare_world(plan.model, world, PrepareSettings(**plan.prepare)).target, dtype="float32", device="cpu", precision="float32")
    holdout = [r for r in load_world(world).holdout if r.kind == "qa"]
    reference = SuiteResult.load(stream_run / "eval" / "holdout-reference.json")
    probability = target.score([r.question for r in holdout], [r.answer for r in holdout]).prob.mean().item()
    assert reference.value("holdout", "probability") == pytest.approx(probability, rel=1e-5)
    ratios = []
    for r in holdout:
        wrong = sum(len(w.split()) for w in r.perturbed_answers) / len(r.perturbed_answers)
        correct = r.answer if abs(len(r.answer.split()) - wrong) < abs(len(r.paraphrased_answer.split()) - wrong) else r.paraphrased_answer
        nll = target.score([r.question] * 4, [correct, *r.perturbed_answers]).mean_nll.tolist()
        ratios.append(math.exp(-sum(nll[1:]) / 3) / (math.exp(-nll[0]) + 1e-10))
    stored = reference.result("holdout", "truth_ratio/forget_quality")
    assert list(stored.per_item.values()) == pytest.approx(ratios, rel=1e-4)
    # A step's forget quality against it: the KS test of the request's truth ratios against those.
    step = SuiteResult.load(stream_run / "eval" / "step-007.json")
    own = [v for v in step.result("r7", "truth_ratio").per_item.values()]
    assert step.value("r7", "forget_quality/holdout") == pytest.approx(ks_2samp(own, ratios).pvalue, rel=1e-4)


def test_the_holdout_reference_beside_each_oracle_is_stored(stream_run: Path) -> None:
    check = json.loads((stream_run / "holdout_check.json").read_text())
    assert sorted(int(s) for s in check["steps"]) == ORACLES
    for step, entry in check["steps"].items():
        assert entry["summary"]["requests"] == int(step) == len(entry["requests"])
        for row in entry["requests"]:
            assert row["oracle_probability"] is not None and row["holdout_probability"] is not None
            assert 0.0 <= row["forget_quality_oracle"] <= 1.0 and 0.0 <= row["forget_quality_holdout"] <= 1.0
        assert 0.0 <= entry["summary"]["same_verdict"] <= 1.0


def test_the_stream_report_has_the_heatmap_and_relapse_table(stream_run: Path) -> None:
    html = (stream_run / "report.html").read_text()
    assert 'id="heatmap"' in html and 'id="relapses"' in html and "utility" in html


# -- coalescing ------------------------------------------------------------------------------------
def test_coalescing_records_which_requests_each_step_applied(cache: Path, world: Path, base_model: Path, tmp_path: Path) -> None:
    plan = stream_plan(tmp_path, world, base_model, requests=[{"world": str(world), "first": 8}], coalesce=3, prepare=None,
                       evaluation={"suite": "quick", "per_set": PER_SET, "earlier": EARLIER}, final={"report": False})
    run = run_plan(load_plan(plan))
    ledger = Ledger(run / "ledger.sqlite")
    assert ledger.check() == []
    assert ledger.request_steps() == {"r1": 1, "r2": 1, "r3": 1, "r4": 2, "r5": 2, "r6": 2, "r7": 3, "r8": 3}
    assert [s.request_id for s in ledger.steps()] == ["r1", "r4", "r7"]  # a step's row names its first request
    values = rows(run)
    for step, group in ((1, ["r1", "r2", "r3"]), (2, ["r4", "r5", "r6"]), (3, ["r7", "r8"])):
        for request in group:  # every request measured on its own scope by the step that applied it
            assert (step, request, "probability") in values
    assert values[(3, "evaluation", "requests")] == 8  # the last step measures everything
    assert not any(name.endswith("/holdout") for _, _, name in values)  # the holdout reference is asked for by the plan
    ledger.close()
    meta = json.loads((run / "checkpoints" / "step-003" / "unlearnkit.json").read_text())
    assert meta["requests"] == ["r7", "r8"]


def test_a_run_writes_its_anchor_passages_once_and_trains_on_them(tmp_path: Path) -> None:
    """`anchor_weight`: the run's start model writes the anchor passages once, with its own
    log-probs on them, into `anchor-passages.jsonl`; every step draws them into its retain
    batches (other tokens than the same run without), and a rerun of the finished run rewrites
    nothing. (What the term does to training: tests/test_methods.py.)"""
    from unlearnkit.data.formatting import record_pair
    from unlearnkit.data.loaders import load_records
    from unlearnkit.methods.anchor import START_LOGPROB

    model = learned_model_dir()

    def anchored(folder: Path, weight: float) -> Path:
        write_data(folder, num_requests=3)
        method = {"name": "npo_replay", "settings": {"max_steps": 2, "lr": 1e-4, "batch_size": 4, "anchor_weight": weight, "anchor_passages": 3}}
        plan = {"model": str(model), "method": method, "requests": ["requests.jsonl"], "retain": ["retain.jsonl"], "output": "run",
                "evaluation": {"suite": "quick", "per_set": 2}, "guard": {"enabled": False}, "precision": "float32"}
        (folder / "plan.yaml").write_text(yaml.safe_dump(plan))
        return run_plan(load_plan(folder / "plan.yaml"))

    run = anchored(tmp_path / "with", 1.0)
    path = run / "anchor-passages.jsonl"
    passages = load_records(path)
    assert [r.id for r in passages] == ["anchor-001", "anchor-002", "anchor-003"] and all(r.kind == "passage" for r in passages)
    scored = load_subject(model).score_pairs([record_pair(r) for r in passages])
    assert [r.meta[START_LOGPROB] for r in passages] == pytest.approx((-scored.sum_nll).tolist(), rel=1e-4)
    written = path.stat().st_mtime_ns
    anchored(tmp_path / "with", 1.0)  # finished: nothing to do, nothing rewritten
    assert path.stat().st_mtime_ns == written
    without = anchored(tmp_path / "without", 0.0)
    assert not (without / "anchor-passages.jsonl").exists()
    tokens = [{s.step: s.tokens for s in Ledger(r / "ledger.sqlite").steps()} for r in (run, without)]
    assert all(tokens[0][step] != tokens[1][step] for step in (1, 2, 3)), tokens

def test_a_step_over_the_budget_is_rolled_back_and_flagged_in_a_coalesced_stream(tmp_path: Path) -> None:
    """Gradient ascent at a rate that wrecks the retain set at once: every (coalesced) step is
    rolled back to its start, the ledger flags it and the report says so."""
    write_data(tmp_path, num_requests=4)
    plan = {
        "model": str(learned_model_dir()), "method": {"name": "ga", "settings": {"max_steps": 3, "lr": 0.5, "batch_size": 6}},
        "requests": ["requests.jsonl"], "retain": ["retain.jsonl"], "coalesce": 2, "output": "run",
        "evaluation": {"suite": "quick", "per_set": 2, "earlier": 2},
        "guard": {"collateral": 0, "general_probes": 0, "max_new_tokens": 6, "budget": {"retain_drop": 0.05, "check_every": 1},
                  "target": {"answer_accuracy": None, "probability": 0.05}},
    }
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    run = run_plan(load_plan(tmp_path / "plan.yaml"))
    ledger = Ledger(run / "ledger.sqlite")
    budget = [f for f in ledger.flags() if f["kind"] == "budget"]
    verdicts = ledger.verdicts()
    assert sorted(verdicts) == [1, 2] and {f["step"] for f in budget} == {1, 2}
    assert all(card["rolled_back_to"] is not None and card["verdict"].startswith("budget exceeded") for card in verdicts.values())
    assert [card["request"] for card in (verdicts[1], verdicts[2])] == ["r1..r2", "r3..r4"]
    ledger.close()
    html = (run / "report.html").read_text()
    assert 'id="budget"' in html and "r1..r2" in html


# -- the plan keys -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"coalesce": 0}, "coalesce: Input should be greater than or equal to 1"),
        ({"evaluation": {"earlier": 0}}, "evaluation.earlier: Input should be greater than or equal to 1"),
        ({"evaluation": {"full_every": 5}}, "evaluation: 'full_every' applies with 'earlier'"),
        ({"prepare": {"oracles": [25, 10]}}, "prepare.oracles: .*increasing order"),
    ],
)
def test_stream_plan_keys_are_checked(tmp_path: Path, changes: dict, message: str) -> None:
    world = build_world(tmp_path / "world", size="tiny", num_requests=2)
    data = {"model": "default", "method": "ga", "requests": [{"world": str(world)}], "output": "run", **changes}
    with pytest.raises(PlanError, match=message):
        parse_plan(data, "plan.yaml", tmp_path)


def test_an_older_run_without_the_new_keys_still_resumes() -> None:
    from unlearnkit.engine.runner import plan_fingerprint

    plan = parse_plan({"model": "default", "method": "ga", "requests": ["x.jsonl"], "output": "run"}, "plan.yaml", check_files=False)
    recorded = json.loads(plan_fingerprint(plan))
    assert "coalesce" not in recorded and not {"earlier", "full_every", "holdout_reference"} & set(recorded["evaluation"])
    plan.coalesce, plan.evaluation.earlier = 2, 8
    assert json.loads(plan_fingerprint(plan))["coalesce"] == 2 and json.loads(plan_fingerprint(plan))["evaluation"]["earlier"] == 8


torch.set_num_threads(1)
