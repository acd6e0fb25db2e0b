"""The run's ledger: one SQLite file recording requests, steps and metrics (schema: docs/ledger.md).

SQLite in WAL mode with one transaction per change, so a process killed at any moment leaves
either the whole change or none of it. A step counts as done only once its row is committed,
which the runner does right after the step's checkpoint is renamed into place.

Opening checks the file first (`PRAGMA quick_check`): a damaged or foreign file is one
`LedgerError` line that says what to do (`unlearnkit ledger RUN --check`, then `--repair`,
which rebuilds a ledger from the run folder: engine/repair.py) and nothing is written to it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from unlearnkit.errors import UnlearnkitError

# 2: verdicts (guarded unlearning); 3: `requests.step` (a step may apply several coalesced
# requests). Older ledgers are brought up to date on open; both changes only add.
SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id          TEXT PRIMARY KEY,
    position    INTEGER NOT NULL UNIQUE,
    received_at TEXT NOT NULL,
    kind        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    records     INTEGER NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'applied', 'verified', 'purged')),
    purged_at   TEXT,
    step        INTEGER
);
CREATE TABLE IF NOT EXISTS steps (
    step         INTEGER PRIMARY KEY,
    request_id   TEXT NOT NULL UNIQUE REFERENCES requests(id),
    method       TEXT NOT NULL,
    checkpoint   TEXT NOT NULL,
    kept         INTEGER NOT NULL DEFAULT 1,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    unlearn_s    REAL NOT NULL,
    checkpoint_s REAL NOT NULL,
    eval_s       REAL,
    tokens       INTEGER NOT NULL DEFAULT 0,
    train_steps  INTEGER NOT NULL DEFAULT 0,
    evaluated    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS metrics (
    step  INTEGER NOT NULL REFERENCES steps(step),
    scope TEXT NOT NULL,
    name  TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (step, scope, name)
);
CREATE TABLE IF NOT EXISTS verdicts (
    step           INTEGER PRIMARY KEY REFERENCES steps(step),
    request_id     TEXT NOT NULL REFERENCES requests(id),
    verdict        TEXT NOT NULL,
    target_met     INTEGER NOT NULL,
    rolled_back_to INTEGER,
    card           TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flags (
    step       INTEGER NOT NULL REFERENCES steps(step),
    request_id TEXT NOT NULL REFERENCES requests(id),
    kind       TEXT NOT NULL,
    metric     TEXT NOT NULL,
    value      REAL NOT NULL,
    threshold  REAL NOT NULL,
    PRIMARY KEY (step, request_id, kind)
);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StepRow:
    step: int
    request_id: str
    method: str
    checkpoint: str
    kept: bool
    unlearn_s: float
    checkpoint_s: float
    eval_s: float | None
    tokens: int
    train_steps: int
    evaluated: bool


class LedgerError(UnlearnkitError):
    """A ledger file that cannot be used: damaged, not a ledger, or not readable."""


def damaged(path: Path, reason: str) -> LedgerError:
    run = path.parent
    return LedgerError(f"{path}: the ledger is damaged ({reason}); see what can be read with `unlearnkit ledger {run} --check`, "
                       f"then rebuild it from the run folder with `unlearnkit ledger {run} --repair` (the damaged file is kept)")


def integrity_problems(db: sqlite3.Connection, limit: int = 1) -> list[str]:
    """SQLite's own check of the file (empty when sound); `limit` problems at most."""
    rows = [row[0] for row in db.execute(f"PRAGMA quick_check({int(limit)})")]
    return [] if rows == ["ok"] else rows


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except sqlite3.OperationalError as exc:  # locked, busy, unreadable: the file may be fine
            self._close_quietly()
            raise LedgerError(f"{self.path}: cannot use the ledger ({exc})") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            self._close_quietly()
            raise damaged(self.path, str(exc)) from None

    def _close_quietly(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    def _open(self) -> None:
        existing = self.path.exists() and self.path.stat().st_size > 0
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE ... COMMIT).
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        if existing:  # before anything writes to it
            problems = integrity_problems(self.db)
            if problems:
                raise sqlite3.DatabaseError(problems[0])
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a committed step survives power loss too
        self.db.execute("PRAGMA foreign_keys=ON")
        with self.transaction():
            for statement in SCHEMA.split(";"):  # not executescript: it would commit mid-transaction
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._upgrade()
        raw_version = self.meta("schema_version") or "0"
        version = int(raw_version) if raw_version.isdigit() else -1
        if version != SCHEMA_VERSION:
            raise UnlearnkitError(f"{self.path}: ledger schema version {version}, this unlearnkit reads {SCHEMA_VERSION}")

    def _upgrade(self) -> None:
        """Bring a version 1 or 2 ledger to this version, inside the opening transaction.

        Version 1 lacks only the verdicts table (the schema above just created it); version 2
        lacks `requests.step`, which is the position for every applied request (before
        coalescing, step t always applied position t).
        """
        old = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()["value"]
        if old not in ("1", "2"):
            return
        columns = {row["name"] for row in self.db.execute("PRAGMA table_info(requests)")}
        if "step" not in columns:
            self.db.execute("ALTER TABLE requests ADD COLUMN step INTEGER")
        self.db.execute("UPDATE requests SET step = position WHERE step IS NULL AND id IN (SELECT request_id FROM steps)")
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # -- meta --------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- requests ----------------------------------------------------------------------------
    def register_requests(self, requests: list[Any], *, submitted: bool = False) -> None:
        """Record the plan's requests in order, or check they match what a previous run recorded.

        A resumed run must apply the same requests in the same order with the same content;
        anything else would make the ledger lie about what the checkpoints contain. With
        `submitted`, the ledger may also hold requests after the plan's own (those submitted to
        `unlearnkit serve`, appended by `append_request`).
        """
        known = {r["id"]: r for r in self.db.execute("SELECT * FROM requests")}
        ids = [r.id for r in requests]
        for stale in set(known) - set(ids):
            if submitted and known[stale]["position"] > len(requests):
                continue
            raise UnlearnkitError(f"{self.path}: request '{stale}' is in the ledger but not in the plan (use a new output folder for a different plan)")
        with self.transaction():
            for position, request in enumerate(requests, start=1):
                digest = request.content_hash()
                row = known.get(request.id)
                if row is None:
                    self.db.execute(
                        "INSERT INTO requests (id, position, received_at, kind, sha256, records) VALUES (?, ?, ?, ?, ?, ?)",
                        (request.id, position, request.received_at.isoformat(), request.kind, digest, len(request.records)),
                    )
                elif row["position"] != position:
                    raise UnlearnkitError(f"{self.path}: request '{request.id}' was number {row['position']} in this run, the plan now puts it at {position}")
                elif row["sha256"] != digest:
                    raise UnlearnkitError(f"{self.path}: request '{request.id}' has changed since it was recorded (SHA-256 differs)")

    def append_request(self, request: Any, also: Callable[[sqlite3.Connection, int], None] | None = None) -> int:
        """Record a request that arrived after the others (at the next position) and return its
        position; `also(db, position)` runs inside the same transaction (the service records who
        submitted it there, so both rows exist or neither)."""
        with self.transaction():
            position = self.db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM requests").fetchone()[0]
            self.db.execute(
                "INSERT INTO requests (id, position, received_at, kind, sha256, records) VALUES (?, ?, ?, ?, ?, ?)",
                (request.id, position, request.received_at.isoformat(), request.kind, request.content_hash(), len(request.records)),
            )
            if also is not None:
                also(self.db, position)
        return int(position)

    def restart(self) -> None:
        """Forget the recorded plan and the plan's requests of a run that never committed a step
        (a start that failed or was killed): the runner then records the plan it is given now.
        Requests submitted to the service stay (they are not the plan's; their positions come
        after the plan's, which the next start records again in front of them)."""
        with self.transaction():
            if self.db.execute("SELECT COUNT(*) FROM steps").fetchone()[0]:
                raise UnlearnkitError(f"{self.path}: steps were applied; this run cannot start afresh")
            served = self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'service_submissions'").fetchone()
            keep = " WHERE id NOT IN (SELECT request_id FROM service_submissions)" if served else ""
            self.db.execute(f"DELETE FROM requests{keep}")
            self.db.execute("DELETE FROM meta WHERE key = 'plan'")

    def requests(self) -> list[sqlite3.Row]:
        return list(self.db.execute("SELECT * FROM requests ORDER BY position"))

    def request_steps(self) -> dict[str, int]:
        """Request id -> the step that applied it (applied requests only)."""
        return {row["id"]: row["step"] for row in self.db.execute("SELECT id, step FROM requests WHERE step IS NOT NULL")}

    def request_status(self, request_id: str) -> str:
        return self.db.execute("SELECT status FROM requests WHERE id = ?", (request_id,)).fetchone()["status"]

    def set_status(self, request_id: str, status: str) -> None:
        with self.transaction():
            purged = now() if status == "purged" else None
            self.db.execute("UPDATE requests SET status = ?, purged_at = COALESCE(?, purged_at) WHERE id = ?", (status, purged, request_id))

    # -- steps -------------------------------------------------------------------------------
    def record_step(self, step: int, request_id: str, method: str, checkpoint: str, *, started_at: str,
                    unlearn_s: float, checkpoint_s: float, tokens: int, train_steps: int,
                    card: dict[str, Any] | None = None, coalesced: Sequence[str] = ()) -> None:
        """The commit that makes a step done (its checkpoint is already in place), with the
        step's verdict card when the step was guarded; a budget rollback is also a flag.
        `coalesced`: the further requests this step applied together with `request_id`."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO steps (step, request_id, method, checkpoint, started_at, finished_at, unlearn_s, checkpoint_s, tokens, train_steps)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (step, request_id, method, checkpoint, started_at, now(), unlearn_s, checkpoint_s, tokens, train_steps),
            )
            self.db.executemany("UPDATE requests SET status = 'applied', step = ? WHERE id = ?",
                                [(step, rid) for rid in (request_id, *coalesced)])
            if card is not None:
                self.db.execute(
                    "INSERT INTO verdicts (step, request_id, verdict, target_met, rolled_back_to, card) VALUES (?, ?, ?, ?, ?, ?)",
                    (step, request_id, card["verdict"], int(card["target_met"]), card["rolled_back_to"], json.dumps(card)),
                )
                for key in ("rolled_back_to", "scaled_to"):  # the budget stepped in: a flag
                    if card.get(key) is not None:
                        self.db.execute("INSERT INTO flags (step, request_id, kind, metric, value, threshold) VALUES (?, ?, 'budget', ?, ?, 0)",
                                        (step, request_id, key, card[key]))

    def verdicts(self) -> dict[int, dict[str, Any]]:
        """Step -> its verdict card (guarded steps only)."""
        return {row["step"]: json.loads(row["card"]) for row in self.db.execute("SELECT step, card FROM verdicts ORDER BY step")}

    def first_verdict(self) -> dict[str, Any] | None:
        """The first guarded step's verdict card (None before there is one): one row, however long the run."""
        row = self.db.execute("SELECT card FROM verdicts ORDER BY step LIMIT 1").fetchone()
        return json.loads(row["card"]) if row else None

    def steps(self) -> list[StepRow]:
        rows = self.db.execute("SELECT * FROM steps ORDER BY step")
        return [
            StepRow(r["step"], r["request_id"], r["method"], r["checkpoint"], bool(r["kept"]), r["unlearn_s"],
                    r["checkpoint_s"], r["eval_s"], r["tokens"], r["train_steps"], bool(r["evaluated"]))
            for r in rows
        ]

    def mark_pruned(self, step: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE steps SET kept = 0 WHERE step = ?", (step,))

    # -- metrics -----------------------------------------------------------------------------
    def record_evaluation(self, step: int, metrics: list[tuple[str, str, float | None]], eval_s: float,
                          flags: list[tuple[str, str, str, float, float]] = ()) -> None:  # type: ignore[assignment]
        """All metric rows of a step, its flags (request, kind, metric, value, threshold) and its
        `evaluated` mark, in one transaction.

        Rows of an interrupted earlier attempt cannot exist (that transaction never committed),
        but a re-evaluation replaces rows rather than failing on them.
        """
        with self.transaction():
            self.db.execute("DELETE FROM metrics WHERE step = ?", (step,))
            self.db.executemany("INSERT INTO metrics (step, scope, name, value) VALUES (?, ?, ?, ?)", [(step, s, n, v) for s, n, v in metrics])
            self.db.execute("DELETE FROM flags WHERE step = ? AND kind != 'budget'", (step,))  # budget flags come with the step
            self.db.executemany("INSERT INTO flags VALUES (?, ?, ?, ?, ?, ?)", [(step, *f) for f in flags])
            self.db.execute("UPDATE steps SET evaluated = 1, eval_s = ? WHERE step = ?", (eval_s, step))

    def metrics(self, step: int | None = None) -> list[sqlite3.Row]:
        if step is None:
            return list(self.db.execute("SELECT * FROM metrics ORDER BY step, scope, name"))
        return list(self.db.execute("SELECT * FROM metrics WHERE step = ? ORDER BY scope, name", (step,)))

    def metric(self, step: int, scope: str, name: str) -> float | None:
        row = self.db.execute("SELECT value FROM metrics WHERE step = ? AND scope = ? AND name = ?", (step, scope, name)).fetchone()
        return None if row is None else row["value"]

    def flags(self) -> list[sqlite3.Row]:
        return list(self.db.execute("SELECT * FROM flags ORDER BY step, request_id"))

    # -- integrity ---------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Problems that would mean the ledger contradicts itself (empty when sound)."""
        problems = []
        if self.db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            problems.append("sqlite integrity_check failed")
        steps = [s.step for s in self.steps()]
        if steps != list(range(1, len(steps) + 1)):
            problems.append(f"steps are not 1..N: {steps}")
        problems += self._order_problems()
        for row in self.db.execute("SELECT id, status FROM requests WHERE status != 'pending' AND step IS NULL"):
            problems.append(f"request '{row['id']}' is {row['status']} but has no step")
        for row in self.db.execute("SELECT id, step FROM requests WHERE status = 'pending' AND step IS NOT NULL"):
            problems.append(f"request '{row['id']}' is pending but step {row['step']} applied it")
        for row in self.db.execute("SELECT step FROM steps WHERE evaluated = 1 AND step NOT IN (SELECT step FROM metrics)"):
            problems.append(f"step {row['step']} is marked evaluated but has no metrics")
        return problems

    def _order_problems(self) -> list[str]:
        """Applied requests are the first ones by position, each step applied a consecutive
        run of them (one request, or several coalesced), and a step's row names its first."""
        problems = []
        first_of = {row["step"]: row["request_id"] for row in self.db.execute("SELECT step, request_id FROM steps")}
        expected, seen_pending = 1, False
        for row in self.db.execute("SELECT id, position, step FROM requests ORDER BY position"):
            if row["step"] is None:
                seen_pending = True
                continue
            if seen_pending:
                problems.append(f"request '{row['id']}' (position {row['position']}) was applied after a pending request")
            if row["step"] == expected:  # the first request of the next step
                if first_of.get(expected) != row["id"]:
                    problems.append(f"step {expected} applied request '{row['id']}' (position {row['position']}) first, but its row names '{first_of.get(expected)}'")
                expected += 1
            elif row["step"] != expected - 1:
                problems.append(f"request '{row['id']}' (position {row['position']}) was applied by step {row['step']}, out of order")
        return problems
