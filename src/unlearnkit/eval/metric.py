"""The Metric contract and its registry.

A metric is one class in one module of `unlearnkit.eval.metrics`, decorated with
`@register_metric("name")`; the registry imports every module of that package on first use,
so adding a metric edits nothing else. A metric is a frozen pydantic model: its settings are
typed fields (an unknown or invalid one is one clear error line), and what the rest of the
toolkit needs to know about it (does it generate, may an attack re-run it, which direction means
"still remembered", what it measures) is declared on the class, never listed elsewhere.

`compute(subject, data, reference=None) -> MetricResult`:
- `data` is a `MetricInput` (the measured records, plus non-members for membership inference and
  in-context examples for KnowMem) or a plain list of records;
- `reference` is what a metric compares against: the oracle as a Subject, or its precomputed
  `MetricResult` (forget quality, PrivLeak), or a reference model (the reference-model attack).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from unlearnkit.data.schema import Record
from unlearnkit.models.subject import Subject
from unlearnkit.registry import Registry, build_with_settings


@dataclass
class MetricResult:
    """`value` is the aggregate (None when no item applied); `per_item` maps item ids to values."""

    value: float | None
    per_item: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"value": finite(self.value), "per_item": {k: finite(v) for k, v in self.per_item.items()}, "details": self.details}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricResult:
        return cls(data.get("value"), dict(data.get("per_item", {})), dict(data.get("details", {})))


def finite(value: float | None) -> float | None:
    """JSON has no NaN/inf: they become null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class MetricInput:
    records: list[Record]
    nonmembers: list[Record] = field(default_factory=list)  # membership inference: never trained
    shots: list[Record] = field(default_factory=list)  # KnowMem in-context examples
    scope: str = ""

    @classmethod
    def of(cls, data: MetricInput | list[Record]) -> MetricInput:
        return data if isinstance(data, MetricInput) else cls(records=list(data))


Reference = Subject | MetricResult | float | list[float] | None


class Metric(BaseModel):
    """Base class. Subclasses declare their settings as typed fields, set the class properties
    below, and implement `compute`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry_name: ClassVar[str] = "?"
    kinds: ClassVar[tuple[str, ...]] = ("qa",)  # record kinds it measures
    higher_is_better: ClassVar[bool | None] = None  # on retained content; None = "closest to 0/ref"
    needs_reference: ClassVar[bool] = False
    needs_nonmembers: ClassVar[bool] = False
    # It runs greedy generation (the costly metrics; `--max-new-tokens` caps them).
    generates: ClassVar[bool] = False
    # Per item, "higher = more remembered", no reference model: a weight attack may re-run it.
    recoverable: ClassVar[bool] = False
    # On forget data, which direction means the content is still remembered; None: the goal is
    # the oracle's value (a membership AUC near 0.5, PrivLeak near 0), not a direction.
    remembered_when: ClassVar[Literal["higher", "lower"] | None] = None
    # One line saying what is measured, without a direction (the report adds it per scope).
    description: ClassVar[str] = ""

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None) -> Metric:
        """Build from settings, with one clear line for an unknown or invalid key."""
        return build_with_settings(cls, settings, "metric", "setting")

    @property
    def name(self) -> str:
        return self.registry_name

    def settings(self) -> dict[str, Any]:
        return self.model_dump()

    def items(self, data: MetricInput | list[Record]) -> list[Record]:
        return [r for r in MetricInput.of(data).records if r.kind in self.kinds]

    def applies(self, data: MetricInput | list[Record]) -> bool:
        data = MetricInput.of(data)
        if not self.items(data):
            return False
        return not self.needs_nonmembers or bool(self.items(MetricInput(data.nonmembers)))

    def compute(self, subject: Subject, data: MetricInput | list[Record], reference: Reference = None) -> MetricResult:
        raise NotImplementedError


def of_source(records: list[Record], source: str | None) -> list[Record]:
    """The records of one benchmark split (`meta["source"]`, e.g. "privleak/forget"); every
    record when `source` is None or no record carries a split (the built-in world, user files)."""
    if source is None or not any("source" in r.meta for r in records):
        return records
    return [r for r in records if r.meta.get("source") == source]


def item_id(record: Record, index: int) -> str:
    return record.id if record.id is not None else f"#{index}"


metric_registry: Registry[type[Metric]] = Registry("metric", "unlearnkit.eval.metrics")
register_metric = metric_registry.register


def get_metric(name: str, **params: Any) -> Metric:
    """The registered metric `name` with `params` as its settings, e.g.
    "metric 'rouge': unknown setting 'max_tokens' (did you mean 'max_new_tokens'?); valid: ..."."""
    return metric_registry.get(name).from_settings(params)
