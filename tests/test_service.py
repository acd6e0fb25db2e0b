"""`unlearnkit serve`: the requests API, auth and roles, immediate blocking, the background worker,
chat completions, the audit export, a real uvicorn process killed and restarted, and the status
page in headless Chromium. Everything runs on the tiny model that learned the test requests."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from sequential_helpers import learned_model_dir, person_records, requests, write_data
from unlearnkit.data.schema import ForgetRequest
from unlearnkit.engine.ledger import Ledger
from unlearnkit.errors import UnlearnkitError
from unlearnkit.plan import load_plan
from unlearnkit.service.app import create_app
from unlearnkit.service.runtime import Service
from unlearnkit.service.store import ServiceStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A method that forgets a tiny model's request within seconds, with a damage budget it can meet.
METHOD = "{name: npo_gd, settings: {lr: 3.0e-3, max_steps: 30, batch_size: 3, schedule: constant}}"
PARAPHRASE = "In which town was Liora Mendeval born?"  # of r1's "Where was Liora Mendeval born?"


def write_serve_plan(folder: Path, extra: str = "") -> Path:
    write_data(folder, 1)
    plan = folder / "plan.yaml"
    plan.write_text(
        f"model: {learned_model_dir()}\nmethod: {METHOD}\nrequests: [{{submitted: true}}]\nretain: [retain.jsonl]\n"
        "evaluation: {suite: quick, per_set: 2}\noutput: run\nseed: 3\ncheckpoints: {keep: 'last:1'}\n"
        "guard: {budget: {retain_drop: 1.0, check_every: 2}}\n" + extra
    )
    return plan


def body(n: int, **changes: Any) -> dict[str, Any]:
    """Request r{n} (forget person n-1) as a JSON body."""
    return requests(n)[n - 1].model_dump(mode="json") | changes


def wait_for(check: Callable[[], Any], timeout: float = 120, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stored(run: Path) -> tuple[int, int, int, list[str]]:
    """What a refused body must not change: requests, submissions, events, request texts."""
    ledger = Ledger(run / "ledger.sqlite")
    counts = tuple(ledger.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("requests", "service_submissions", "service_events"))
    ledger.close()
    return (*counts, sorted(p.name for p in (run / "requests").glob("*")))  # type: ignore[return-value]


# -- one service for the API tests (FastAPI's test client) ----------------------------------------
class Served:
    def __init__(self, client: TestClient, run: Path, keys: dict[str, str]) -> None:
        self.client, self.run, self.keys = client, run, keys

    def as_(self, who: str) -> dict[str, str]:
        return bearer(self.keys[who])

    def view(self, request_id: str, who: str = "operator") -> dict[str, Any]:
        return self.client.get(f"/v1/requests/{request_id}", headers=self.as_(who)).json()

    def status(self, request_id: str) -> str:
        return self.view(request_id)["status"]

    def idle(self) -> None:
        """Wait until every request is verified and the worker has recorded it all."""
        items = lambda: self.client.get("/v1/requests?limit=500", headers=self.as_("operator")).json()["items"]  # noqa: E731
        worker = lambda: self.client.get("/v1/worker", headers=self.as_("operator")).json()["worker"]  # noqa: E731
        wait_for(lambda: all(r["status"] == "verified" for r in items()) and worker() in ("idle", "paused"), what="an idle queue")

    def chat(self, text: str, who: str = "alice", **extra: Any) -> httpx.Response:
        return self.client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}], **extra}, headers=self.as_(who))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("served")
    plan = load_plan(write_serve_plan(folder, "service: {max_body_bytes: 65536, max_text_chars: 2000, max_records: 50}\n"))
    service = Service.open(plan)
    store = service.store
    keys = {"alice": store.add_key("alice", "submitter").token, "bob": store.add_key("bob", "submitter").token,
            "operator": store.add_key("ops", "operator").token, "auditor": store.add_key("audit", "auditor").token,
            "slow": store.add_key("slow", "submitter", rate_limit=2).token}
    with TestClient(create_app(service)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, what="/readyz")
        yield Served(client, plan.output, keys)


def test_health_readiness_and_a_submission_with_its_status_url(served: Served) -> None:
    client = served.client
    assert client.get("/healthz").json() == {"ok": True}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["step"] == 0
    answer = client.post("/v1/requests", json=body(1), headers=served.as_("alice") | {"Idempotency-Key": "first"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["id"] == "r1" and answer.headers["location"] == answer.json()["status_url"] == "/v1/requests/r1"
    assert answer.json()["status"] in ("received", "blocked")
    verified = wait_for(lambda: (v := served.view("r1", "alice"))["status"] == "verified" and v, what="r1 verified")
    assert [e["event"] for e in verified["timeline"]] == ["received", "blocked", "applied", "verified"]
    assert verified["step"] == 1 and verified["metrics"]["step"] == 1 and "probability" in verified["metrics"]["values"]
    assert verified["verdict"]["verdict"] == "forgotten", verified["verdict"]
    times = [e["at"] for e in verified["timeline"]]
    assert times == sorted(times)
    # The weights forgot: the request's probability after its step is below the start model's.
    card = Ledger(served.run / "ledger.sqlite").verdicts()[1]
    assert card["after"]["forget_probability"] < card["before"]["forget_probability"] - 0.3
    wait_for(lambda: client.get("/readyz").json()["step"] == 1, what="the new checkpoint served")


def test_no_key_bad_key_and_wrong_role(served: Served) -> None:
    client = served.client
    missing = client.get("/v1/requests")
    assert missing.status_code == 401 and "no API key" in missing.json()["error"]
    assert [c.split()[0] for c in missing.headers.get_list("www-authenticate")] == ["Bearer", "Basic"]
    key_id = served.keys["alice"].split("_")[1]
    for token in ("nonsense", f"uk_{key_id}_{'A' * 43}", served.keys["alice"][:-1] + "x", "uk_000000000000_" + "B" * 43):
        assert client.get("/v1/requests", headers=bearer(token)).status_code == 401, token
    assert client.get("/v1/requests", headers={"X-API-Key": served.keys["alice"]}).status_code == 200
    basic = base64.b64encode(f"op:{served.keys['operator']}".encode()).decode()
    assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    forbidden = [
        ("post", "/v1/requests", "operator"), ("post", "/v1/requests", "auditor"), ("get", "/v1/audit", "alice"),
        ("get", "/v1/audit", "operator"), ("post", "/v1/worker/pause", "alice"), ("post", "/v1/worker/pause", "auditor"),
        ("post", "/v1/requests/r1/retire", "alice"), ("get", "/", "alice"), ("get", "/report", "bob"),
    ]
    for method, path, who in forbidden:
        answer = client.request(method.upper(), path, headers=served.as_(who), json=body(2) if method == "post" else None)
        assert answer.status_code == 403, (method, path, who, answer.text)
        assert "role" in answer.json()["error"]
    assert client.get("/v1/nowhere", headers=served.as_("alice")).status_code == 404
    assert client.delete("/v1/requests", headers=served.as_("alice")).status_code == 405


def test_a_submitter_sees_only_its_own_requests(served: Served) -> None:
    client = served.client
    assert client.post("/v1/requests", json=body(2), headers=served.as_("bob")).status_code == 202
    assert client.get("/v1/requests/r2", headers=served.as_("bob")).status_code == 200
    hidden = client.get("/v1/requests/r2", headers=served.as_("alice"))
    assert hidden.status_code == 404 and "among this key's requests" in hidden.json()["error"]
    assert [r["id"] for r in client.get("/v1/requests", headers=served.as_("alice")).json()["items"]] == ["r1"]
    assert [r["id"] for r in client.get("/v1/requests", headers=served.as_("bob")).json()["items"]] == ["r2"]
    for reader in ("operator", "auditor"):
        assert client.get("/v1/requests/r2", headers=served.as_(reader)).status_code == 200
    # Paging in arrival order, and filters.
    first = client.get("/v1/requests?limit=1", headers=served.as_("auditor")).json()
    assert [r["id"] for r in first["items"]] == ["r1"] and first["next"] == 1
    second = client.get(f"/v1/requests?limit=1&after={first['next']}", headers=served.as_("auditor")).json()
    assert [r["id"] for r in second["items"]] == ["r2"]
    assert [r["id"] for r in client.get("/v1/requests?status=verified", headers=served.as_("auditor")).json()["items"]] == ["r1"]
    assert client.get("/v1/requests?kind=copyright", headers=served.as_("auditor")).json()["items"] == []
    for bad in ("limit=0", "limit=x", "status=gone", "after=-1"):
        answer = client.get(f"/v1/requests?{bad}", headers=served.as_("auditor"))
        assert answer.status_code == 422 and "\n" not in answer.json()["error"], bad
    wait_for(lambda: served.status("r2") == "verified", what="r2 verified")


def test_retries_are_idempotent_and_conflicts_are_409(served: Served) -> None:
    client, alice = served.client, served.as_("alice")
    request = body(3)
    first = client.post("/v1/requests", json=request, headers=alice | {"Idempotency-Key": "take-3"})
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    # Retries of the same key and body, also at the same time from several threads: one request.
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(client.post("/v1/requests", json=request, headers=alice | {"Idempotency-Key": "take-3"})))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {(a.status_code, a.json()["id"], a.headers.get("idempotent-replayed")) for a in answers} == {(202, "r3", "true")}
    assert [r["id"] for r in client.get("/v1/requests", headers=served.as_("auditor")).json()["items"]] == ["r1", "r2", "r3"]
    # The same key with another body is refused; the same id and content without a key is that request.
    other = client.post("/v1/requests", json=body(4), headers=alice | {"Idempotency-Key": "take-3"})
    assert other.status_code == 422 and "different body" in other.json()["error"]
    again = client.post("/v1/requests", json=request, headers=alice)
    assert again.status_code == 200 and again.json()["id"] == "r3"
    changed = client.post("/v1/requests", json=request | {"records": request["records"][:1]}, headers=alice)
    assert changed.status_code == 409 and "already taken" in changed.json()["error"]
    stolen = client.post("/v1/requests", json=request, headers=served.as_("bob"))
    assert stolen.status_code == 409
    generated = client.post("/v1/requests", json={"records": body(4)["records"]}, headers=alice)
    assert generated.status_code == 202 and generated.json()["id"].startswith("req-")


HOSTILE: list[tuple[str, bytes | str | dict[str, Any], int]] = [
    ("not JSON", b"not json", 400),
    ("invalid UTF-8", b'{"id": "x\xff\xfe", "records": []}', 400),
    ("empty body", b"", 400),
    ("NaN", b'{"id": "x", "records": [{"question": "q", "answer": "a"}], "meta": {"v": NaN}}', 400),
    ("deep nesting, and over the size limit", b"[" * 200_000 + b"]" * 200_000, 413),
    ("nesting far too deep", b'{"id": "x", "meta": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", 400),
    ("a list", b"[1, 2]", 422),
    ("a string", b'"forget me"', 422),
    ("null", b"null", 422),
    ("no records", {"id": "x"}, 422),
    ("empty records", {"id": "x", "records": []}, 422),
    ("records of the wrong type", {"id": "x", "records": "text"}, 422),
    ("a record that is not an object", {"id": "x", "records": [1]}, 422),
    ("a record without its answer", {"id": "x", "records": [{"question": "q"}]}, 422),
    ("an id of the wrong type", {"id": 5, "records": [{"text": "t"}]}, 422),
    ("path metacharacters in the id", {"id": "../../etc/passwd", "records": [{"text": "t"}]}, 422),
    ("a slash in the id", {"id": "a/b", "records": [{"text": "t"}]}, 422),
    ("SQL in the id", {"id": "x'; DROP TABLE requests; --", "records": [{"text": "t"}]}, 422),
    ("an empty id", {"id": "", "records": [{"text": "t"}]}, 422),
    ("a 300-character id", {"id": "x" * 300, "records": [{"text": "t"}]}, 422),
    ("a huge text field", {"id": "x", "records": [{"text": "w" * 5000}]}, 422),
    ("too many records", {"id": "x", "records": [{"text": f"t{i}"} for i in range(60)]}, 422),
    ("deep nesting in meta", {"id": "x", "records": [{"text": "t"}], "meta": json.loads("[" * 40 + "]" * 40)}, 422),
    ("a NUL character", {"id": "x", "records": [{"text": "a\u0000b"}]}, 422),
    ("a lone surrogate", b'{"id": "x", "records": [{"text": "\\ud800"}]}', 422),
    ("an unknown field", {"id": "x", "records": [{"text": "t"}], "owner": "root"}, 422),
    ("a bad date", {"id": "x", "records": [{"text": "t"}], "received_at": "yesterday"}, 422),
    ("a kind that is a list", {"id": "x", "records": [{"text": "t"}], "kind": ["privacy"]}, 422),
    ("a body over the size limit", {"id": "x", "records": [{"text": "w" * 1000}] * 80}, 413),
]


def test_malformed_and_hostile_bodies_get_4xx_and_store_nothing(served: Served) -> None:
    client, alice = served.client, served.as_("alice")
    served.idle()
    before = stored(served.run)
    for name, payload, status in HOSTILE:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode() if isinstance(payload, dict) else payload.encode()
        answer = client.post("/v1/requests", content=raw, headers=alice | {"Content-Type": "application/json"})
        assert answer.status_code == status, (name, answer.status_code, answer.text[:300])
        error = answer.json()["error"]
        assert error and "\n" not in error and len(error) < 400, (name, error)
    assert len(HOSTILE) >= 20
    # Not JSON at all, a chunked body over the limit, an unusable Idempotency-Key.
    assert client.post("/v1/requests", content=b"{}", headers=alice | {"Content-Type": "text/plain"}).status_code == 415
    chunks = (b"x" * 16384 for _ in range(8))
    assert client.post("/v1/requests", content=chunks, headers=alice | {"Content-Type": "application/json"}).status_code == 413
    assert client.post("/v1/requests", json=body(5), headers=alice | {"Idempotency-Key": "k" * 300}).status_code == 400
    # The schema's own message, as the CLI prints it for a file.
    missing = client.post("/v1/requests", json={"id": "x", "records": [{"question": "q"}]}, headers=alice)
    assert missing.json()["error"] == "request body (id 'x') records[0]: field 'answer': missing (a record with 'question' needs it)"
    assert stored(served.run) == before
    # SQL and path metacharacters in a URL find nothing and change nothing.
    for probe in ("x' OR '1'='1", "..%2F..%2Fledger.sqlite", "r1; DROP TABLE requests"):
        assert client.get(f"/v1/requests/{probe}", headers=served.as_("auditor")).status_code == 404
    assert stored(served.run) == before


def test_the_guard_refuses_a_paraphrase_before_the_worker_applies_it(served: Served) -> None:
    client, operator = served.client, served.as_("operator")
    served.idle()
    assert client.post("/v1/worker/pause", headers=operator).json()["paused"] is True
    request = ForgetRequest(id="r5", kind="privacy", records=person_records(4))
    question = "What does Sela Dunmore do?"
    assert served.chat(question).headers["x-unlearnkit-refused"] == "false"
    step = client.get("/readyz").json()["step"]
    submitted = time.monotonic()
    assert client.post("/v1/requests", json=request.model_dump(mode="json"), headers=served.as_("alice")).status_code == 202
    wait_for(lambda: served.status("r5") == "blocked", timeout=30, what="r5 blocked")
    blocked_in = time.monotonic() - submitted
    for text in ("Which job does Sela Dunmore have?", "What is Sela Dunmore's occupation?", question):
        answer = served.chat(text)
        assert answer.headers["x-unlearnkit-refused"] == "true", text
        assert answer.json()["choices"][0]["message"]["content"].startswith("I'm sorry")
    assert served.chat("Where was Pia Holt born?").headers["x-unlearnkit-refused"] == "false"  # kept content is still answered
    ledger = Ledger(served.run / "ledger.sqlite")
    assert ledger.request_status("r5") == "pending" and client.get("/readyz").json()["step"] == step  # no weight change yet
    ledger.close()
    assert blocked_in < 30
    page = client.get("/", headers=operator).text
    assert 'id="request-r5"' in page and "paused by an operator" in page
    assert client.post("/v1/worker/resume", headers=operator).json()["paused"] is False
    wait_for(lambda: served.status("r5") == "verified", what="r5 verified")
    assert served.view("r5")["blocking"] is True  # the plan keeps blocking entries (retire_guard: false)


def test_an_operator_retires_a_guard_entry(served: Served) -> None:
    client, operator = served.client, served.as_("operator")
    wait_for(lambda: served.view("r1")["blocking"], what="r1 blocking")
    assert served.chat(PARAPHRASE).headers["x-unlearnkit-refused"] == "true"
    retired = client.post("/v1/requests/r1/retire", headers=operator)
    assert retired.status_code == 200 and retired.json()["blocking"] is False
    last = retired.json()["timeline"][-1]
    assert last["event"] == "retired" and last["detail"] == {"reason": "operator"}
    assert client.get("/v1/audit?format=json", headers=served.as_("auditor")).json()["events"][-1]["key_id"] == served.keys["operator"].split("_")[1]
    assert served.chat(PARAPHRASE).headers["x-unlearnkit-refused"] == "false"  # the weights answer it now
    assert client.post("/v1/requests/r1/retire", headers=operator).status_code == 409
    assert client.post("/v1/requests/nothing/retire", headers=operator).status_code == 404
    saved = json.loads((served.run / "service" / "guard" / "guard_requests.json").read_text())
    assert "r1" not in saved and "r5" in saved  # the saved index follows


def test_chat_completions_speak_openai(served: Served) -> None:
    client = served.client
    plain = served.chat("Where was Pia Holt born?", max_tokens=8)
    assert plain.status_code == 200
    data = plain.json()
    assert data["object"] == "chat.completion" and data["choices"][0]["message"]["role"] == "assistant"
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"] > 0
    assert data["system_fingerprint"] == f"step-{plain.headers['x-unlearnkit-step']}"
    streamed = served.chat("Where was Pia Holt born?", max_tokens=8, stream=True)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == data["choices"][0]["message"]["content"]
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
             {"role": "user", "content": [{"type": "text", "text": "What does Sela Dunmore do?"}]}]
    assert client.post("/v1/chat/completions", json={"messages": turns}, headers=served.as_("bob")).headers["x-unlearnkit-refused"] == "true"
    for bad in ({"messages": []}, {"messages": [{"role": "robot", "content": "x"}]}, {"messages": "hi"}, {"messages": [{"role": "user", "content": "x"}], "n": 3},
                {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}):
        answer = client.post("/v1/chat/completions", json=bad, headers=served.as_("bob"))
        assert answer.status_code == 422 and answer.json()["error"].startswith("request body: "), bad
    assert client.post("/v1/chat/completions", content=b"{", headers=served.as_("bob") | {"Content-Type": "application/json"}).status_code == 400
    assert client.get("/v1/models", headers=served.as_("auditor")).json()["data"][0]["id"] == "unlearnkit:run"


def test_the_audit_export_holds_everything_but_secrets(served: Served) -> None:
    client, auditor = served.client, served.as_("auditor")
    served.idle()
    audit = client.get("/v1/audit", headers=auditor).json()
    assert {r["id"] for r in audit["requests"]} >= {"r1", "r2", "r3", "r5"} and audit["ledger_problems"] == []
    assert {e["event"] for e in audit["events"]} >= {"received", "blocked", "applied", "verified", "retired", "paused", "resumed"}
    assert {"alice", "bob", "ops", "audit"} <= {k["name"] for k in audit["keys"]}
    assert all(set(k) == {"id", "name", "role", "rate_limit", "created_at", "revoked_at"} for k in audit["keys"])
    text = json.dumps(audit)
    assert not any(key.split("_", 2)[2] in text for key in served.keys.values())
    csv = client.get("/v1/audit?format=csv&table=events", headers=auditor)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "seq,request_id,event,at,step,key_id,detail" and len(csv.text.splitlines()) == len(audit["events"]) + 1
    assert client.get("/v1/audit?format=xml", headers=auditor).status_code == 422


def test_a_rate_limited_key_gets_429(served: Served) -> None:
    client, slow = served.client, served.as_("slow")
    codes = [client.get("/v1/requests", headers=slow).status_code for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429
    limited = client.get("/v1/requests", headers=slow)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert client.get("/v1/requests", headers=served.as_("alice")).status_code == 200  # other keys are not slowed


def test_keys_are_stored_hashed_and_never_in_plain_text(served: Served, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    plan = write_serve_plan(tmp_path)
    made = CliRunner().invoke(app, ["keys", "add", str(plan), "--role", "auditor", "--name", "ledger-team"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    key_id, secret = token.split("_")[1], token.split("_", 2)[2]
    store = ServiceStore(tmp_path / "run")
    row = store.key(key_id)
    assert row is not None and row["hash_kind"].startswith("scrypt:") and len(row["hash"]) == 32 and len(row["salt"]) == 16
    store.close()
    for path in (tmp_path / "run").rglob("*"):  # the ledger, its WAL, everything
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    for path in served.run.rglob("*"):
        if path.is_file():
            assert not any(k.split("_", 2)[2].encode() in path.read_bytes() for k in served.keys.values()), path
    listed = CliRunner().invoke(app, ["keys", "list", str(plan)], env={"COLUMNS": "200"})
    assert key_id in listed.output and secret not in listed.output and "ledger-team" in listed.output
    assert CliRunner().invoke(app, ["keys", "revoke", str(plan), key_id]).exit_code == 0
    assert CliRunner().invoke(app, ["keys", "revoke", str(plan), key_id]).exit_code == 1
    wrong = CliRunner().invoke(app, ["keys", "add", str(plan), "--role", "admin"])
    assert wrong.exit_code == 1 and "use one of submitter, operator, auditor" in str(wrong.exception)


def test_not_ready_is_503_and_a_second_service_is_refused(tmp_path: Path) -> None:
    plan = load_plan(write_serve_plan(tmp_path))
    service = Service.open(plan)
    key = service.store.add_key("a", "submitter").token
    try:
        client = TestClient(create_app(service))  # no `with`: the lifespan (threads, model) never starts
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, headers=bearer(key)).status_code == 503
        with pytest.raises(UnlearnkitError, match="another unlearnkit run or service is using this folder"):
            Service.open(plan)
    finally:
        service.close()


def test_unlearnkit_run_applies_submitted_requests_and_coalesces(tmp_path: Path) -> None:
    """The seam: requests the service stored are the run's requests, so `unlearnkit run` can apply
    them too; `coalesce: 2` applies two per step."""
    from unlearnkit.engine.runner import run_plan

    torch.set_num_threads(1)
    plan = load_plan(write_serve_plan(tmp_path, "coalesce: 2\nfinal: {report: false}\n"))
    store = ServiceStore(plan.output)
    key = store.add_key("a", "submitter")
    for request in requests(3):
        assert store.submit(request, key.key_id, None, request.content_hash())[1] == "new"
    store.close()
    run = run_plan(plan)
    ledger = Ledger(run / "ledger.sqlite")
    assert ledger.check() == []
    assert [(s.step, s.request_id) for s in ledger.steps()] == [(1, "r1"), (2, "r3")]
    assert ledger.request_steps() == {"r1": 1, "r2": 1, "r3": 2}
    assert {row["scope"] for row in ledger.metrics(2) if row["name"] == "probability"} == {"r1", "r2", "r3", "retain"}
    assert ledger.verdicts()[1]["request"] == "r1..r2"
    ledger.close()
    no_source = tmp_path / "plain.yaml"
    no_source.write_text((tmp_path / "plan.yaml").read_text().replace("[{submitted: true}]", "[requests.jsonl]").replace("output: run", "output: other"))
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    refused = CliRunner().invoke(app, ["serve", str(no_source)])
    assert refused.exit_code == 1 and "add `- submitted: true` as the last entry" in str(refused.exception)


# -- a real uvicorn process: SIGKILL in the middle of a step, restart, status page, SIGTERM ------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Live:
    """`python -m unlearnkit serve PLAN` on a free loopback port."""

    def __init__(self, plan: Path, log: Path) -> None:
        self.plan, self.log, self.port = plan, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, crash: str | None = None) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "UNLEARNKIT_PROGRESS": "0", "TRANSFORMERS_VERBOSITY": "error"}
        env.pop("UNLEARNKIT_CRASH_AT", None)
        if crash:
            env["UNLEARNKIT_CRASH_AT"] = crash
        self.proc = subprocess.Popen([sys.executable, "-m", "unlearnkit", "serve", str(self.plan), "--port", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        try:
            wait_for(lambda: self.ready() or self.proc.poll() is not None, timeout=180, what="the server to start")  # type: ignore[union-attr]
        except AssertionError:
            self.stop()  # never leave a server behind
            raise
        assert self.proc.poll() is None, self.log.read_text()[-3000:]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Submit four requests to a server that SIGKILLs itself in step 2 (after the checkpoint
    rename, before the ledger commit), then restart it without the crash."""
    folder = tmp_path_factory.mktemp("live")
    plan = write_serve_plan(folder)
    store = ServiceStore(folder / "run")
    submitter, operator = store.add_key("legal", "submitter").token, store.add_key("ops", "operator").token
    store.close()
    server = Live(plan, folder / "server.log")
    try:
        yield from _killed_and_restarted(server, folder, submitter, operator)
    finally:
        server.stop()


