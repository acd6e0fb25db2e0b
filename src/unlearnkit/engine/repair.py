"""Check and rebuild a run's ledger: `unlearnkit ledger RUN --check` and `--repair`.

`inspect` reads the ledger without writing to it (SQLite's `integrity_check` through a
read-only connection, then the ledger's own consistency checks where the file opens).

`repair` never deletes anything. The damaged file (with its `-wal` and `-shm`) is moved aside
to `ledger.damaged-<time>.sqlite`, and a new ledger is written from what the run folder still
holds, most trusted first:

1. every table of the damaged ledger that can still be read whole;
2. `results.json` (requests with their hashes and times, steps, metrics, verdicts, flags);
3. the checkpoints (each records its step and request) and `eval/step-NNN.json` (the suite's
   rows of a step);
4. the plan the run recorded (`plan.yaml`): its request files give the order and the content
   hashes, and `requests/` holds the copies of requests not purged yet.

A step is rebuilt only when the steps before it are; a step whose metrics cannot be rebuilt
whole (its attack rows live only in the ledger) is left unevaluated, so the next `run`
evaluates it again. Timings only the old ledger knew are 0. `meta.repaired` says when, from
which file, and what was lost.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from unlearnkit.engine.checkpoints import FINISHED
from unlearnkit.engine.ledger import Ledger, LedgerError, integrity_problems, now
from unlearnkit.errors import UnlearnkitError

TABLES = ("meta", "requests", "steps", "metrics", "verdicts", "flags")


def ledger_path(run: Path) -> Path:
    return run if run.suffix == ".sqlite" else run / "ledger.sqlite"


# -- check ---------------------------------------------------------------------------------------
def inspect(path: Path) -> list[str]:
    """Everything wrong with a ledger file (empty when sound), read without writing to it."""
    if not path.is_file():
        return [f"{path}: no such file"]
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            problems = integrity_problems(db, limit=20)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return [f"sqlite: {exc}"]
    if problems:
        return [f"sqlite: {p}" for p in problems]
    try:
        ledger = Ledger(path)
    except UnlearnkitError as exc:
        return [str(exc)]
    try:
        return ledger.check()
    finally:
        ledger.close()


# -- repair --------------------------------------------------------------------------------------
@dataclass
class Salvage:
    """Rows for the new ledger, gathered from every source."""

    plan: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[int, list[tuple[str, str, float | None]]] = field(default_factory=dict)
    cards: dict[int, dict[str, Any]] = field(default_factory=dict)
    flags: dict[int, list[tuple[str, str, str, float, float]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


@dataclass
class KnownRequest:
    """A request as `Ledger.register_requests` reads it, with the hash recorded before."""

    id: str
    received_at: datetime
    kind: str
    sha256: str
    count: int

    @property
    def records(self) -> list[None]:
        return [None] * self.count

    def content_hash(self) -> str:
        return self.sha256


def repair(run: Path) -> tuple[Path, Path | None, Salvage]:
    """Rebuild `run`'s ledger; returns (new ledger, where the old one went, what was used)."""
    folder = run.parent if run.suffix == ".sqlite" else run
    path = ledger_path(run)
    if not folder.is_dir():
        raise UnlearnkitError(f"{folder}: not a run folder")
    salvage = Salvage()
    moved = None
    if path.exists():
        _read_damaged(path, salvage)
        moved = _move_aside(path)
    _read_results(folder, salvage)
    _read_plan(folder, salvage)
    if salvage.plan is None:
        raise UnlearnkitError(f"{folder}: neither the ledger, results.json nor plan.yaml holds the plan; nothing to rebuild from")
    plan = _plan(salvage.plan)
    _read_requests(folder, plan, salvage)
    _read_steps(folder, plan, salvage)
    ledger = Ledger(path)
    try:
        _write(ledger, plan, folder, salvage, moved)
    finally:
        ledger.close()
    return path, moved, salvage


