"""The holdout reference: what a model that never saw a person does, without training one.

Retrain oracles are the honest reference for forgetting, but a stream of 100 requests cannot
train 100 of them. The holdout people of a built-in world were never trained on, so the
target's answers about them are what a model that never saw a person does. Between sparse
oracles, forgetting is measured against that:

- **forget probability**: the target's mean probability of the holdout people's answers (one
  number; a request is forgotten when its probability is near it);
- **forget quality**: the KS test of a request's truth ratios against the target's truth ratios
  on the holdout questions (row `forget_quality/holdout`), where the oracle's KS test compares
  with the oracle's truth ratios on the request's own questions.

Where an oracle exists the two are shown side by side (`engine.runner.write_holdout_check`,
docs/sequential.md "The holdout reference").
"""

from __future__ import annotations

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.result import SuiteResult
from unlearnkit.eval.suites import HOLDOUT_SCOPE, Entry, Suite, evaluate, holdout_ratios_row
from unlearnkit.models.subject import Subject


def holdout_suite(suite: Suite) -> Suite:
    """The forget probability, and the truth ratios of every forget-quality entry of `suite`
    with that entry's settings (`correct`, `epsilon`), on one scope: the holdout people."""
    entries = [Entry("probability", "forget")]
    for entry in suite.entries:
        if entry.metric == "forget_quality" and entry.scope == "forget":
            params = {k: v for k, v in entry.params.items() if k in ("correct", "epsilon")}
            entries.append(Entry("truth_ratio", "forget", {**params, "aggregation": "forget"}, label=holdout_ratios_row(entry.row_name)))
    return Suite(f"{suite.name}-holdout", "the holdout reference", tuple(entries))


def holdout_reference(suite: Suite, target: Subject, holdout: list[Record]) -> SuiteResult | None:
    """The suite's holdout reference on `target` (every holdout QA record, no per-set cut);
    None without holdout questions."""
    questions = [r for r in holdout if r.kind == "qa"]
    if not questions:
        return None
    data = EvalData(requests=[ForgetRequest(id=HOLDOUT_SCOPE, kind="holdout", records=questions)])
    return evaluate(holdout_suite(suite), target, data)