def _killed_and_restarted(server: Live, folder: Path, submitter: str, operator: str) -> Iterator[dict[str, Any]]:
    server.start(crash="ledger:2")
    accepted, bodies = [], [body(n) for n in range(1, 5)]
    for n, sent in enumerate(bodies, start=1):
        answer = httpx.post(f"{server.url}/v1/requests", json=sent, headers=bearer(submitter) | {"Idempotency-Key": f"n{n}"}, timeout=30)
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["id"])
    assert server.proc is not None
    assert server.proc.wait(180) == -signal.SIGKILL  # killed by the crash point, no cleanup
    ledger = Ledger(folder / "run" / "ledger.sqlite")
    at_kill = {"steps": [s.step for s in ledger.steps()], "ids": [r["id"] for r in ledger.requests()],
               "checkpoints": sorted(p.name for p in (folder / "run" / "checkpoints").iterdir())}
    ledger.close()
    server.start()
    yield {"server": server, "run": folder / "run", "accepted": accepted, "bodies": bodies, "at_kill": at_kill,
           "submitter": submitter, "operator": operator}


def test_a_killed_server_restarts_with_nothing_lost_or_applied_twice(live: dict[str, Any]) -> None:
    server, run = live["server"], live["run"]
    assert live["accepted"] == ["r1", "r2", "r3", "r4"]
    assert live["at_kill"]["steps"] == [1] and live["at_kill"]["ids"] == live["accepted"]  # every accepted request is in the ledger
    assert "step-002" in live["at_kill"]["checkpoints"]  # the unfinished step's orphan checkpoint
    headers = bearer(live["submitter"])

    def all_verified() -> bool:
        items = httpx.get(f"{server.url}/v1/requests", headers=headers, timeout=30).json()["items"]
        return [r["status"] for r in items] == ["verified"] * 4

    wait_for(all_verified, timeout=240, what="every request verified after the restart")
    ledger = Ledger(run / "ledger.sqlite")
    assert ledger.check() == []
    assert [(s.step, s.request_id) for s in ledger.steps()] == [(1, "r1"), (2, "r2"), (3, "r3"), (4, "r4")]  # each exactly once
    events = ledger.db.execute("SELECT request_id, event, COUNT(*) AS n FROM service_events WHERE request_id IS NOT NULL GROUP BY 1, 2").fetchall()
    assert all(row["n"] == 1 for row in events)
    assert {(row["request_id"], row["event"]) for row in events} >= {(f"r{n}", e) for n in range(1, 5) for e in ("received", "blocked", "applied", "verified")}
    ledger.close()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-004"]  # keep: last:1, the orphan gone
    retry = httpx.post(f"{server.url}/v1/requests", json=live["bodies"][1], headers=headers | {"Idempotency-Key": "n2"}, timeout=30)
    assert retry.status_code == 202 and retry.json()["id"] == "r2" and retry.headers["idempotent-replayed"] == "true"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it with apt-get where it can)")
