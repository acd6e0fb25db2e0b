"""The one worker: applies pending requests in arrival order through the runner, then serves the result.

    start: open the run, `resume` (what a kill left: orphan checkpoints out, a committed step
           evaluated), add the timeline events a kill left out, serve the newest checkpoint
    loop:  take the submitted requests the ledger holds (`refresh_submitted`); the next group
           (`next_group`: the first pending ones, up to the plan's `coalesce`, so those that
           arrived during the previous step go together), cut before the first one the guard
           does not hold yet; unlearn (checkpoint + ledger commit: `applied`), evaluate with the
           plan's suite and housekeep (`verified`, `purged`), write results and the report, load
           the new checkpoint and swap it in; retire the group's guard entries if the plan says so.

The runner's functions do every step, so the ledger decides here as in `unlearnkit run`: a kill
at any point leaves a run that the next start resumes with nothing lost or applied twice.
A stop request (SIGTERM) is honoured between stages: a step that is training finishes its
checkpoint and commit first, and its evaluation is done by the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from unlearnkit.engine.runner import (
    Run,
    evaluate_step,
    finish_step,
    group_label,
    load_step,
    next_group,
    open_run,
    plan_methods,
    refresh_submitted,
    resume,
    unlearn_step,
    write_references,
    write_results,
)
from unlearnkit.plan import Plan
from unlearnkit.service.blocking import Blocker
from unlearnkit.service.serving import Serving
from unlearnkit.service.store import ServiceStore

log = logging.getLogger("unlearnkit.service.worker")
IDLE_WAIT_S = 1.0


class Worker(threading.Thread):
    def __init__(self, plan: Plan, store: ServiceStore, blocker: Blocker, serving: Serving) -> None:
        super().__init__(name="unlearnkit-worker", daemon=True)
        self.plan, self.store, self.blocker, self.serving = plan, store, blocker, serving
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.state = "starting"
        self.failure: str | None = None
        self.steps_done = 0

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        try:
            self._work()
            self.state = "stopped"
        except BaseException as exc:  # reported by /readyz and the status page; the ledger is sound
            self.failure, self.state = f"{type(exc).__name__}: {exc}", "failed"
            log.exception("the worker stopped", extra={"fields": {"error": self.failure}})
        finally:
            self.store.close()

    def _work(self) -> None:
        run = open_run(self.plan)
        try:
            subject = resume(run)
            self.store.sync_events(late=True)
            self.steps_done = len(run.ledger.steps())
            self.serving.swap(load_step(run, self.steps_done), self.steps_done)
            self._retire_verified()
            log.info("serving", extra={"fields": {"step": self.steps_done}})
            methods = plan_methods(self.plan)
            while not self.stopping.is_set():
                if self.store.paused():
                    self.state = "paused"
                    self._idle()
                    continue
                refresh_submitted(run)
                group = self._ready(next_group(run))
                if not group:
                    self.state = "idle"
                    self._idle()
                    continue
                subject = self._step(run, group, subject, methods)
        finally:
            run.ledger.close()

    def _step(self, run: Run, group: list[Any], subject: Any, methods: list[Any]) -> Any:
        step = len(run.ledger.steps()) + 1
        label = group_label(group)
        fields = {"step": step, "requests": [r.id for r in group]}
        self.state = f"applying step {step} ({label})"
        log.info("applying", extra={"fields": fields})
        tick = time.perf_counter()
        subject = unlearn_step(run, step, group, subject, methods)
        self.store.sync_events()
        if self.stopping.is_set():  # committed and checkpointed: the next start evaluates it
            log.info("stopping after the step's commit; its evaluation resumes at the next start", extra={"fields": fields})
            return subject
        self.state = f"verifying step {step} ({label})"
        evaluate_step(run, step, subject)
        finish_step(run, step)
        self.store.sync_events()
        self._stages(run)
        self.serving.swap(load_step(run, step), step)
        self.steps_done = step
        log.info("verified and serving", extra={"fields": fields | {"seconds": round(time.perf_counter() - tick, 3)}})
        self._retire_verified()
        return subject

    def _ready(self, group: list[Any]) -> list[Any]:
        """The group up to the first request the guard does not hold yet (blocked before applied)."""
        blocked = self.store.ids_with("blocked")
        ready = []
        for request in group:
            if request.id not in blocked:
                self.blocker.wake.set()
                break
            ready.append(request)
        return ready

    def _retire_verified(self) -> None:
        """With `service.retire_guard`, verified requests leave the guard once the weights hold
        them: the verdict of the step that applied them met its forget target (a step the damage
        budget stopped short keeps its entries: the guard is then all that blocks the content).
        Without a verdict (the plan's guard is off) there is no target to meet: verified is enough."""
        if not self.plan.service.retire_guard:
            return
        ledger = self.store.ledger
        verdicts, steps = ledger.verdicts(), ledger.request_steps()
        done = {r["id"] for r in ledger.requests() if r["status"] in ("verified", "purged")
                and verdicts.get(steps.get(r["id"], -1), {"target_met": True})["target_met"]}
        still = sorted((done & set(self.blocker.index.request_ids)) - self.store.ids_with("retired"))
        if still:
            self.blocker.retire(still, reason="verified")

    def _stages(self, run: Run) -> None:
        """results.json, the reference lines and the report after each step (the final stages
        of a run that never ends; the last model's attacks are left to `unlearnkit attack`)."""
        try:
            write_results(run)
            if self.plan.final.references:
                write_references(run)
            if self.plan.final.report:
                from unlearnkit.report.html import write_report

                write_report(run.folder)
        except Exception as exc:  # a report is not worth stopping the worker for
            log.error("results or report not written", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})

    def _idle(self) -> None:
        self.wake.wait(IDLE_WAIT_S)
        self.wake.clear()
