"""The service's state: its own tables in the run's ledger (`RUN/ledger.sqlite`), beside the runner's.

- `service_keys`: API keys (id, name, role, scrypt salt and hash, optional rate limit, revocation);
- `service_submissions`: who submitted a request, with which `Idempotency-Key` and body digest;
- `service_events`: each request's timeline (received, blocked, applied, verified, purged,
  retired) and the operators' actions (paused, resumed), with millisecond times.

A submitted request is one transaction: its ledger row (the runner's `requests` table, at the
next position), its submission row and its `received` event. Its text is written to
`RUN/requests/<id>.jsonl` before that commit, so every committed request has its text (until
purged); a text without a row (a crash in between) is removed at the next start.

The API status of a request is derived, never stored twice: the ledger's `applied`, `verified`
or `purged` when the runner got that far, else `blocked` once the guard holds it, else
`received`. Each thread has its own SQLite connection (WAL lets readers and one writer overlap).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from unlearnkit.data.loaders import write_jsonl
from unlearnkit.data.schema import ForgetRequest
from unlearnkit.engine.ledger import Ledger
from unlearnkit.engine.runner import request_copy
from unlearnkit.errors import UnlearnkitError
from unlearnkit.service.keys import SCRYPT_LABEL, NewKey, Role, make_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS service_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('submitter', 'operator', 'auditor')),
    salt       BLOB NOT NULL,
    hash       BLOB NOT NULL,
    hash_kind  TEXT NOT NULL,
    rate_limit REAL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS service_submissions (
    request_id      TEXT PRIMARY KEY REFERENCES requests(id),
    key_id          TEXT NOT NULL REFERENCES service_keys(id),
    idempotency_key TEXT,
    body_sha256     TEXT NOT NULL,
    submitted_at    TEXT NOT NULL,
    UNIQUE (key_id, idempotency_key)
);
CREATE TABLE IF NOT EXISTS service_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT REFERENCES requests(id),
    event      TEXT NOT NULL,
    at         TEXT NOT NULL,
    step       INTEGER,
    key_id     TEXT,
    detail     TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS service_events_once ON service_events(request_id, event) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS service_submissions_key ON service_submissions(key_id)
"""
EVENTS = ("received", "blocked", "applied", "verified", "purged", "retired")
STATUSES = ("received", "blocked", "applied", "verified", "purged")
PAUSED_KEY = "service_paused"
Outcome = Literal["new", "replayed", "existing"]

# The API status of each request, derived from the ledger and the events (see the module docstring).
REQUESTS_VIEW = """
SELECT r.id, r.position, r.received_at, r.kind, r.sha256, r.records, r.status AS ledger_status, r.step, r.purged_at,
       s.key_id, s.submitted_at,
       CASE WHEN r.status != 'pending' THEN r.status
            WHEN EXISTS (SELECT 1 FROM service_events e WHERE e.request_id = r.id AND e.event = 'blocked') THEN 'blocked'
            ELSE 'received' END AS status,
       EXISTS (SELECT 1 FROM service_events e WHERE e.request_id = r.id AND e.event = 'blocked')
       AND NOT EXISTS (SELECT 1 FROM service_events e WHERE e.request_id = r.id AND e.event = 'retired') AS blocking
FROM requests r LEFT JOIN service_submissions s ON s.request_id = r.id
"""


