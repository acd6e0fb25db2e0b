"""Immediate blocking: the serving guardrail's index, extended on receipt and shrunk on retirement.

The index is the `guardrail` method's (`methods/guard.py`): each request's texts are embedded
and stored with a threshold calibrated for that request against the plan's retain set and
real-world questions, exactly as the method does in a run (the plan's `service.guard` holds its
settings). A chat completion puts it in front of the current model (`serving.py`).

Changes are copy-on-write: a new index is built beside the published one, saved to
`RUN/service/guard/` (atomically), then published with one assignment, and only then are the
`blocked` / `retired` events committed. A reader in another thread always sees a whole index;
after a kill the saved index holds at least every request whose `blocked` event exists, and a
start adds the events a kill left out. A request is applied to the weights only once blocked.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, cast

import torch

from unlearnkit.data.loaders import load_requests
from unlearnkit.data.schema import ForgetRequest
from unlearnkit.engine.runner import load_requests_and_data, request_copy
from unlearnkit.errors import UnlearnkitError
from unlearnkit.files import atomic_dir
from unlearnkit.methods.base import UnlearnContext, get_method
from unlearnkit.methods.guard import GuardedSubject, Guardrail, load_index, negative_prompts, stored_texts
from unlearnkit.methods.guard_index import GuardIndex
from unlearnkit.models.embedder import get_embedder
from unlearnkit.models.subject import Subject
from unlearnkit.plan import Plan
from unlearnkit.service.store import ServiceStore

log = logging.getLogger("unlearnkit.service.blocking")
CONFIG_FILE = "guard.json"


class Blocker:
    """Owns every change of the serving guard's index (one lock; readers never wait)."""

    def __init__(self, plan: Plan, store: ServiceStore) -> None:
        self.plan, self.store = plan, store
        self.folder = plan.output / "service" / "guard"
        self.method = cast(Guardrail, get_method("guardrail", plan.service.guard))
        self.index = GuardIndex()  # the published index: replaced, never changed in place
        self.calibrations: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.ready = False
        self.context: UnlearnContext | None = None

    # -- the guard in front of a model ---------------------------------------------------------
    def in_front_of(self, model: Subject) -> GuardedSubject:
        """`model` behind the published index (a new wrapper per use, so a swap of either the
        model or the index never changes one that is answering)."""
        return self._guard(model, self.index)

    def _guard(self, model: Subject | None, index: GuardIndex, calibrations: dict[str, dict[str, Any]] | None = None) -> GuardedSubject:
        """The guardrail method's wrapper with this index; embedding, calibrating and saving need
        no model under it (None)."""
        method = self.method
        guard = GuardedSubject(cast(Subject, model), index=index, embedder=method.embedder, refusal=method.refusal,
                               epsilon=method.epsilon, name="serving guard")
        guard.calibrations = dict(calibrations or {})
        return guard

    # -- start ---------------------------------------------------------------------------------
    def load(self) -> None:
        """The calibration sets, the saved index, the embedder; then the index agrees with the
        timeline (retired entries out, missing `blocked` events added)."""
        _, data, _, _ = load_requests_and_data(self.plan)
        self.context = UnlearnContext(retain=data.retain, seed=self.plan.seed, extras={"utility": data.real_facts})
        if (self.folder / CONFIG_FILE).exists():
            self.index = load_index(self.folder)
            self.calibrations = json.loads((self.folder / CONFIG_FILE).read_text(encoding="utf-8"))["calibrations"]
        # The embedder loaded and the calibration negatives embedded now, not on the first request.
        get_embedder(self.method.embedder).encode(negative_prompts(self.context, self.method.max_negatives))
        with self.lock:
            retired = self.store.ids_with("retired") & set(self.index.request_ids)
            if retired:
                self._publish(self._without(retired), [])
        self.ready = True

    # -- blocking --------------------------------------------------------------------------------
    def block_pending(self) -> list[str]:
        """Add every pending request that is neither blocked nor retired; returns their ids."""
        with self.lock:
            done = self.store.ids_with("blocked") | self.store.ids_with("retired")
            rows = [r for r in self.store.ledger.requests() if r["status"] == "pending" and r["id"] not in done]
            if not rows:
                return []
            held = set(self.index.request_ids)
            blocked = [r["id"] for r in rows if r["id"] in held]  # saved before a kill took their event
            requests = [request for r in rows if r["id"] not in held and (request := self._text(r["id"])) is not None]
            scratch = self._scratch()
            assert self.context is not None
            # One batch through the embedder; each request's calibration then reads its cache.
            scratch.embedder.encode(list(dict.fromkeys(t for r in requests for x in r.records for t in stored_texts(x) if t)))
            for request in requests:
                self.method.unlearn(scratch, request, self.context)
                blocked.append(request.id)
            if not blocked:
                return []
            self._publish(scratch.index, [(rid, "blocked", {"threshold": scratch.calibrations.get(rid, {}).get("threshold")}) for rid in blocked],
                          scratch.calibrations)
            return blocked

    def retire(self, request_ids: list[str], key_id: str | None = None, reason: str = "operator") -> None:
        """Take requests' entries out of the guard (they stay in the ledger and the weights)."""
        with self.lock:
            self._publish(self._without(set(request_ids)), [(rid, "retired", {"reason": reason}) for rid in request_ids], key_id=key_id)

    # -- internals -------------------------------------------------------------------------------
    def _text(self, request_id: str) -> ForgetRequest | None:
        path = request_copy(self.plan.output, request_id)
        if not path.exists():  # a plan request whose copy the worker has not written yet: next round
            return None
        try:
            (request,) = load_requests(path)
        except (UnlearnkitError, ValueError) as exc:
            log.error("cannot block a request: its text does not load", extra={"fields": {"request": request_id, "error": str(exc)}})
            return None
        return request

    def _scratch(self) -> GuardedSubject:
        """A guard over a copy of the published index, to build the next one in."""
        return self._guard(None, self.index.copy(), self.calibrations)

    def _without(self, request_ids: set[str]) -> GuardIndex:
        index = self.index
        for rid in request_ids:
            index = index.without(rid)
        return index

    def _publish(self, index: GuardIndex, events: list[tuple[str, str, dict[str, Any]]], calibrations: dict[str, dict[str, Any]] | None = None,
                 key_id: str | None = None) -> None:
        calibrations = {k: v for k, v in (calibrations if calibrations is not None else self.calibrations).items() if k in set(index.request_ids)}
        index.margins(torch.zeros(0, 1))  # builds the query matrix now, so readers never build it concurrently
        self._save(index, calibrations)
        self.index, self.calibrations = index, calibrations
        if events:
            self.store.record_many([(rid, event, None, detail) for rid, event, detail in events], key_id=key_id)

    def _save(self, index: GuardIndex, calibrations: dict[str, dict[str, Any]]) -> None:
        saved = self._guard(None, index, calibrations)
        with atomic_dir(self.folder, replaces=(CONFIG_FILE,)) as tmp:
            saved.save_files(tmp)
            (tmp / CONFIG_FILE).write_text(json.dumps(saved.config(), indent=1), encoding="utf-8")

    @property
    def size(self) -> int:
        return len(self.index)