def test_the_status_page_in_headless_chromium(live: dict[str, Any], tmp_path: Path) -> None:
    server = live["server"]
    wait_for(lambda: httpx.get(f"{server.url}/readyz", timeout=10).json()["step"] == 4, timeout=240, what="step 4 served")
    url = f"http://operator:{live['operator']}@127.0.0.1:{server.port}/"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-ready="yes"' in dom and 'id="queue-empty"' in dom
    for n in range(1, 5):
        assert f'id="request-r{n}"' in dom
    assert dom.count('class="verified">verified') == 4 and 'id="count-verified">4<' in dom
    assert 'id="report-link"' in dom
    anonymous = [f for f in flags if not f.startswith("--user-data-dir")] + [f"--user-data-dir={tmp_path / 'anonymous'}"]
    denied = subprocess.run([CHROMIUM, *anonymous, "--dump-dom", f"http://127.0.0.1:{server.port}/"], capture_output=True, text=True, timeout=120).stdout
    assert 'id="requests"' not in denied  # no key: the browser is asked for one and shows nothing of the page
    shot = tmp_path / "status.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,900", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_sigterm_in_the_middle_of_a_step_commits_it_and_the_next_start_verifies_it(live: dict[str, Any]) -> None:
    server, run = live["server"], live["run"]
    assert server.proc is not None
    answer = httpx.post(f"{server.url}/v1/requests", json=body(5), headers=bearer(live["submitter"]), timeout=30)
    assert answer.status_code == 202
    worker = lambda: httpx.get(f"{server.url}/v1/worker", headers=bearer(live["operator"]), timeout=30).json()["worker"]  # noqa: E731
    wait_for(lambda: worker().startswith("applying step 5"), timeout=60, what="step 5 under way")
    server.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down, then the process exits 143, as every command stopped by SIGTERM does
    # (docs/reliability.md).
    assert server.proc.wait(120) == 143
    ledger = Ledger(run / "ledger.sqlite")
    assert ledger.check() == [] and [s.step for s in ledger.steps()] == [1, 2, 3, 4, 5]  # the step was finished and committed
    assert ledger.request_status("r5") in ("applied", "verified")
    ledger.close()
    lines = [line for line in server.log.read_text(encoding="utf-8").splitlines() if line.strip()]
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, f"log lines that are not JSON: {not_json[:3]}"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records]
    assert "started" in messages and messages.index("stopped", messages.index("stopping: the worker finishes its current stage")) > 0
    assert any(r["message"] == "request" and r.get("path") == "/v1/requests" and r.get("status") == 202 and r.get("key") for r in records)
    text = server.log.read_text(encoding="utf-8")
    assert live["submitter"].split("_", 2)[2] not in text and live["operator"].split("_", 2)[2] not in text  # keys are never logged
    assert "Tarnholm" not in text  # nor request content
    server.start()  # the evaluation a stop left out is done at the start; nothing is applied again
    wait_for(lambda: httpx.get(f"{server.url}/v1/requests/r5", headers=bearer(live["submitter"]), timeout=30).json()["status"] == "verified",
             timeout=120, what="r5 verified after the restart")
    ledger = Ledger(run / "ledger.sqlite")
    assert ledger.check() == [] and len(ledger.steps()) == 5 and all(s.evaluated for s in ledger.steps())
    ledger.close()


