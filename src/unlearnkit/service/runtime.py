"""The `Service`: the run folder's lock, the store, the blocker and worker threads, the served model.

    open()   the run-folder lock (`unlearnkit run` on the same folder is refused while it is held;
             the kernel releases it even on SIGKILL), the store, texts a kill left without a row
    start()  the blocker thread (embedder, saved index, then blocks each request on receipt)
             and the worker thread
    stop()   both threads finish what they are doing (the worker: the current stage of a step)
    close()  the lock

`submit` stores a request and wakes the blocker; `/readyz` is `ready`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from unlearnkit.engine.runner import RunLock
from unlearnkit.plan import Plan
from unlearnkit.service.blocking import Blocker
from unlearnkit.service.intake import Submission
from unlearnkit.service.serving import Serving
from unlearnkit.service.store import Outcome, ServiceStore
from unlearnkit.service.worker import Worker

log = logging.getLogger("unlearnkit.service")
BLOCKER_WAIT_S = 1.0


class Service:
    def __init__(self, plan: Plan, lock: RunLock, store: ServiceStore) -> None:
        self.plan, self.lock, self.store = plan, lock, store
        self.blocker = Blocker(plan, store)
        self.serving = Serving(self.blocker, plan.service.generation_slots)
        self.worker: Worker | None = None
        self.blocking_thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.blocker_failure: str | None = None
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def open(cls, plan: Plan) -> Service:
        plan.output.mkdir(parents=True, exist_ok=True)
        lock = RunLock(plan.output)
        lock.acquire()
        try:
            store = ServiceStore(plan.output)
            removed = store.remove_orphan_texts()
        except BaseException:
            lock.release()
            raise
        if removed:
            log.info("removed request texts a kill left without a ledger row", extra={"fields": {"files": [p.name for p in removed]}})
        return cls(plan, lock, store)

    def start(self) -> None:
        self.blocking_thread = threading.Thread(target=self._block, name="unlearnkit-blocker", daemon=True)
        self.blocking_thread.start()
        self.worker = Worker(self.plan, self.store, self.blocker, self.serving)
        self.worker.start()

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        self.blocker.wake.set()
        if self.worker is not None:
            self.worker.stop()
            # A worker still starting (preparing a world's target, resuming) is not waited for:
            # what it writes is atomic or redone at the next start; a step under way is finished.
            if self.worker.state != "starting":
                self.worker.join(timeout)
        if self.blocking_thread is not None:
            self.blocking_thread.join(timeout)

    def close(self) -> None:
        """Release the run folder (again: a no-op)."""
        if self.closed:
            return
        self.closed = True
        self.store.close()
        self.lock.release()

    # -- the blocker thread ----------------------------------------------------------------------
    def _block(self) -> None:
        try:
            self.blocker.load()
            while not self.stopping.is_set():
                try:
                    blocked = self.blocker.block_pending()
                except Exception as exc:  # one bad round must not end blocking; the next round retries
                    log.exception("blocking failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
                    blocked = []
                if blocked:
                    log.info("blocked", extra={"fields": {"requests": blocked}})
                    if self.worker is not None:
                        self.worker.wake.set()
                    continue  # more may have arrived meanwhile
                self.blocker.wake.wait(BLOCKER_WAIT_S)
                self.blocker.wake.clear()
        except BaseException as exc:
            self.blocker_failure = f"{type(exc).__name__}: {exc}"
            log.exception("the blocker stopped", extra={"fields": {"error": self.blocker_failure}})
        finally:
            self.store.close()

    # -- what the API asks -------------------------------------------------------------------------
    def submit(self, submission: Submission, key_id: str, idempotency_key: str | None) -> tuple[str, Outcome]:
        request_id, outcome = self.store.submit(submission.request, key_id, idempotency_key, submission.body_sha256)
        if outcome == "new":
            self.blocker.wake.set()
        return request_id, outcome

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake.set()

    @property
    def ready(self) -> bool:
        worker = self.worker
        return (not self.stopping.is_set() and self.serving.current is not None and self.blocker.ready
                and worker is not None and worker.is_alive() and self.blocker_failure is None)

    def state(self) -> dict[str, Any]:
        worker = self.worker
        return {
            "ready": self.ready,
            "worker": worker.state if worker is not None else "not started",
            "worker_failure": worker.failure if worker is not None else None,
            "blocker_failure": self.blocker_failure,
            "step": self.serving.step,
            "guard_entries": self.blocker.size,
            "paused": self.store.paused(),
        }
