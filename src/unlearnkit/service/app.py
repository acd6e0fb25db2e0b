"""The HTTP API of `unlearnkit serve` (FastAPI); every route and status code is in docs/service.md.

Every error is `{"error": "<one line>"}`: 400 a body that is not UTF-8 JSON, 401 no or a bad
key, 403 a role that may not, 404 nothing there (or another submitter's request), 409 a request
id taken by other content, 413 a body over `service.max_body_bytes`, 415 not JSON, 422 JSON that
is not a valid request (the CLI's own line), 429 over the rate limit, 503 not ready yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from unlearnkit.errors import DataError
from unlearnkit.service import chat
from unlearnkit.service.auth import ApiError, Authenticator, Caller, token_from
from unlearnkit.service.intake import BadBody, InvalidRequest, parse_submission, read_json
from unlearnkit.service.page import status_page
from unlearnkit.service.runtime import Service
from unlearnkit.service.serving import NotReady
from unlearnkit.service.store import AUDIT_TABLES, Conflict, Mismatch

log = logging.getLogger("unlearnkit.service.http")
MAX_IDEMPOTENCY_KEY = 255


def create_app(service: Service) -> FastAPI:
    """The application for an opened `Service`; its lifespan starts the threads and, at shutdown,
    stops them and releases the run folder."""
    plan = service.plan
    auth = Authenticator(service.store, plan.service.rate_limit)
    model_name = f"unlearnkit:{plan.output.name}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        log.info("started", extra={"fields": {"run": str(plan.output)}})
        try:
            yield
        finally:
            log.info("stopping: the worker finishes its current stage")
            await run_in_threadpool(service.stop)
            service.close()
            log.info("stopped")

    app = FastAPI(title="unlearnkit serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url="/v1/openapi.json")
    app.add_middleware(BodyLimitAndAccessLog, max_body=plan.service.max_body_bytes)
    _errors(app)

    async def caller(request: Request) -> Caller:
        found = await run_in_threadpool(auth.caller, token_from(dict(request.headers)))
        request.scope.setdefault("state", {})["key_id"] = found.key_id
        return found

    # -- operations ----------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        state = service.state()
        body = {"ready": state["ready"], "step": state["step"], "worker": state["worker"]}
        return JSONResponse(body, status_code=200 if state["ready"] else 503)

    @app.get("/", response_class=HTMLResponse)
    def page(who: Caller = Depends(caller)) -> HTMLResponse:
        who.require("operator", "auditor")
        html = status_page(service.store, service.state(), str(plan.output), (plan.output / "report.html").exists())
        return HTMLResponse(html)

    @app.get("/report")
    def report(who: Caller = Depends(caller)) -> Response:
        who.require("operator", "auditor")
        path = plan.output / "report.html"
        if not path.exists():
            raise ApiError(404, "no report yet: it is written after the first verified step")
        return FileResponse(path, media_type="text/html")

    # -- requests ------------------------------------------------------------------------------
    @app.post("/v1/requests", status_code=202)
    async def submit(request: Request, who: Caller = Depends(caller)) -> JSONResponse:
        who.require("submitter")
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY and idempotency_key.isprintable()):
            raise ApiError(400, f"Idempotency-Key: use 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
        raw = await _json_bytes(request)
        submission = await run_in_threadpool(parse_submission, raw, plan.service)
        request_id, outcome = await run_in_threadpool(service.submit, submission, who.key_id, idempotency_key)
        view = await run_in_threadpool(service.store.request, request_id)
        assert view is not None
        url = f"/v1/requests/{request_id}"
        body = {"id": request_id, "status": view["status"], "position": view["position"], "status_url": url}
        headers = {"Location": url} | ({"Idempotent-Replayed": "true"} if outcome == "replayed" else {})
        # A retry gets the answer of the first try; the same request again without a key, 200.
        return JSONResponse(body, status_code=200 if outcome == "existing" else 202, headers=headers)

    @app.get("/v1/requests/{request_id}")
    def read(request_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        view = service.store.request(request_id)
        if view is None or not (who.reads_all or view["submitted_by"] == who.key_id):
            raise ApiError(404, f"no request '{request_id[:200]}'" + ("" if who.reads_all else " among this key's requests"))
        return view

    @app.get("/v1/requests")
    def listing(who: Caller = Depends(caller),
                status: Literal["received", "blocked", "applied", "verified", "purged"] | None = None,
                kind: str | None = Query(None, max_length=200),
                limit: int = Query(50, ge=1, le=500),
                after: int = Query(0, ge=0, description="the `next` of the previous page")) -> dict[str, Any]:
        owner = None if who.reads_all else who.key_id
        items, cursor = service.store.list_requests(owner=owner, status=status, kind=kind, after=after, limit=limit)
        return {"items": items, "next": cursor}

    @app.post("/v1/requests/{request_id}/retire")
    def retire(request_id: str, who: Caller = Depends(caller)) -> dict[str, Any]:
        who.require("operator")
        view = service.store.request(request_id)
        if view is None:
            raise ApiError(404, f"no request '{request_id[:200]}'")
        if not view["blocking"]:
            raise ApiError(409, f"request '{request_id}' has no guard entry to retire ({'retired already' if any(e['event'] == 'retired' for e in view['timeline']) else 'not blocked yet'})")
        service.blocker.retire([request_id], key_id=who.key_id)
        return service.store.request(request_id) or {}

    # -- the worker ----------------------------------------------------------------------------
    @app.get("/v1/worker")
    def worker(who: Caller = Depends(caller)) -> dict[str, Any]:
        who.require("operator", "auditor")
        return service.state()

    @app.post("/v1/worker/pause")
    def pause(who: Caller = Depends(caller)) -> dict[str, Any]:
        who.require("operator")
        service.store.set_paused(True, who.key_id)
        return service.state()

    @app.post("/v1/worker/resume")
    def resume(who: Caller = Depends(caller)) -> dict[str, Any]:
        who.require("operator")
        service.store.set_paused(False, who.key_id)
        service.wake_worker()
        return service.state()

    # -- audit ---------------------------------------------------------------------------------
    @app.get("/v1/audit")
    def audit(who: Caller = Depends(caller), format: Literal["json", "csv"] = "json",
              table: Literal["requests", "events", "steps", "metrics"] = "requests") -> Response:
        who.require("auditor")
        if format == "csv":
            assert table in AUDIT_TABLES
            return PlainTextResponse(service.store.audit_csv(table), media_type="text/csv",
                                     headers={"Content-Disposition": f'attachment; filename="{table}.csv"'})
        return JSONResponse(json.loads(json.dumps(service.store.audit(), default=str)))

    # -- serving -------------------------------------------------------------------------------
    @app.get("/v1/models")
    def models(who: Caller = Depends(caller)) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "unlearnkit"}]}

    @app.post("/v1/chat/completions")
    async def completions(request: Request, who: Caller = Depends(caller)) -> Response:
        data = read_json(await _json_bytes(request))
        try:
            asked = chat.ChatRequest.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(_one_line(exc)) from None
        completion = await run_in_threadpool(service.serving.complete, asked.prompt(), asked.settings(plan.service.max_new_tokens))
        headers = {"X-Unlearnkit-Step": str(completion.step), "X-Unlearnkit-Refused": "true" if completion.refused else "false"}
        if asked.stream:
            return StreamingResponse(chat.stream(completion, model_name), media_type="text/event-stream", headers=headers)
        return JSONResponse(chat.response(completion, model_name), headers=headers)

    return app


async def _json_bytes(request: Request) -> bytes:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, f"send the body as application/json (got '{kind[:100] or 'no content type'}')")
    return await request.body()


def _one_line(exc: ValidationError | RequestValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if p != "body") or "(top level)"
    return f"request body: {loc}: {first['msg']}" if isinstance(exc, ValidationError) else f"{loc}: {first['msg']}"


def _errors(app: FastAPI) -> None:
    def answer(status: int, message: str, headers: dict[str, str | list[str]] | None = None) -> JSONResponse:
        response = JSONResponse({"error": message}, status_code=status)
        for name, values in (headers or {}).items():
            for value in [values] if isinstance(values, str) else values:
                response.headers.append(name, value)
        return response

    statuses: dict[type[Exception], int] = {BadBody: 400, InvalidRequest: 422, Mismatch: 422, Conflict: 409, DataError: 422, NotReady: 503}
    for kind, status in statuses.items():
        app.add_exception_handler(kind, lambda request, exc, status=status: answer(status, str(exc)))
    app.add_exception_handler(ApiError, lambda request, exc: answer(exc.status, exc.message, exc.headers))  # type: ignore[attr-defined]
    app.add_exception_handler(RequestValidationError, lambda request, exc: answer(422, _one_line(exc)))  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, lambda request, exc: answer(exc.status_code, str(exc.detail)))  # type: ignore[attr-defined]

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc, extra={"fields": {"path": request.url.path}})
        return answer(500, "internal error (the service log has the details)")

    app.add_exception_handler(Exception, internal)


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimitAndAccessLog:
    """ASGI middleware: a body over `max_body` bytes is answered 413 before any route reads it
    (by its Content-Length, or by counting a chunked body); every request gets one JSON access
    line (method, path, status, milliseconds, the key's public id)."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tick, status = time.perf_counter(), {"code": 500}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            body = await self._body(scope, receive)
            if body is None:
                await self._too_large(sending)
                return
            delivered = False

            async def replay() -> dict[str, Any]:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, sending)
        finally:
            fields = {"method": scope["method"], "path": scope["path"], "status": status["code"],
                      "ms": round(1000 * (time.perf_counter() - tick), 1), "key": scope.get("state", {}).get("key_id")}
            log.info("request", extra={"fields": fields})

    async def _body(self, scope: dict[str, Any], receive: Receive) -> bytes | None:
        """The whole body, or None when it is over the limit."""
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        payload = json.dumps({"error": f"request body over the limit of {self.max_body} bytes (service.max_body_bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