def _read_damaged(path: Path, salvage: Salvage) -> None:
    """Each table of the old file that can still be read whole."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
    except sqlite3.Error:
        return
    read: dict[str, list[dict[str, Any]]] = {}
    for table in TABLES:
        try:
            read[table] = [dict(row) for row in db.execute(f"SELECT * FROM {table}")]  # noqa: S608 (a fixed name)
        except sqlite3.Error:
            continue
    db.close()
    if not read:
        return
    salvage.sources.append(f"{path.name} (tables {', '.join(read)})")
    meta = {row["key"]: row["value"] for row in read.get("meta", [])}
    salvage.plan = meta.get("plan")
    salvage.requests = sorted(read.get("requests", []), key=lambda r: r["position"])
    salvage.steps = sorted(read.get("steps", []), key=lambda r: r["step"])
    if "metrics" in read:
        for row in read["metrics"]:
            salvage.metrics.setdefault(row["step"], []).append((row["scope"], row["name"], row["value"]))
        for step in {s["step"] for s in salvage.steps if s.get("evaluated")}:
            salvage.metrics.setdefault(step, [])
    if "verdicts" in read:
        salvage.cards = {row["step"]: json.loads(row["card"]) for row in read["verdicts"]}
    if "flags" in read:
        for row in read["flags"]:
            if row["kind"] != "budget":  # budget flags come back with their step's card
                salvage.flags.setdefault(row["step"], []).append((row["request_id"], row["kind"], row["metric"], row["value"], row["threshold"]))


def _move_aside(path: Path) -> Path:
    """Rename the damaged ledger (and its WAL files) out of the way; never delete it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"ledger.damaged-{stamp}.sqlite")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"ledger.damaged-{stamp}-{number}.sqlite")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


def _read_results(folder: Path, salvage: Salvage) -> None:
    path = folder / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(results, dict):
        return
    used = False
    if salvage.plan is None and results.get("plan"):
        salvage.plan, used = json.dumps(results["plan"], sort_keys=True), True
    if not salvage.requests and results.get("requests"):
        salvage.requests, used = sorted(results["requests"], key=lambda r: r["position"]), True
    if not salvage.steps and results.get("steps"):
        salvage.steps, used = [{k: v for k, v in s.items() if k not in ("metrics", "verdict")} for s in results["steps"]], True
        for s in results["steps"]:
            if s.get("evaluated") and s["step"] not in salvage.metrics:
                salvage.metrics[s["step"]] = [(scope, name, value) for scope, values in s.get("metrics", {}).items() for name, value in values.items()]
            if s.get("verdict") and s["step"] not in salvage.cards:
                salvage.cards[s["step"]] = s["verdict"]
        if not salvage.flags:
            for f in results.get("flags", []):
                if f["kind"] != "budget":
                    salvage.flags.setdefault(f["step"], []).append((f["request_id"], f["kind"], f["metric"], f["value"], f["threshold"]))
    if used:
        salvage.sources.append("results.json")


