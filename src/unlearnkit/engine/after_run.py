"""What a finished run can add for its report: reference evaluations and attacks on the last step.

- `write_references`: the run's suite on the start model ("target") and on each step's retrain
  oracle, so charts can draw where the model started and where retraining would have landed.
- `write_attacks`: attacks on the last step's model, with the target and the last oracle measured
  under the same attacks.

Both write JSON into the run folder atomically and keep per-model results, so a rerun after an
interruption only computes what is missing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from unlearnkit.engine.runner import Run, _load, load_step, open_run, suite_evaluate
from unlearnkit.eval.result import SuiteResult
from unlearnkit.plan import Plan
from unlearnkit.progress import console


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def _cached_eval(run: Run, name: str, source: str | Path, requests_upto: int) -> SuiteResult:
    path = run.folder / "eval" / f"reference-{name}.json"
    if path.exists():
        return SuiteResult.load(path)
    console.print(f"[bold]reference[/bold] {name}: evaluating ({run.plan.evaluation.suite})")
    data = replace(run.data, requests=run.requests[:requests_upto])
    result = suite_evaluate(run.plan, _load(run, str(source)), data, None)
    result.save(path)
    return result


def write_references(plan: Plan) -> Path:
    """`references.json`: {"target": {scope: {metric: value}}, "oracles": {step: {...}}}."""
    run = open_run(plan)
    count = len(run.requests)
    target = _cached_eval(run, "target", run.start_model, count)
    oracles = {step: _cached_eval(run, f"oracle-{step:03d}", path, count).aggregates() for step, path in sorted(run.oracles.items())}
    out = run.folder / "references.json"
    _write_json(out, {"suite": plan.evaluation.suite, "target": target.aggregates(), "oracles": oracles})
    return out


def write_attacks(plan: Plan, names: list[str], settings: dict[str, dict[str, Any]] | None = None) -> Path:
    """`attacks.json`: the named attacks on the last step's model, with target and oracle."""
    from unlearnkit.eval.attacks import run_attacks

    run = open_run(plan)
    out = run.folder / "attacks.json"
    if out.exists() and json.loads(out.read_text()).get("names") == names:
        return out
    steps = run.ledger.steps()
    if not steps:
        raise ValueError(f"{run.folder}: no finished step to attack")
    last = steps[-1].step
    unlearned = load_step(run, last)  # handles every checkpoint policy, deltas included
    target = _load(run, run.start_model)
    oracle = _load(run, str(run.oracles[last])) if last in run.oracles else None
    data = replace(run.data, requests=run.requests[:last]).limited(plan.evaluation.per_set)
    console.print(f"[bold]attacks[/bold] after step {last}: {', '.join(names)}")
    results = run_attacks(names, unlearned, data, target=target, oracle=oracle, settings=settings)
    _write_json(out, {"names": names, "step": last, "settings": settings or {}, "results": [r.to_json() for r in results]})
    return out

