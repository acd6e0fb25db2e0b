"""`apply_request`: one removal request, applied by a method stack under guarded unlearning.

    measure the start  ->  for each method: run it (training methods are checked every few
    optimiser steps and rolled back to their best state within the budget; with calibration,
    a short ladder of learning rates from the same start)  ->  measure the end  ->  if the end
    is over the budget all the same (a method without a training loop), scale the weight
    change back by halves until it is within the budget, or undo the request  ->  the verdict.

Used by `unlearnkit unlearn` and by every step of `unlearnkit run`, so both say the same thing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from unlearnkit.data.schema import ForgetRequest
from unlearnkit.methods.base import LossMethod, Method, UnlearnContext
from unlearnkit.models.stack import base_subject
from unlearnkit.models.subject import Subject
from unlearnkit.models.weights import Vector, scale_change, snapshot
from unlearnkit.progress import console
from unlearnkit.safety.measure import ALL, Measurement, measure
from unlearnkit.safety.monitor import GuardMonitor
from unlearnkit.safety.probes import ProbeSet
from unlearnkit.safety.settings import Guard
from unlearnkit.safety.verdict import Card, budget_violations, decide, target_met
from unlearnkit.training import TrainStats


@dataclass
class Applied:
    subject: Subject
    card: Card | None  # None when the guard is off
    tokens: int = 0
    steps: int = 0
    stats: list[TrainStats] = field(default_factory=list)


def _monitored(method: Method) -> bool:
    """Methods whose forgetting happens inside the shared training loop (not SSU, task vectors
    or NegMerge, which learn first and subtract afterwards, nor inference-time wrappers)."""
    return isinstance(method, LossMethod) and type(method).unlearn is LossMethod.unlearn


def _run(method: Method, subject: Subject, request: ForgetRequest, context: UnlearnContext, monitor: GuardMonitor | None) -> tuple[Subject, TrainStats | None]:
    context.monitor = monitor if _monitored(method) else None
    try:
        result = method.unlearn(subject, request, context)
        return result, context.stats
    finally:
        context.monitor, context.stats = None, None


def _label(method: Method, trials: list[dict[str, Any]] | None = None) -> str:
    """The method as it was kept: after calibration, the chosen trial's rate (or that no trial
    was kept), not the rate the ladder started from."""
    if trials is not None:
        chosen = next((t for t in trials if t["chosen"]), None)
        if chosen is None:
            return f"{method.registry_name} (no trial kept)"
        length = f"{chosen['max_steps']} steps" if chosen["max_steps"] is not None else f"{chosen['epochs']:g} epochs"
        return f"{method.registry_name} (lr {chosen['lr']:.2g}, {length})"
    lr = getattr(method, "lr", None)
    return f"{method.registry_name}" + (f" (lr {lr:.2g})" if lr is not None else "")


BRACKET_DONE = 1.5  # a bracket this narrow (over / under) ends the search


def _calibrated(method: LossMethod, subject: Subject, request: ForgetRequest, context: UnlearnContext,
                monitor: GuardMonitor, guard: Guard) -> tuple[Subject, TrainStats | None, list[dict[str, Any]]]:
    """Trials from the same start at a geometric ladder of learning rates (`settings.Calibration`);
    the weights of the trial that forgot most within the budget are kept."""
    ladder = guard.calibrate
    start: Vector = snapshot(subject.model)
    up, down, factor = list(ladder.up), list(ladder.down), 1.0
    # The smallest factor the budget stopped and the largest that stayed within it without
    # meeting the target: once both are known, the next trial lies between them (after 1e-5
    # and 5e-6 were stopped and 2.5e-6 held, the ladder's next step up, 2e-5, was wasted).
    over, under = math.inf, 0.0
    best: tuple[bool, float, Vector, TrainStats | None, int] | None = None  # (met, level, weights, stats, trial)
    trials: list[dict[str, Any]] = []
    # What is trained on depends on the start weights only (`answers: own` asks the model): made
    # once here, and every trial takes it as given instead of generating the same answers again.
    request, kept = method.targets(subject, request, context.retain)
    context = replace(context, retain=kept)
    while len(trials) < ladder.max_trials:
        update: dict[str, Any] = {"lr": method.lr * factor, "epochs": method.epochs * ladder.epochs_factor, "answers": "given"}
        if method.max_steps is not None:
            update["max_steps"] = max(1, round(method.max_steps * ladder.epochs_factor))
        trial = method.model_copy(update=update)
        console.print(f"calibration {len(trials) + 1}/{ladder.max_trials}: {method.registry_name} at lr {trial.lr:.2g}")
        tick = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)  # every trial starts from the same random state too
            result, stats = _run(trial, subject, request, context, monitor)
        now = measure(result, monitor.probes, max_new_tokens=guard.max_new_tokens, needs=monitor.needs)
        within = not budget_violations(monitor.start, now, guard.budget, monitor.anchor)
        met = target_met(monitor.start, now, guard.target)
        trials.append({
            "trial": len(trials) + 1, "lr": trial.lr, "max_steps": trial.max_steps, "epochs": trial.epochs,
            "steps": stats.steps if stats else None, "stop_reason": stats.stop_reason if stats else None,
            "rolled_back_to": stats.rolled_back_to if stats else None, "level": now.level, "target_met": met,
            "within_budget": within, "seconds": time.perf_counter() - tick, "measurement": now.to_json(),
        })
        if within and (best is None or (met, -now.level) > (best[0], -best[1])):
            best = (met, now.level, snapshot(result.model), stats, len(trials))
        scale_change(subject.model, start, 0.0)  # the next trial starts where this one did
        if met and within:
            break
        if stats is not None and stats.stop_reason == "budget":
            over = min(over, factor)
        else:
            under = max(under, factor)
        if over < math.inf and under > 0:  # bracketed: halfway (geometrically) between the two
            if over / under <= BRACKET_DONE:
                break
            factor = math.sqrt(over * under)
        elif over < math.inf:
            if not down:
                break
            factor = down.pop(0)
        else:
            if not up:
                break
            factor = up.pop(0)
    for row in trials:
        row["chosen"] = best is not None and row["trial"] == best[4]
    if best is None:
        return subject, None, trials
    scale_change(subject.model, best[2], 0.0)
    return subject, best[3], trials


def apply_request(subject: Subject, request: ForgetRequest, methods: list[Method], context: UnlearnContext,
                  guard: Guard, probes: ProbeSet | None, anchor: Measurement | None = None) -> Applied:
    """Apply `methods` in order to `subject` for `request`; see the module docstring. `anchor`:
    the run's start model as measured at its first request (`Budget.since_start`)."""
    applied = Applied(subject, None)
    if not guard.enabled or probes is None:
        for method in methods:
            applied.subject, stats = _run(method, applied.subject, request, context, None)
            _count(applied, stats)
        return applied
    start = measure(subject, probes, max_new_tokens=guard.max_new_tokens, needs=ALL)
    monitor = GuardMonitor(probes, start, guard, anchor)
    weights_before = snapshot(base_subject(subject).model)  # to undo a change no training loop could roll back
    rolled_back_to: int | None = None
    stopped_by: list[str] = []  # what the check that rolled training back found over the budget
    trials: list[dict[str, Any]] = []
    labels: list[str] = []
    for method in methods:
        if guard.calibrate.enabled and _monitored(method):
            assert isinstance(method, LossMethod)
            applied.subject, stats, tried = _calibrated(method, applied.subject, request, context, monitor, guard)
            trials += [{"method": method.registry_name, **row} for row in tried]
            labels.append(_label(method, tried))
        else:
            applied.subject, stats = _run(method, applied.subject, request, context, monitor)
            labels.append(_label(method))
        _count(applied, stats)
        if stats is not None and stats.stop_reason == "budget":
            rolled_back_to = stats.rolled_back_to
            stopped_by = list(stats.checks[-1].get("violations", [])) if stats.checks else []
    end = measure(applied.subject, probes, max_new_tokens=guard.max_new_tokens, needs=ALL)
    violations = budget_violations(start, end, guard.budget, anchor)
    scaled_to: float | None = None
    if violations and not any(m.family == "inference" for m in methods):
        # A weight change that no training loop checked (task vectors, SSU): keep the largest
        # share of it, halving, that is within the budget (θ_before + s·(θ_after − θ_before)).
        model, share = base_subject(applied.subject).model, 1.0
        for _ in range(guard.scale_back_steps):
            scale_change(model, weights_before, 0.5)
            share /= 2
            now = measure(applied.subject, probes, max_new_tokens=guard.max_new_tokens, needs=ALL)
            if not budget_violations(start, now, guard.budget, anchor):
                end, scaled_to = now, share
                break
    if violations and scaled_to is None:  # over the budget after all: the request is undone
        scale_change(base_subject(subject).model, weights_before, 0.0)
        applied.subject, end, rolled_back_to = subject, start, 0
    verdict, met = decide(start, end, guard.budget, guard.target, rolled_back_to, scaled_to, anchor)
    applied.card = Card(
        request=request.id, method=" + ".join(labels), before=start, after=end, verdict=verdict,
        target_met=met, violations=violations or stopped_by, rolled_back_to=rolled_back_to, scaled_to=scaled_to, trials=trials,
        probes=probes.sizes(),
    )
    return applied


def _count(applied: Applied, stats: TrainStats | None) -> None:
    if stats is not None:
        applied.stats.append(stats)
        applied.tokens += stats.tokens
        applied.steps += stats.steps

