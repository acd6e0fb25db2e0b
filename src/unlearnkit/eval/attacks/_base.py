"""What every attack is, what it reports, and the recovered-fraction arithmetic.

An attack is a pydantic model (typed settings, one clear line for a bad key) registered with
`@register_attack("name")` in any module of `unlearnkit.eval.attacks`. For one request it lists
`Variant`s. A variant is

- an optional **weight transform** T (quantize, relearn) and
- two **measurements**: `base` (the plain forget questions, no attack) and `attacked` (the
  attacker's prompts or decoding: samples, paraphrases, 2-hop, mixed, in-context, dialogues).

The driver `run_variant` then measures, per metric (every one is "higher = more remembered"):

    before        = base(unlearned)            after        = attacked(T(unlearned))
    target        = attacked(target)           (never transformed: the knowledge to recover)
    oracle_before = base(oracle)               oracle_after = attacked(T(oracle))

    recovered        = (after − before) / (target − before)
    oracle_recovered = (oracle_after − oracle_before) / (target − oracle_before)
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.eval.data import EvalData
from unlearnkit.models.subject import Subject
from unlearnkit.registry import Registry, build_with_settings

# Below this gap between target and unlearned there was nothing to forget on that measure,
# so a fraction of it is noise (or a division by zero): the fraction is reported as None.
MIN_GAP = 1e-6

Values = dict[str, float | None]
Measure = Callable[[Subject], Values]


def recovered_fraction(after: float | None, unlearned: float | None, target: float | None) -> float | None:
    """(after − unlearned) / (target − unlearned); None when a value is missing or the target is
    not above the unlearned value by more than MIN_GAP (nothing was removed on this measure).

    Not clipped: below 0 the attack made the model forget more, above 1 it knows more than the
    target did."""
    if after is None or unlearned is None or target is None:
        return None
    if not all(math.isfinite(v) for v in (after, unlearned, target)):
        return None
    gap = target - unlearned
    if gap <= MIN_GAP:
        return None
    return (after - unlearned) / gap


@dataclass
class AttackRow:
    """One metric of one variant. `collateral` rows (e.g. the retain half of a mixed prompt
    still answered) measure damage to kept knowledge, not recovery: they get no fraction."""

    variant: str
    metric: str
    before: float | None
    after: float | None
    target: float | None = None
    oracle_before: float | None = None
    oracle_after: float | None = None
    items: int = 0
    collateral: bool = False

    @property
    def recovered(self) -> float | None:
        return None if self.collateral else recovered_fraction(self.after, self.before, self.target)

    @property
    def oracle_recovered(self) -> float | None:
        return None if self.collateral else recovered_fraction(self.oracle_after, self.oracle_before, self.target)

    def to_json(self) -> dict[str, Any]:
        out = {k: _finite(v) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return out | {"recovered": _finite(self.recovered), "oracle_recovered": _finite(self.oracle_recovered)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttackRow:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class AttackResult:
    """One attack on one request: its rows, the settings used, notes (skips, fallbacks)."""

    attack: str
    request: str
    subject: str
    rows: list[AttackRow] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def row(self, variant: str, metric: str) -> AttackRow | None:
        return next((r for r in self.rows if r.variant == variant and r.metric == metric), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "request": self.request,
            "subject": self.subject,
            "rows": [r.to_json() for r in self.rows],
            "settings": self.settings,
            "seconds": self.seconds,
            "notes": self.notes,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttackResult:
        return cls(
            attack=data["attack"],
            request=data["request"],
            subject=data.get("subject", ""),
            rows=[AttackRow.from_json(r) for r in data.get("rows", [])],
            settings=data.get("settings", {}),
            seconds=data.get("seconds", 0.0),
            notes=list(data.get("notes", [])),
            details=dict(data.get("details", {})),
        )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class Models:
    """The models an attack measures: the unlearned one, and optionally target and oracle."""

    unlearned: Subject
    target: Subject | None = None
    oracle: Subject | None = None


@dataclass
class Variant:
    name: str
    base: Measure
    attacked: Measure
    transform: Callable[[Subject], Subject] | None = None
    items: int = 0
    collateral: frozenset[str] = frozenset()


class Attack(BaseModel):
    """Base of all attacks. Subclasses declare settings as typed fields and build variants."""

    model_config = ConfigDict(extra="forbid")

    registry_name: ClassVar[str] = "?"
    description: ClassVar[str] = ""

    limit: int | None = Field(None, ge=1, description="first N QA records (or probes) per request; None: all")

    def variants(self, request: ForgetRequest, data: EvalData, notes: list[str]) -> list[Variant]:
        raise NotImplementedError

    def run(self, models: Models, request: ForgetRequest, data: EvalData) -> AttackResult:
        started = time.perf_counter()
        result = AttackResult(self.registry_name, request.id, models.unlearned.name, settings=self.model_dump(mode="json"))
        for variant in self.variants(request, data, result.notes):
            result.rows += run_variant(variant, models)
        result.seconds = time.perf_counter() - started
        return result

    def qa(self, records: list[Record]) -> list[Record]:
        """The request's QA records, cut to `limit`."""
        qa = [r for r in records if r.kind == "qa"]
        return qa[: self.limit] if self.limit else qa

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None) -> Attack:
        return build_with_settings(cls, settings, "attack", "setting")


def run_variant(variant: Variant, models: Models) -> list[AttackRow]:
    """Measure one variant on the unlearned model, the target and the oracle (see the module doc)."""
    before = variant.base(models.unlearned)
    after = _attacked(variant, models.unlearned)
    target = variant.attacked(models.target) if models.target is not None else {}
    oracle_before = variant.base(models.oracle) if models.oracle is not None else {}
    oracle_after = _attacked(variant, models.oracle) if models.oracle is not None else {}
    return [
        AttackRow(
            variant=variant.name,
            metric=metric,
            before=before.get(metric),
            after=after.get(metric),
            target=target.get(metric),
            oracle_before=oracle_before.get(metric),
            oracle_after=oracle_after.get(metric),
            items=variant.items,
            collateral=metric in variant.collateral,
        )
        for metric in dict.fromkeys([*before, *after])
    ]


def _attacked(variant: Variant, subject: Subject) -> Values:
    if variant.transform is None:
        return variant.attacked(subject)
    from unlearnkit.eval.passes import sharing

    changed = variant.transform(subject)
    try:
        # A memo of its own, so the run's shared memo never keeps a transformed copy alive.
        with sharing():
            return variant.attacked(changed)
    finally:
        # A transformed copy of the weights is as large as the model: free it before the next one.
        del changed
        gc.collect()


ATTACKS: Registry[type[Attack]] = Registry("attack", "unlearnkit.eval.attacks")
register_attack = ATTACKS.register


def get_attack(name: str, settings: dict[str, Any] | None = None) -> Attack:
    return ATTACKS.get(name).from_settings(settings)