def test_model_loads_wait_for_each_other(tiny_model_dir: Path) -> None:
    """transformers patches process-wide state while it loads (PreTrainedModel.tie_weights among
    it); two loads at once in two threads could leave a tied lm_head on the meta device for every
    later load. The service loads checkpoints and the embedder in different threads, so every load
    holds one lock."""
    from unlearnkit.models.loading import LOADING
    from unlearnkit.models.stack import load_subject

    loaded: list[Any] = []
    with LOADING:
        thread = threading.Thread(target=lambda: loaded.append(load_subject(tiny_model_dir)))
        thread.start()
        time.sleep(0.5)
        assert loaded == []  # it waits while another load holds the lock
    thread.join(30)
    assert len(loaded) == 1 and loaded[0].model.lm_head.weight.device.type == "cpu"


def test_the_example_serve_plan_parses() -> None:
    plan = load_plan(Path(__file__).resolve().parents[1] / "examples" / "serve.yaml", check_files=False)  # the demo's world is made by `make demo`
    assert plan.takes_submitted and plan.requests[0].first == 0 and plan.prepare == {} and plan.coalesce == 4
    assert plan.service.retire_guard is False and plan.label == "npo_gd"


def test_a_swap_never_touches_a_generation_in_flight() -> None:
    """A completion keeps the model it started with; the next one gets the new model."""
    from types import SimpleNamespace

    from unlearnkit.methods.guard import GuardedSubject
    from unlearnkit.models.subject import GenerationSettings
    from unlearnkit.service.serving import Serving

    release = threading.Event()

    class Words:
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[str]]:
            return {"input_ids": text.split()}

        def decode(self, ids: list[str], skip_special_tokens: bool = True) -> str:
            return " ".join(ids)

    class Slow:
        """A stand-in model: answers with its name, the first one only once released."""

        def __init__(self, name: str, wait: bool) -> None:
            self.name, self.wait, self.tokenizer = name, wait, Words()

        def render(self, prompt: str) -> str:
            return prompt

        def generate(self, prompts: list[str], settings: Any = None, **kwargs: Any) -> list[list[str]]:
            if self.wait:
                release.wait(30)
            return [[f"answer from {self.name}"] for _ in prompts]

    serving = Serving(SimpleNamespace(in_front_of=lambda model: GuardedSubject(model, name="served")), slots=2)  # type: ignore[arg-type]
    serving.swap(Slow("step 1", wait=True), 1)  # type: ignore[arg-type]
    answers: list[Any] = []
    in_flight = threading.Thread(target=lambda: answers.append(serving.complete("hello there", GenerationSettings())))
    in_flight.start()
    time.sleep(0.3)
    serving.swap(Slow("step 2", wait=False), 2)  # type: ignore[arg-type]
    fresh = serving.complete("hello again", GenerationSettings())
    assert (fresh.text, fresh.step) == ("answer from step 2", 2)
    release.set()
    in_flight.join(30)
    assert (answers[0].text, answers[0].step, answers[0].refused) == ("answer from step 1", 1, False)


