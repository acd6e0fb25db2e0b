"""The forget metrics that the weight-transform attacks (quantize, relearn) re-run.

They are the project's registered metrics run by `eval.suites.evaluate` on a one-request
suite, so "probability" or "rouge" here is exactly the number `unlearnkit eval` reports (with
generation cut to the attack's `max_new_tokens`). Only metrics that declare themselves
`recoverable` (per item, higher = "more remembered", no reference model) may be re-run: the
recovered fraction assumes it.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import Field, field_validator

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.errors import UnlearnkitError, did_you_mean
from unlearnkit.eval.attacks._base import Attack, Measure, Values
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.metric import metric_registry
from unlearnkit.eval.suites import Entry, Suite, evaluate, with_max_new_tokens
from unlearnkit.models.subject import Subject

DEFAULT_METRICS = ["probability", "rouge"]


def recoverable_metrics() -> list[str]:
    """The registered metrics a weight attack may re-run (they declare `recoverable`)."""
    return [name for name, cls in metric_registry.items() if cls.recoverable]


def check_metrics(names: list[str]) -> list[str]:
    valid = recoverable_metrics()
    for name in names:
        if name in valid:
            continue
        if name in metric_registry.names():
            raise UnlearnkitError(
                f"metric '{name}' cannot be re-run by a weight attack (not a per-item "
                f"'higher = more remembered' metric without a reference model); valid: {', '.join(valid)}"
            )
        raise UnlearnkitError(f"unknown metric '{name}'{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
    return names


def forget_measure(request_id: str, records: list[Record], data: EvalData, metrics: list[str], max_new_tokens: int) -> Measure:
    """A Measure running `metrics` on `records` (as request `request_id`) with the suite machinery;
    every generating metric is cut to `max_new_tokens`."""
    entries = tuple(Entry(name, "forget") for name in metrics)
    suite = with_max_new_tokens(Suite("attack", "forget metrics re-run under an attack", entries), max_new_tokens)
    scoped = replace(data, requests=[ForgetRequest(id=request_id, records=records)])

    def measure(subject: Subject) -> Values:
        result = evaluate(suite, subject, scoped)
        return {name: result.value(request_id, name) for name in metrics}

    return measure


class WeightAttack(Attack):
    """An attack that changes the weights (quantize, relearn) and re-runs forget metrics."""

    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    max_new_tokens: int = Field(48, ge=1, description="greedy tokens for every generating metric (rouge, verbmem, knowmem, ...)")

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return check_metrics(value)
