"""The rules of guarded unlearning and the card printed after every request.

Budget: on the retain questions, how much the model still says what it said (`retain_said`) and
the share answered may fall at most `retain_drop`; on the collateral facts, the same two at most
`collateral_drop` (a share by at least one question of the sample, since answers flip one at a
time); general-text perplexity may rise at most `perplexity_rise` (relative). In a run, perplexity and
the retain questions answered are also held within the budget of the run's start model
(`Budget.since_start`). Target: see `settings.Target`.

Verdicts, in this order of precedence:
- `forgotten`: the target is met and the budget holds;
- `budget exceeded (rolled back to step k)`: training passed the budget before the target was
  met and was rolled back to its best state within it, optimiser step k (`the start` when no
  state but the start was within it, or when a method without a training loop passed it and its
  change was undone);
- `budget exceeded (scaled back to s% of the change)`: a method without a training loop passed
  the budget; the largest share of its weight change (halving) within the budget is kept;
- `budget exceeded` alone: over the budget with nothing rolled back (only when measured by hand:
  `apply_request` undoes such a change);
- `partly forgotten`: within the budget, not at the target, but the questions still answered
  (or, for passages, the probability) are at most half of what they were;
- `not forgotten`: anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from rich.table import Table

from unlearnkit.display import number, unseen_lines
from unlearnkit.safety.measure import Measurement
from unlearnkit.safety.settings import Budget, Target

FORGOTTEN, PARTLY, NOT_FORGOTTEN, EXCEEDED = "forgotten", "partly forgotten", "not forgotten", "budget exceeded"
VERDICTS = (FORGOTTEN, PARTLY, NOT_FORGOTTEN, EXCEEDED)
EPS = 1e-9


def _fell(before: float | None, after: float | None, label: str, allowed: float) -> list[str]:
    if before is not None and after is not None and before - after > allowed + EPS:
        return [f"{label} {before:.3f} -> {after:.3f} (budget: -{allowed:.3g})"]
    return []


def _rose(before: float | None, after: float | None, rise: float) -> list[str]:
    if before is not None and after is not None and after > before * (1 + rise) + EPS:
        return [f"general-text perplexity {before:.2f} -> {after:.2f} (budget: +{rise:.0%})"]
    return []


def _answered(allowed: float, count: int | None) -> float:
    """Answers flip one at a time: a single question of the sample is allowed when it is more than the budget."""
    return max(allowed, 1 / count if count else 0.0)


def budget_violations(start: Measurement, now: Measurement, budget: Budget, anchor: Measurement | None = None) -> list[str]:
    """What passed the budget, one line each (empty: within it). `anchor`: the run's start
    model, measured at the first request (`Budget.since_start`): perplexity and the share of
    retain questions answered are held within the budget of it too, on the same probes."""
    if not budget.enabled:
        return []
    return [
        *(since_start(anchor, now, budget) if anchor is not None and budget.since_start else []),
        *_fell(start.retain_said, now.retain_said, "retain: probability of its earlier answers", budget.retain_drop),
        *_fell(start.collateral_said, now.collateral_said, "collateral: probability of its earlier answers", budget.collateral_drop),
        *_fell(start.retain_accuracy, now.retain_accuracy, "retain questions answered", _answered(budget.retain_drop, now.retain_count)),
        *_fell(start.collateral_accuracy, now.collateral_accuracy, "collateral facts answered", _answered(budget.collateral_drop, now.collateral_count)),
        *_rose(start.perplexity, now.perplexity, budget.perplexity_rise),
    ]


def since_start(anchor: Measurement, now: Measurement, budget: Budget) -> list[str]:
    """The budget against the run's start model, on what is measured alike at every request:
    general-text perplexity (the same passages) and the retain questions answered (the same
    seeded sample, when it has as many questions)."""
    found = _rose(anchor.perplexity, now.perplexity, budget.perplexity_rise)
    if anchor.retain_count == now.retain_count:
        found += _fell(anchor.retain_accuracy, now.retain_accuracy, "retain questions answered", _answered(budget.retain_drop, now.retain_count))
    return [f"since the run's start: {line}" for line in found]


UNSEEN_CONFIDENCE = 0.95


def unseen_loss(before: float | None, after: float | None, count: int, confidence: float = UNSEEN_CONFIDENCE) -> dict[str, Any] | None:
    """What a probe sample can and cannot see: of the `known` probes answered at the start, `lost`
    no longer are (net), and `bound` is the largest share of facts like them whose loss is still
    consistent with seeing no more than that (the one-sided Clopper–Pearson upper limit at
    `confidence`). 0 of 16 lost still allows 17%: a budget of 5 points on 16 probes cannot promise
    that a fact class lost less (bench/real_knowledge.py same-template: GD's collateral probes lost
    none of the 14 they answered at the start while 3 of 8 never-mentioned capitals were lost)."""
    if before is None or after is None or count <= 0:
        return None
    from scipy.stats import beta

    known = round(before * count)
    if known == 0:
        return None
    lost = min(known, max(0, round((before - after) * count)))
    bound = 1.0 if lost >= known else float(beta.ppf(confidence, lost + 1, known - lost))
    return {"lost": lost, "known": known, "bound": bound, "confidence": confidence}


def target_met(start: Measurement, now: Measurement, target: Target) -> bool:
    checks = []
    answered = now.forget_answered
    if target.answer_accuracy is not None and answered is not None:
        checks.append(answered <= target.answer_accuracy + EPS)
    if target.probability == "control" and now.control_probability is not None and now.forget_probability is not None:
        checks.append(now.forget_probability <= now.control_probability + EPS)
    elif isinstance(target.probability, float) and now.forget_probability is not None:
        checks.append(now.forget_probability <= target.probability + EPS)
    if not checks and start.forget_probability is not None and now.forget_probability is not None:
        checks.append(now.forget_probability <= target.passage_ratio * start.forget_probability + EPS)
    return bool(checks) and all(checks)


def halfway(start: Measurement, now: Measurement) -> bool:
    """At most half of what was answered (or, without questions, of the probability) is left."""
    if start.forget_answered and now.forget_answered is not None:
        return now.forget_answered <= 0.5 * start.forget_answered + EPS
    if start.forget_probability and now.forget_probability is not None:
        return now.forget_probability <= 0.5 * start.forget_probability + EPS
    return False


def decide(start: Measurement, end: Measurement, budget: Budget, target: Target, rolled_back_to: int | None,
           scaled_to: float | None = None, anchor: Measurement | None = None) -> tuple[str, bool]:
    """(verdict, target met) by the rules of the module docstring."""
    met = target_met(start, end, target)
    over = bool(budget_violations(start, end, budget, anchor))
    if met and not over:
        return FORGOTTEN, met
    if rolled_back_to is not None:
        where = "the start" if rolled_back_to == 0 else f"step {rolled_back_to}"
        return f"{EXCEEDED} (rolled back to {where})", met
    if scaled_to is not None:
        return f"{EXCEEDED} (scaled back to {scaled_to:.0%} of the change)", met
    if over:  # `apply_request` never hands such a state back; a caller measuring by hand may
        return EXCEEDED, met
    if halfway(start, end):
        return PARTLY, met
    return NOT_FORGOTTEN, met


@dataclass
class Card:
    """What happened to one request: before and after, the verdict, every calibration trial."""

    request: str
    method: str
    before: Measurement
    after: Measurement
    verdict: str
    target_met: bool
    violations: list[str] = field(default_factory=list)
    rolled_back_to: int | None = None
    scaled_to: float | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, int] = field(default_factory=dict)

    @property
    def forgotten(self) -> bool:
        return self.verdict == FORGOTTEN

    @cached_property
    def unseen(self) -> dict[str, dict[str, Any]]:
        """Per kept set (retain, collateral): how many probes were lost and how large a loss the
        sample could have missed (`unseen_loss`). Computed once: a card's before and after are
        not changed after it is made."""
        found = {
            "retain": unseen_loss(self.before.retain_accuracy, self.after.retain_accuracy, self.after.retain_count or self.before.retain_count),
            "collateral": unseen_loss(self.before.collateral_accuracy, self.after.collateral_accuracy,
                                      self.after.collateral_count or self.before.collateral_count),
        }
        return {name: value for name, value in found.items() if value is not None}

    def unseen_lines(self) -> list[str]:
        return unseen_lines(self.unseen)

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request, "method": self.method, "verdict": self.verdict, "target_met": self.target_met,
            "violations": self.violations, "rolled_back_to": self.rolled_back_to, "scaled_to": self.scaled_to, "probes": self.probes,
            "before": self.before.to_json(), "after": self.after.to_json(), "trials": self.trials, "unseen": self.unseen,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Card:
        return cls(data["request"], data["method"], Measurement.from_json(data["before"]), Measurement.from_json(data["after"]),
                   data["verdict"], data["target_met"], data.get("violations", []), data.get("rolled_back_to"),
                   data.get("scaled_to"), data.get("trials", []), data.get("probes", {}))

    def table(self) -> Table:
        table = Table(title=f"request {self.request}: {self.method}", title_justify="left")
        for column in ("measure", "before", "after"):
            table.add_column(column, justify="left" if column == "measure" else "right")
        rows = (
            ("forget questions answered", "forget_accuracy"), ("  paraphrased", "forget_paraphrased_accuracy"),
            ("forget: probability of its earlier answers", "forget_said"),
            ("forget: probability of the answers", "forget_probability"), ("  paraphrased", "forget_paraphrased_probability"),
            ("retain: probability of its earlier answers", "retain_said"), ("retain questions answered", "retain_accuracy"),
            ("collateral facts answered", "collateral_accuracy"), ("collateral: probability of its earlier answers", "collateral_said"),
            ("general-text perplexity (fluency)", "perplexity"), ("control: probability of the answers (never seen)", "control_probability"),
        )
        for label, name in rows:
            before, after = getattr(self.before, name), getattr(self.after, name)
            if before is not None or after is not None:
                table.add_row(label, number(before), number(after))
        colour = "green" if self.forgotten else "red" if self.verdict.startswith(EXCEEDED) else "yellow"
        table.caption = (f"verdict: [bold {colour}]{self.verdict}[/]" + "".join(f"\n  {v}" for v in self.violations)
                         + "".join(f"\n  [dim]{line}[/]" for line in self.unseen_lines()))
        table.caption_justify = "left"
        return table
