"""The forget metrics that the weight-transform attacks (quantize, relearn) re-run.

They are the project's registered metrics run by `eval.suites.evaluate` on a one-request
suite, so "probability" or "rouge" here is exactly the number `unlearnkit eval` reports. Use
metrics where higher means "more remembered" (probability, rouge, extraction_strength,
exact_memorization, verbmem, knowmem): the recovered fraction assumes it.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field, field_validator

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.errors import UnlearnkitError, did_you_mean
from unlearnkit.eval.attacks._base import Attack, Measure, Values
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.metric import metric_registry
from unlearnkit.eval.suites import Entry, Suite, evaluate
from unlearnkit.models.subject import Subject

DEFAULT_METRICS = ["probability", "rouge"]
# Per-item "higher = more remembered" metrics that need no reference model.
RECOVERY_METRICS = ("probability", "rouge", "extraction_strength", "exact_memorization", "verbmem", "knowmem")


def check_metrics(names: list[str]) -> list[str]:
    valid = metric_registry.names()
    for name in names:
        if name not in valid:
            raise UnlearnkitError(f"unknown metric '{name}'{did_you_mean(name, valid)}; valid: {', '.join(RECOVERY_METRICS)}")
    return names


def forget_measure(request_id: str, records: list[Record], data: EvalData, metrics: list[str], max_new_tokens: int) -> Measure:
    """A Measure running `metrics` on `records` (as request `request_id`) with the suite machinery."""
    entries = tuple(Entry(name, "forget", {"max_new_tokens": max_new_tokens} if name == "rouge" else {}) for name in metrics)
    suite = Suite("attack", "forget metrics re-run under an attack", entries)
    scoped = replace(data, requests=[ForgetRequest(id=request_id, records=records)])

    def measure(subject: Subject) -> Values:
        result = evaluate(suite, subject, scoped)
        return {name: result.value(request_id, name) for name in metrics}

    return measure


class WeightAttack(Attack):
    """An attack that changes the weights (quantize, relearn) and re-runs forget metrics."""

    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    max_new_tokens: int = Field(48, ge=1, description="greedy tokens for rouge")

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return check_metrics(value)