def stamp() -> str:
    """Event times in milliseconds (time to `blocked` is measured in seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Conflict(UnlearnkitError):
    """A submission that contradicts what is stored (HTTP 409)."""


class Mismatch(UnlearnkitError):
    """An Idempotency-Key reused with a different body (HTTP 422)."""


class ServiceStore:
    """The service's view of one run folder; safe to use from any thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "ledger.sqlite"
        self._local = threading.local()
        self.submit_lock = threading.Lock()  # one submission at a time: check, write the text, commit
        with self.ledger.transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    @property
    def ledger(self) -> Ledger:
        """This thread's connection to the ledger."""
        ledger = getattr(self._local, "ledger", None)
        if ledger is None:
            ledger = self._local.ledger = Ledger(self.path)
        return ledger

    @property
    def db(self) -> sqlite3.Connection:
        return self.ledger.db

    def close(self) -> None:
        """Close this thread's connection."""
        ledger = getattr(self._local, "ledger", None)
        if ledger is not None:
            ledger.close()
            self._local.ledger = None

    # -- keys ----------------------------------------------------------------------------------
    def add_key(self, name: str, role: Role, rate_limit: float | None = None) -> NewKey:
        key = make_key()
        with self.ledger.transaction() as db:
            db.execute("INSERT INTO service_keys (id, name, role, salt, hash, hash_kind, rate_limit, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (key.key_id, name, role, key.salt, key.digest, SCRYPT_LABEL, rate_limit, stamp()))
        return key

    def key(self, key_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM service_keys WHERE id = ?", (key_id,)).fetchone()

    def keys(self) -> list[dict[str, Any]]:
        """Every key without its salt and hash."""
        rows = self.db.execute("SELECT id, name, role, rate_limit, created_at, revoked_at FROM service_keys ORDER BY created_at")
        return [dict(r) for r in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self.ledger.transaction() as db:
            return db.execute("UPDATE service_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (stamp(), key_id)).rowcount == 1

    # -- submissions ---------------------------------------------------------------------------
    def submit(self, request: ForgetRequest, key_id: str, idempotency_key: str | None, body_sha256: str) -> tuple[str, Outcome]:
        """Store a submitted request; returns its id and `new`, `replayed` (a retry with the same
        Idempotency-Key) or `existing` (the same request again, stored before).

        An `Idempotency-Key` already used by this key returns the request it made (a retry);
        with another body it is a `Mismatch`. The same id with the same content from the same key
        is that request again; with other content, or from another key, it is a `Conflict`.
        """
        with self.submit_lock:
            if idempotency_key is not None:
                row = self.db.execute("SELECT request_id, body_sha256 FROM service_submissions WHERE key_id = ? AND idempotency_key = ?",
                                      (key_id, idempotency_key)).fetchone()
                if row is not None:
                    if row["body_sha256"] != body_sha256:
                        raise Mismatch(f"Idempotency-Key '{idempotency_key}' was used for request '{row['request_id']}' with a different body")
                    return row["request_id"], "replayed"
            existing = self.db.execute(
                "SELECT r.sha256, s.key_id FROM requests r LEFT JOIN service_submissions s ON s.request_id = r.id WHERE r.id = ?", (request.id,)
            ).fetchone()
            if existing is not None:
                if existing["key_id"] != key_id or existing["sha256"] != request.content_hash():
                    raise Conflict(f"request id '{request.id}' is already taken by a request with different content or from another key")
                return request.id, "existing"
            write_jsonl(request_copy(self.folder, request.id), [request])

            def record(db: sqlite3.Connection, position: int) -> None:
                at = stamp()
                db.execute("INSERT INTO service_submissions VALUES (?, ?, ?, ?, ?)", (request.id, key_id, idempotency_key, body_sha256, at))
                db.execute("INSERT INTO service_events (request_id, event, at, key_id, detail) VALUES (?, 'received', ?, ?, ?)",
                           (request.id, at, key_id, json.dumps({"position": position})))

            self.ledger.append_request(request, also=record)
            return request.id, "new"

    def remove_orphan_texts(self) -> list[Path]:
        """Request texts without a ledger row (a crash between writing the text and the commit)."""
        folder = self.folder / "requests"
        if not folder.is_dir():
            return []
        known = {row["id"] for row in self.db.execute("SELECT id FROM requests")}
        orphans = [p for p in folder.glob("*.jsonl") if p.stem not in known]
        for path in orphans:
            path.unlink(missing_ok=True)
        return orphans

    # -- events --------------------------------------------------------------------------------
    def record(self, request_id: str | None, event: str, *, step: int | None = None, key_id: str | None = None,
               detail: dict[str, Any] | None = None, db: sqlite3.Connection | None = None) -> None:
        """Add an event; a request's event is recorded once (a repeat is ignored)."""
        values = (request_id, event, stamp(), step, key_id, json.dumps(detail) if detail else None)
        statement = "INSERT OR IGNORE INTO service_events (request_id, event, at, step, key_id, detail) VALUES (?, ?, ?, ?, ?, ?)"
        if db is not None:
            db.execute(statement, values)
            return
        with self.ledger.transaction() as conn:
            conn.execute(statement, values)

    def record_many(self, rows: list[tuple[str, str, int | None, dict[str, Any] | None]], key_id: str | None = None) -> None:
        """(request id, event, step, detail) rows in one transaction; `key_id`: who caused them."""
        with self.ledger.transaction() as db:
            for request_id, event, step, detail in rows:
                self.record(request_id, event, step=step, key_id=key_id, detail=detail, db=db)

    def sync_events(self, late: bool = False) -> int:
        """Add the `applied`, `verified` and `purged` events the ledger implies and the timeline
        lacks (right after each runner stage; at a start, for a stage a kill left unrecorded,
        marked `late`). Returns how many were added."""
        detail = {"late": True} if late else None
        rows: list[tuple[str, str, int | None, dict[str, Any] | None]] = []
        have = {(r["request_id"], r["event"]) for r in self.db.execute("SELECT request_id, event FROM service_events WHERE request_id IS NOT NULL")}
        for row in self.db.execute("SELECT id, status, step FROM requests WHERE step IS NOT NULL ORDER BY position"):
            implied = ["applied"] + (["verified"] if row["status"] in ("verified", "purged") else []) + (["purged"] if row["status"] == "purged" else [])
            rows += [(row["id"], event, row["step"], detail) for event in implied if (row["id"], event) not in have]
        if rows:
            self.record_many(rows)
        return len(rows)

    def events(self, request_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM service_events" + (" WHERE request_id = ?" if request_id else "") + " ORDER BY seq"
        return [_event(r) for r in self.db.execute(query, (request_id,) if request_id else ())]

    def ids_with(self, event: str) -> set[str]:
        return {r["request_id"] for r in self.db.execute("SELECT request_id FROM service_events WHERE event = ?", (event,))}

    # -- the worker's switch -------------------------------------------------------------------
    def paused(self) -> bool:
        return self.ledger.meta(PAUSED_KEY) == "1"

    def set_paused(self, paused: bool, key_id: str | None) -> None:
        with self.ledger.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PAUSED_KEY, "1" if paused else "0"))
            self.record(None, "paused" if paused else "resumed", key_id=key_id, db=db)

    # -- reading requests ------------------------------------------------------------------------
    def request(self, request_id: str) -> dict[str, Any] | None:
        """One request with its timeline, verdict and verification metrics."""
        row = self.db.execute(f"SELECT * FROM ({REQUESTS_VIEW}) WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            return None
        view = _summary(row)
        view["timeline"] = [{k: e[k] for k in ("event", "at", "step", "detail")} for e in self.events(request_id)]
        view["verdict"], view["metrics"] = None, None
        if row["step"] is not None:
            card = self.ledger.verdicts().get(row["step"])
            if card is not None:
                view["verdict"] = {"verdict": card["verdict"], "target_met": card["target_met"], "request": card["request"]}
            metrics = self.db.execute("SELECT step, name, value FROM metrics WHERE scope = ? ORDER BY step, name", (request_id,)).fetchall()
            by_step: dict[int, dict[str, float | None]] = {}
            for m in metrics:
                by_step.setdefault(m["step"], {})[m["name"]] = m["value"]
            if by_step:
                latest = max(by_step)
                view["metrics"] = {"step": row["step"], "values": by_step.get(row["step"], {}),
                                   "latest_step": latest, "latest": by_step[latest]}
        return view

    def owner(self, request_id: str) -> str | None:
        row = self.db.execute("SELECT key_id FROM service_submissions WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else row["key_id"]

    def list_requests(self, *, owner: str | None = None, status: str | None = None, kind: str | None = None,
                      after: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
        """One page in arrival order after position `after`; returns (items, next cursor or None)."""
        where, args = ["position > ?"], [after]
        for column, value in (("key_id", owner), ("status", status), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self.db.execute(f"SELECT * FROM ({REQUESTS_VIEW}) WHERE {' AND '.join(where)} ORDER BY position LIMIT ?", (*args, limit + 1)).fetchall()
        items = [_summary(r) for r in rows[:limit]]
        return items, (items[-1]["position"] if len(rows) > limit else None)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.db.execute(f"SELECT status, COUNT(*) AS n FROM ({REQUESTS_VIEW}) GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts

    def timelines(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest `limit` requests with the time of each event (the status page's table)."""
        rows = self.db.execute(f"SELECT * FROM ({REQUESTS_VIEW}) ORDER BY position DESC LIMIT ?", (limit,)).fetchall()
        times: dict[str, dict[str, str]] = {}
        for e in self.db.execute("SELECT request_id, event, at FROM service_events WHERE request_id IS NOT NULL"):
            times.setdefault(e["request_id"], {})[e["event"]] = e["at"]
        return [_summary(r) | {"times": times.get(r["id"], {})} for r in reversed(rows)]

    # -- the audit export ------------------------------------------------------------------------
    def audit(self) -> dict[str, Any]:
        """Everything the ledger knows, for auditors (no key hashes, no request text)."""
        ledger = self.ledger
        return {
            "plan": json.loads(ledger.meta("plan") or "{}"),
            "requests": [_summary(r) for r in self.db.execute(f"SELECT * FROM ({REQUESTS_VIEW}) ORDER BY position")],
            "events": self.events(),
            "steps": [s.__dict__ for s in ledger.steps()],
            "verdicts": {str(k): v for k, v in ledger.verdicts().items()},
            "metrics": [dict(r) for r in ledger.metrics()],
            "flags": [dict(r) for r in ledger.flags()],
            "keys": self.keys(),
            "ledger_problems": ledger.check(),
        }

    def audit_csv(self, table: str) -> str:
        rows: list[dict[str, Any]] = {
            "requests": lambda: [_summary(r) for r in self.db.execute(f"SELECT * FROM ({REQUESTS_VIEW}) ORDER BY position")],
            "events": self.events,
            "steps": lambda: [s.__dict__ for s in self.ledger.steps()],
            "metrics": lambda: [dict(r) for r in self.ledger.metrics()],
        }[table]()
        out = io.StringIO()
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        return out.getvalue()


AUDIT_TABLES = ("requests", "events", "steps", "metrics")


def _summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"], "status": row["status"], "position": row["position"], "step": row["step"], "kind": row["kind"],
        "records": row["records"], "sha256": row["sha256"], "received_at": row["received_at"], "submitted_at": row["submitted_at"],
        "submitted_by": row["key_id"], "blocking": bool(row["blocking"]), "purged_at": row["purged_at"],
    }


def _event(row: sqlite3.Row) -> dict[str, Any]:
    return {"seq": row["seq"], "request_id": row["request_id"], "event": row["event"], "at": row["at"], "step": row["step"],
            "key_id": row["key_id"], "detail": json.loads(row["detail"]) if row["detail"] else None}


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value

