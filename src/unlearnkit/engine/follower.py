"""The processes other than rank 0 in a multi-process run (docs/scale.md).

Rank 0 runs the plan as one process does (`runner.run_plan`): it alone reads and writes the run
folder, the ledger, checkpoints and reports. The others train and score: for each step rank 0
broadcasts a `Job` (the request, the context, the guard's probes, its RNG state), and each
follower applies it to its own copy of the model in step with rank 0, since every optimiser step
is shared among them (`training.train`); then rank 0 broadcasts the step's `Evaluation` (what the
suite measures), and every process runs the suite together, each scoring its share of the
batches (`distributed.deal`). Attacks, and steps evaluated on resuming, run on rank 0 alone.
After the last step rank 0 broadcasts None.

A follower never writes; it loads the model after the step before a job from the checkpoint rank
0 committed (on the first job, or after a gap), so a killed run resumes on any number of
processes from what the ledger holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearnkit import distributed
from unlearnkit.data.schema import ForgetRequest
from unlearnkit.engine.checkpoints import Checkpoints
from unlearnkit.engine.faults import arm_training_crash
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.result import SuiteResult
from unlearnkit.methods.base import UnlearnContext
from unlearnkit.plan import Plan


@dataclass
class Job:
    """One step's unlearning, as rank 0 starts it."""

    step: int
    request: ForgetRequest
    context: UnlearnContext
    probes: Any  # the guard's ProbeSet, or None
    rng_state: torch.Tensor  # rank 0's torch RNG right before applying: dropout and seeds match
    anchor: Any = None  # the run's start measurement (`Budget.since_start`): every rank decides alike


@dataclass
class Evaluation:
    """One step's evaluation suite, as rank 0 starts it (the model is the one after `step`)."""

    step: int
    data: EvalData
    oracle: Path | None
    holdout: SuiteResult | None


def share_job(job: Job | Evaluation) -> None:
    """Rank 0: hand the step's training or evaluation to the other processes (nothing to do on
    one process, or inside `distributed.solo()`)."""
    if distributed.world_size() > 1:
        distributed.broadcast(job)


def end_jobs() -> None:
    """Rank 0: no more steps."""
    if distributed.world_size() > 1:
        distributed.broadcast(None)


def follow_plan(plan: Plan) -> None:
    """A rank other than 0: train and evaluate each step rank 0 broadcasts, until it broadcasts None."""
    from unlearnkit.engine.runner import Run, _prepared, load, load_requests_and_data, load_step, plan_methods, suite_evaluate
    from unlearnkit.safety.apply import apply_request

    requests, data, worlds, _ = load_requests_and_data(plan)
    start_model = plan.model
    if plan.prepare is not None:  # the world's target and oracles are trained by all processes together
        start_model, _, _ = _prepared(plan, worlds[0])
    methods = plan_methods(plan)
    run: Run | None = None
    subject, at = None, -1
    while (job := distributed.broadcast(None)) is not None:
        if run is None:  # the folder exists now: rank 0 created it before its first job
            run = Run(plan, plan.output, None, Checkpoints(plan.output / "checkpoints", plan.checkpoints.keep),  # type: ignore[arg-type]
                      requests, data, start_model)
        before = job.step - 1 if isinstance(job, Job) else job.step  # the model it starts from
        if subject is None or at != before:
            subject, at = load_step(run, before), before
        if isinstance(job, Evaluation):
            suite_evaluate(plan, subject, job.data, load(run, job.oracle) if job.oracle else None, job.holdout)
            continue
        torch.set_rng_state(job.rng_state)
        hook = arm_training_crash(job.step)
        subject = apply_request(subject, job.request, methods, job.context, plan.guard, job.probes, job.anchor).subject
        if hook is not None:
            hook.remove()
        at = job.step
