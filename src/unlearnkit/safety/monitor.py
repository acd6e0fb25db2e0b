"""The training loop's check (`training.Monitor`): every few optimiser steps, measure the model on
the probe set and say whether it is within the budget, whether the target is met, and how much
of the request it still holds (the loop keeps the state that holds least, within the budget)."""

from __future__ import annotations

import time
from typing import Any

from unlearnkit.safety.measure import Measurement, measure
from unlearnkit.safety.probes import ProbeSet
from unlearnkit.safety.settings import Guard
from unlearnkit.safety.verdict import budget_violations, target_met
from unlearnkit.training import Check


def needed(guard: Guard) -> frozenset[str]:
    """What a check must measure: the target's measures and the budget's (not retain accuracy,
    which only the card shows)."""
    needs = {"forget_said", "forget_probability"}
    if guard.target.answer_accuracy is not None:
        needs.add("forget_accuracy")
    if guard.target.probability == "control":
        needs.add("control_probability")
    if guard.budget.enabled:
        needs |= {"retain_said", "retain_accuracy", "collateral_said", "collateral_accuracy", "perplexity"}
    return frozenset(needs)


class GuardMonitor:
    """Measures every `guard.budget.check_every` optimiser steps against the start measurement."""

    def __init__(self, probes: ProbeSet, start: Measurement, guard: Guard, anchor: Measurement | None = None) -> None:
        self.probes, self.start, self.guard, self.anchor = probes, start, guard, anchor
        self.every = guard.budget.check_every
        self.needs = needed(guard)
        self.start_level = start.level

    def check(self, subject: Any, step: int) -> Check:
        tick = time.perf_counter()
        now = measure(subject, self.probes, max_new_tokens=self.guard.max_new_tokens, needs=self.needs)
        violations = budget_violations(self.start, now, self.guard.budget, self.anchor)
        met = self.guard.target.stop and target_met(self.start, now, self.guard.target)
        return Check(within_budget=not violations, target_met=met, level=now.level, info={"step": step, **now.to_json(), "violations": violations, "seconds": time.perf_counter() - tick})