def test_coalesced_requests_in_the_service_and_entries_retired_once_verified(tmp_path: Path) -> None:
    """`coalesce: 2` applies the two requests that waited together; `retire_guard: true` takes
    their guard entries out once the weights hold them, and the timeline says so."""
    torch.set_num_threads(1)
    plan = load_plan(write_serve_plan(tmp_path, "coalesce: 2\nfinal: {report: false}\nservice: {retire_guard: true}\n"))
    service = Service.open(plan)
    submitter, operator = bearer(service.store.add_key("a", "submitter").token), bearer(service.store.add_key("o", "operator").token)
    service.store.set_paused(True, None)  # both wait for the same step
    with TestClient(create_app(service)) as client:
        for n in (1, 2):
            assert client.post("/v1/requests", json=body(n), headers=submitter).status_code == 202
        view = lambda rid: client.get(f"/v1/requests/{rid}", headers=operator).json()  # noqa: E731
        wait_for(lambda: view("r1")["status"] == view("r2")["status"] == "blocked", what="both blocked")
        assert client.post("/v1/worker/resume", headers=operator).status_code == 200
        wait_for(lambda: not view("r1")["blocking"] and not view("r2")["blocking"], what="both retired")
        for rid in ("r1", "r2"):
            got = view(rid)
            assert got["status"] == "verified" and got["step"] == 1
            assert [e["event"] for e in got["timeline"]] == ["received", "blocked", "applied", "verified", "retired"]
            assert got["timeline"][-1]["detail"] == {"reason": "verified"}
        assert client.get("/v1/worker", headers=operator).json()["guard_entries"] == 0
    ledger = Ledger(plan.output / "ledger.sqlite")
    assert [(s.step, s.request_id) for s in ledger.steps()] == [(1, "r1")] and ledger.request_steps() == {"r1": 1, "r2": 1}
    ledger.close()


