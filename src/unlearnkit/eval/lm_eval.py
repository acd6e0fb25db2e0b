"""General ability through lm-evaluation-harness (the optional extra `unlearnkit[lm-eval]`).

`run_lm_eval(subject, tasks)` runs `lm_eval.simple_evaluate` on the Subject's model as
open-unlearning does (`src/evals/lm_eval.py`: an `HFLM` around the in-memory model, no chat
template, zero-shot unless asked): MMLU, WMDP or any task the harness knows, or one defined in a
local folder (`include_path`, task YAMLs over local data files). `add_lm_eval` puts each task's
accuracy in the result (scope `lm_eval`) and a utility row that joins them to the suite's own.
The harness calls the model directly: an inference-time wrapper's `score` is not what it measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnkit.errors import UnlearnkitError
from unlearnkit.eval import primitives as P
from unlearnkit.eval.metric import MetricResult
from unlearnkit.eval.result import Row, SuiteResult
from unlearnkit.models.subject import Subject

# The accuracy a task reports, in the harness's key order of preference.
ACCURACY_KEYS = ("acc,none", "acc_norm,none", "exact_match,none")


@dataclass(frozen=True)
class TaskScore:
    task: str
    metric: str  # acc, acc_norm or exact_match
    value: float
    samples: int
    seconds: float


def run_lm_eval(
    subject: Subject,
    tasks: list[str],
    *,
    include_path: str | Path | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
) -> list[TaskScore]:
    """Each task's accuracy on the Subject's model (`limit` questions per task, all by default)."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UnlearnkitError("--lm-eval needs lm-evaluation-harness: pip install 'unlearnkit[lm-eval]'") from None
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UnlearnkitError(f"--lm-eval: unknown task(s) {', '.join(unknown)} (lm-evaluation-harness's task names, or YAMLs in --lm-eval-include)")
    started = time.perf_counter()
    model = HFLM(pretrained=subject.model, tokenizer=subject.tokenizer, batch_size=subject.batch_size, device=str(subject.device))
    out = lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                                  log_samples=False, bootstrap_iters=0, apply_chat_template=False)
    seconds = time.perf_counter() - started
    if out is None:
        raise UnlearnkitError("--lm-eval: lm-evaluation-harness returned no results")
    scores = []
    for task in tasks:
        found = out.get("groups", {}).get(task) or out.get("results", {}).get(task, {})
        key = next((k for k in ACCURACY_KEYS if found.get(k) is not None), None)
        if key is None:
            raise UnlearnkitError(f"--lm-eval {task}: no accuracy among {', '.join(sorted(found))}")
        samples = out.get("n-samples", {}).get(task, {}).get("effective", 0)
        scores.append(TaskScore(task, key.split(",")[0], float(found[key]), int(samples), seconds / len(tasks)))
    return scores


def add_lm_eval(result: SuiteResult, scores: list[TaskScore], utility_name: str | None) -> None:
    """Rows `lm_eval / <task>/<acc>`, and `<utility>+lm_eval`: the harmonic mean of the suite's
    utility components and these accuracies (no value when the suite's utility has none)."""
    for score in scores:
        result.add(Row("lm_eval", f"{score.task}/{score.metric}", score.value, score.samples, score.seconds),
                   MetricResult(score.value, {}, {"task": score.task, "metric": score.metric}))
    if utility_name is None or not scores:
        return
    base = result.result("utility", utility_name)
    components = dict(base.details.get("components", {})) if base is not None and base.value is not None else {}
    value = None
    if components:
        components |= {f"lm_eval:{s.task}/{s.metric}": s.value for s in scores}
        value = P.model_utility([max(0.0, v) for v in components.values()])
    missing = [] if value is not None else [f"utility:{utility_name}"]
    result.add(Row("utility", f"{utility_name}+lm_eval", value, len(components), 0.0),
               MetricResult(value, {}, {"components": components, "missing": missing}))