def _read_plan(folder: Path, salvage: Salvage) -> None:
    if salvage.plan is not None:
        return
    try:
        data = yaml.safe_load((folder / "plan.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return
    if isinstance(data, dict):
        salvage.plan = json.dumps(data, sort_keys=True)  # the fingerprint: plan.yaml was written from it
        salvage.sources.append("plan.yaml")


def _plan(fingerprint: str) -> Any:
    from unlearnkit.plan import Plan

    try:
        return Plan.model_validate(json.loads(fingerprint))
    except Exception as exc:  # the recorded plan of an older unlearnkit
        raise UnlearnkitError(f"the recorded plan cannot be read by this unlearnkit ({str(exc).splitlines()[0]})") from None


def _read_requests(folder: Path, plan: Any, salvage: Salvage) -> None:
    """Requests in the plan's order, from its sources if readable, else the copies in requests/."""
    if salvage.requests:
        return
    from unlearnkit.engine.runner import load_requests_and_data

    try:
        requests = load_requests_and_data(plan)[0]
        salvage.sources.append("the plan's request files")
    except UnlearnkitError:
        from unlearnkit.data.loaders import load_requests

        copies = sorted((folder / "requests").glob("*.jsonl"))
        requests = [r for copy in copies for r in _try(load_requests, copy)]
        if not requests:
            return
        salvage.sources.append("requests/ (the order of requests not applied yet is a guess)")
        salvage.lost.append("request order beyond the applied steps")
    salvage.requests = [{"id": r.id, "position": i, "received_at": r.received_at.isoformat(), "kind": r.kind,
                         "sha256": r.content_hash(), "records": len(r.records), "status": "pending"} for i, r in enumerate(requests, start=1)]


def _try(load: Any, path: Path) -> list[Any]:
    try:
        return list(load(path))
    except UnlearnkitError:
        return []


def _read_steps(folder: Path, plan: Any, salvage: Salvage) -> None:
    """Steps after the known ones, from checkpoints and per-step evaluation files."""
    from unlearnkit.eval.result import SuiteResult

    known = {s["step"] for s in salvage.steps}
    checkpoints = {int(m.group(1)): p for p in _entries(folder / "checkpoints") if (m := FINISHED.match(p.name))}
    evaluated = {int(p.stem.split("-")[1]): p for p in _entries(folder / "eval") if p.suffix == ".json" and p.stem.startswith("step-") and p.stem[5:].isdigit()}
    positions = {r["position"]: r["id"] for r in salvage.requests}
    step = len(known) + 1
    while step in checkpoints or step in evaluated:
        if step not in positions:
            break
        path = checkpoints.get(step)
        salvage.steps.append({"step": step, "request_id": _checkpoint_request(path) or positions[step], "method": "+".join(m.name for m in plan.method),
                              "checkpoint": str(path.relative_to(folder)) if path else f"checkpoints/step-{step:03d}", "kept": path is not None,
                              "started_at": now(), "unlearn_s": 0.0, "checkpoint_s": 0.0, "eval_s": None, "tokens": 0, "train_steps": 0,
                              "evaluated": False})
        if step in evaluated and not plan.attacks:  # per-step attack rows live only in the ledger
            try:
                result = SuiteResult.load(evaluated[step])
                salvage.metrics[step] = [(r.scope, r.metric, r.value) for r in result.rows]
                salvage.steps[-1]["evaluated"] = True
            except (OSError, ValueError, KeyError, TypeError):
                salvage.lost.append(f"the metrics of step {step} (evaluated again by the next run)")
        elif step in evaluated:
            salvage.lost.append(f"the attack rows of step {step} (evaluated again by the next run)")
        if plan.guard.enabled and step not in salvage.cards:
            salvage.lost.append(f"the verdict card of step {step}")
        step += 1
    if step == len(known) + 1 and not checkpoints and not evaluated:
        return
    salvage.sources.append("checkpoints/ and eval/")
    later = sorted(s for s in checkpoints if s >= step)
    if later:
        salvage.lost.append(f"checkpoint(s) of step {', '.join(map(str, later))}: the steps before them left no trace, so the next run redoes them")


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _checkpoint_request(path: Path | None) -> str | None:
    """The request id a checkpoint records (its `unlearnkit.json`, or a delta file's metadata)."""
    if path is None:
        return None
    try:
        if path.is_dir():
            return json.loads((path / "unlearnkit.json").read_text(encoding="utf-8")).get("request")
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get("request")
    except Exception:  # an unreadable record: the plan's order decides
        return None


def _write(ledger: Ledger, plan: Any, folder: Path, salvage: Salvage, moved: Path | None) -> None:
    from unlearnkit.engine.runner import relapses, request_copies

    assert salvage.plan is not None
    ledger.set_meta("plan", salvage.plan)
    known = [KnownRequest(r["id"], datetime.fromisoformat(r["received_at"]), r["kind"], r["sha256"], int(r["records"])) for r in salvage.requests]
    ledger.register_requests(known)
    ids = {r.id for r in known}
    for step in salvage.steps:
        if step["request_id"] not in ids:
            salvage.lost.append(f"step {step['step']} and later (request '{step['request_id']}' is not in the rebuilt requests)")
            break
        ledger.record_step(step["step"], step["request_id"], step["method"], step["checkpoint"], started_at=step.get("started_at") or now(),
                           unlearn_s=step.get("unlearn_s") or 0.0, checkpoint_s=step.get("checkpoint_s") or 0.0,
                           tokens=step.get("tokens") or 0, train_steps=step.get("train_steps") or 0, card=salvage.cards.get(step["step"]))
        if not step.get("kept", True) or not (folder / step["checkpoint"]).exists():
            ledger.mark_pruned(step["step"])
        rows = salvage.metrics.get(step["step"])
        if step.get("evaluated") and rows is not None:
            flags = salvage.flags.get(step["step"])
            if flags is None:  # recomputed from the rebuilt metrics, by the runner's own rule
                requests = [SimpleNamespace(id=r.id) for r in known]
                flags = relapses(SimpleNamespace(plan=plan, requests=requests, ledger=ledger), step["step"], rows)  # type: ignore[arg-type]
            ledger.record_evaluation(step["step"], rows, step.get("eval_s") or 0.0, flags)
            status = "verified"
            if plan.purge and not any(p.exists() for p in request_copies(folder, step["request_id"])):
                status = "purged"
            ledger.set_status(step["request_id"], status)
    note = {"at": now(), "from": str(moved) if moved else None, "sources": salvage.sources, "lost": salvage.lost}
    ledger.set_meta("repaired", json.dumps(note))


def summary(new: Path, moved: Path | None, salvage: Salvage) -> list[str]:
    """What `--repair` prints: one line per fact."""
    lines = [f"rebuilt {new} from {', '.join(salvage.sources) or 'nothing'}"]
    if moved is not None:
        lines.append(f"the damaged ledger is kept as {moved}")
    lines += [f"not recovered: {item}" for item in salvage.lost]
    return lines


__all__ = ["LedgerError", "inspect", "repair", "summary"]