def test_retire_guard_keeps_the_entry_of_a_request_the_weights_did_not_forget(tmp_path: Path) -> None:
    """`retire_guard: true` retires an entry only when the verdict of the step that applied it met
    the forget target: a request the budget stopped short of forgetting stays blocked."""
    torch.set_num_threads(1)
    unreachable = "guard: {budget: {retain_drop: 1.0, check_every: 2}, target: {answer_accuracy: null, probability: 1.0e-9}}\n"
    plan = load_plan(write_serve_plan(tmp_path, "final: {report: false}\nservice: {retire_guard: true}\n" + unreachable))
    service = Service.open(plan)
    submitter, operator = bearer(service.store.add_key("a", "submitter").token), bearer(service.store.add_key("o", "operator").token)
    with TestClient(create_app(service)) as client:
        assert client.post("/v1/requests", json=body(1), headers=submitter).status_code == 202
        view = lambda: client.get("/v1/requests/r1", headers=operator).json()  # noqa: E731
        wait_for(lambda: view()["status"] == "verified", what="r1 verified")
        time.sleep(1.0)  # the worker's next pass, where a retirement would happen
        got = view()
        assert got["verdict"]["target_met"] is False
        assert got["blocking"] is True and "retired" not in [e["event"] for e in got["timeline"]]
        assert client.get("/v1/worker", headers=operator).json()["guard_entries"] == 1
