"""Plan files: what validates, and the one-line errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sequential_helpers import write_data
from unlearnkit.plan import PlanError, load_plan

GOOD = """
model: default
method: {name: ssu, settings: {lr: 1.0e-4}}
requests: [requests.jsonl]
retain: retain.jsonl
output: out
"""


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    write_data(tmp_path, 2)
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "plan.yaml"
    path.write_text(text)
    return path


def test_a_good_plan_with_defaults_and_resolved_paths(folder: Path) -> None:
    plan = load_plan(write(folder, GOOD))
    assert [m.name for m in plan.method] == ["ssu"] and plan.method[0].settings == {"lr": 1e-4}
    assert plan.requests[0].file == folder / "requests.jsonl"  # relative to the plan's folder
    assert plan.retain == [folder / "retain.jsonl"] and plan.output == folder / "out"
    assert plan.checkpoints.keep == "all" and plan.checkpoints.last is None
    assert plan.evaluation.suite == "quick" and plan.attacks == [] and plan.seed == 0 and not plan.purge


def test_stacked_methods_world_requests_and_options(folder: Path) -> None:
    world = folder / "world"
    world.mkdir()
    (world / "requests.jsonl").write_text((folder / "requests.jsonl").read_text())
    text = GOOD.replace("method: {name: ssu, settings: {lr: 1.0e-4}}", "method: [ga, {name: ssu, settings: {faithful: true}}]")
    text = text.replace("requests: [requests.jsonl]", "requests: [{world: world}, requests.jsonl]")
    text += "checkpoints: {keep: 'last:2'}\npurge: true\nrelapse: {threshold: 0.4}\nattacks: [leak_at_k, quantize]\nprepare: true\n"
    plan = load_plan(write(folder, text))
    assert plan.label == "ga+ssu" and plan.method[1].settings == {"faithful": True}
    assert plan.requests[0].world == world and plan.checkpoints.last == 2
    assert plan.relapse is not None and plan.relapse.metric == "probability" and plan.prepare == {}
    assert plan.attacks == ["leak_at_k", "quantize"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("model: default\n", ""), "plan.yaml: model: missing (required)"),
        (("output: out", "output: out\nsed: 1"), "plan.yaml: sed: unknown key (did you mean 'seed'?)"),
        (("name: ssu", "name: sssu"), "plan.yaml: method.name: unknown method 'sssu' (did you mean 'ssu'?)"),
        (("lr: 1.0e-4", "lrr: 1.0e-4"), "plan.yaml: method.settings.lrr: not a hyperparameter of 'ssu' (did you mean 'lr'?)"),
        (("lr: 1.0e-4", "lr: -1"), "plan.yaml: method.settings.lr: Input should be greater than 0"),
        (("lr: 1.0e-4", "epsilon: lots"), "plan.yaml: method.settings.epsilon: Input should be a valid number"),
        (("output: out", "output: out\ncheckpoints: {keep: 'last:0'}"), "plan.yaml: checkpoints.keep: 'last:0' is not one of all, last:N (N >= 1), deltas"),
        (("requests: [requests.jsonl]", "requests: [nope.jsonl]"), "plan.yaml: requests.0.file: no such file or folder"),
        (("requests: [requests.jsonl]", "requests: [{world: nowhere}]"), "plan.yaml: requests.0.world: "),
        (("requests: [requests.jsonl]", "requests: []"), "plan.yaml: requests: nothing to unlearn: name request files or worlds, or a benchmark"),
        (("retain: retain.jsonl", "retain: missing.jsonl"), "plan.yaml: retain.0: no such file"),
        (("output: out", "output: out\nevaluation: {suite: quik}"), "plan.yaml: evaluation.suite: unknown suite 'quik' (did you mean 'quick'?)"),
        (("output: out", "output: out\nutility: [stuff.jsonl]"), "plan.yaml: utility.0: 'stuff' is not a record set role"),
        (("output: out", "output: out\nprepare: true"), "plan.yaml: prepare: needs a built-in world"),
        (("output: out", "output: out\nrelapse: {metric: probability}"), "plan.yaml: relapse.threshold: missing (required)"),
        (("output: out", "output: out\nseed: [1"), "plan.yaml line "),
        (("output: out", "output: out\nattacks: [leak_at_kk]"), "plan.yaml: attacks: unknown attack 'leak_at_kk'"),
        (("requests: [requests.jsonl]", "requests: [{submitted: true}, requests.jsonl]"), "plan.yaml: requests: 'submitted: true' must be the last entry"),
        (("requests: [requests.jsonl]", "requests: [{submitted: true, file: requests.jsonl}]"), "plan.yaml: requests.0: give exactly one of 'file', 'world' or 'submitted: true'"),
        (("output: out", "output: out\ncoalesce: 0"), "plan.yaml: coalesce: Input should be greater than or equal to 1"),
        (("output: out", "output: out\nservice: {guard: {treshold: 0.8}}"), "plan.yaml: service.guard.treshold: not a hyperparameter of 'guardrail' (did you mean 'threshold'?)"),
        (("output: out", "output: out\nservice: {max_body_bytes: 10}"), "plan.yaml: service.max_body_bytes: Input should be greater than or equal to 1024"),
    ],
)
def test_errors_name_the_key(folder: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(PlanError) as error:
        load_plan(write(folder, GOOD.replace(*edit)))
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(str(folder / message)), text  # the file, then the key, then the problem


def test_stacked_method_errors_name_the_position(folder: Path) -> None:
    text = GOOD.replace("method: {name: ssu, settings: {lr: 1.0e-4}}", "method: [ga, {name: ssu, settings: {scale: 0}}]")
    with pytest.raises(PlanError, match=r"plan.yaml: method\.1\.settings\.scale: Input should be greater than 0"):
        load_plan(write(folder, text))


def test_not_a_mapping_and_missing_file(folder: Path) -> None:
    with pytest.raises(PlanError, match="expected a mapping"):
        load_plan(write(folder, "- just a list\n"))
    with pytest.raises(PlanError, match="no such plan file"):
        load_plan(folder / "absent.yaml")


def test_first_takes_a_world_prefix_and_only_for_worlds(folder: Path) -> None:
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.engine.runner import load_requests_and_data

    build_world(folder / "world", seed=0, size="tiny")
    text = GOOD.replace("requests: [requests.jsonl]", "requests: [{world: world, first: 2}]")
    requests, _, _, _ = load_requests_and_data(load_plan(write(folder, text)))
    assert [r.id for r in requests] == ["r1", "r2"]  # the tiny world has 3
    with pytest.raises(PlanError, match="requests.0: 'first' applies to a world's requests only"):
        load_plan(write(folder, GOOD.replace("requests: [requests.jsonl]", "requests: [{file: requests.jsonl, first: 1}]")))


def test_submitted_requests_and_a_world_for_its_data_only(folder: Path) -> None:
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.engine.runner import load_requests_and_data, plan_fingerprint

    build_world(folder / "world", seed=0, size="tiny")
    text = GOOD.replace("requests: [requests.jsonl]", "requests: [{world: world, first: 0}, {submitted: true}]") + "coalesce: 4\n"
    plan = load_plan(write(folder, text))
    requests, data, worlds, _ = load_requests_and_data(plan)
    assert plan.takes_submitted and plan.coalesce == 4 and requests == [] and data.retain and worlds == [folder / "world"]
    # Keys added later leave an older run's fingerprint alone while they keep their defaults.
    plain = load_plan(write(folder, GOOD))
    recorded = json.loads(plan_fingerprint(plain))
    assert "coalesce" not in recorded and "service" not in recorded and "submitted" not in recorded["requests"][0]
    assert json.loads(plan_fingerprint(plan))["coalesce"] == 4


def test_the_demo_plan_takes_a_recipes_guard(tmp_path: Path) -> None:
    """bench/stream.py measures the stream recipe on the demo with the stream plan's forget target
    (the control level); without one the demo keeps the default target (no greedy answer right)."""
    from unlearnkit.demo import demo_plan

    world = tmp_path / "world"
    world.mkdir()
    (world / "requests.jsonl").write_text("")
    stream_guard = {"target": {"probability": "control", "answer_accuracy": None}}
    guarded = demo_plan(tmp_path / "out", world, guard=stream_guard)
    plain = demo_plan(tmp_path / "out", world)
    assert (guarded.guard.target.probability, guarded.guard.target.answer_accuracy) == ("control", None)
    assert plain.guard.target.probability is None and plain.guard.target.answer_accuracy is not None
    assert plain.guard.calibrate.enabled and not guarded.guard.calibrate.enabled  # the demo calibrates as `unlearn` does
