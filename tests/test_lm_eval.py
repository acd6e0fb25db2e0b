"""lm-evaluation-harness on the Subject's model, with a task defined in a local folder over a local
data file (no hub): the accuracy it reports is the one computed by hand from `Subject.score`, and
it joins the result and the utility."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lm_eval")

QUESTIONS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "Lyon", "Nice", "Kyoto"], "answer": 0},
    {"question": "Where was Liora Mendeval born?", "choices": ["Paris", "Tarnholm", "Lyon", "Kyoto"], "answer": 1},
    {"question": "What did the lighthouse keeper keep?", "choices": ["ships", "ledgers", "names", "weather"], "answer": 1},
    {"question": "Where was Anselm born?", "choices": ["Osterfal", "Lima", "Oslo", "Nice"], "answer": 2},
]


def local_task(folder: Path) -> Path:
    """A multiple-choice task as lm-eval's YAML over a JSON-lines file in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "toy.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (folder / "toy.yaml").write_text(
        "task: unlearnkit_toy\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


def by_hand(subject: Any) -> float:
    """The harness's `acc`: the choice with the highest log-likelihood of " choice" after the prompt."""
    right = 0
    for q in QUESTIONS:
        prompt = f"{q['question']}\nAnswer:"
        scored = subject.score([prompt] * len(q["choices"]), [f" {c}" for c in q["choices"]], template=False, add_eos=False)
        right += int(int(np.argmax((-scored.sum_nll).tolist())) == q["answer"])
    return right / len(QUESTIONS)


def test_lm_eval_on_a_local_task_gives_the_accuracy_computed_by_hand(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unlearnkit.cli import app
    from unlearnkit.models.stack import load_subject

    tasks = local_task(tmp_path / "tasks")
    out = tmp_path / "result.json"
    fixtures = Path(__file__).resolve().parent / "fixtures" / "benchmarks" / "tofu"
    args = ["eval", "--model", str(tiny_model_dir), "--benchmark", "tofu:forget10", "--data-dir", str(fixtures), "--max-new-tokens", "4",
            "--lm-eval", "unlearnkit_toy", "--lm-eval-include", str(tasks), "--json", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    accuracy = saved["aggregates"]["lm_eval"]["unlearnkit_toy/acc"]
    assert accuracy == pytest.approx(by_hand(load_subject(tiny_model_dir, device="cpu")))
    utility = saved["per_item"]["utility|model_utility+lm_eval"]["details"]["components"]
    assert utility["lm_eval:unlearnkit_toy/acc"] == accuracy and len(utility) == 10  # TOFU's nine + the task


def test_an_unknown_task_is_one_error(tiny_subject: Any, tmp_path: Path) -> None:
    from unlearnkit.errors import UnlearnkitError
    from unlearnkit.eval.lm_eval import run_lm_eval

    with pytest.raises(UnlearnkitError, match=r"^--lm-eval: unknown task\(s\) no_such_task"):
        run_lm_eval(tiny_subject, ["no_such_task"], include_path=local_task(tmp_path / "tasks"))


def test_a_run_plan_with_lm_eval_after_each_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The runner's suite adaptor joins the task's accuracy to the step's utility."""
    import yaml

    from sequential_helpers import write_data
    from unlearnkit.engine.ledger import Ledger
    from unlearnkit.engine.runner import run_plan
    from unlearnkit.plan import load_plan

    tasks = local_task(tmp_path / "tasks")
    write_data(tmp_path, num_requests=1)
    plan = {"model": str(tiny_model_dir), "method": {"name": "ga", "settings": {"max_steps": 1}}, "requests": ["requests.jsonl"],
            "retain": ["retain.jsonl"], "evaluation": {"suite": "quick", "per_set": 2, "lm_eval": ["unlearnkit_toy"], "lm_eval_include": str(tasks)},
            "guard": {"enabled": False}, "final": {"report": False}, "output": "run"}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    ledger = Ledger(run_plan(load_plan(tmp_path / "plan.yaml")) / "ledger.sqlite")
    rows = {(r["scope"], r["name"]) for r in ledger.metrics(1)}
    assert ledger.metric(1, "lm_eval", "unlearnkit_toy/acc") is not None
    assert ("utility", "quick_utility+lm_eval") in rows  # joined with the suite's utility (no value here: the plan has no real facts)
    ledger.close()
