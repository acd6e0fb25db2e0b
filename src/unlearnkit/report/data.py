"""What a report shows, read back from a run folder (never from memory, so `report RUN` rebuilds it).

Sources in the run folder:
- `results.json` (written by the runner): the plan, the requests, every step with its timings
  and its metrics by scope;
- `references.json` (optional, written by `write_references`): the same suite evaluated on the
  start model ("target") and on each step's retrain oracle, for reference lines;
- `attacks.json` (optional): attack results after the last step, with the oracle's;
- `holdout_check.json` (optional): the holdout reference beside each oracle (long streams).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearnkit.errors import UnlearnkitError

SET_SCOPES = ("retain", "neighbours", "real_authors", "real_facts", "general_text", "lm_eval", "utility")
Table = dict[str, dict[str, float | None]]  # scope -> metric -> value
# From this many requests on, per-request lines stop being readable: the report shows a
# request × step heatmap and means over requests instead.
LONG_RUN = 12


@dataclass
class RunView:
    folder: Path
    plan: dict[str, Any]
    requests: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    flags: list[dict[str, Any]]
    target: Table = field(default_factory=dict)
    oracles: dict[int, Table] = field(default_factory=dict)  # step -> table
    attacks: list[dict[str, Any]] = field(default_factory=list)
    holdout: dict[str, float | None] = field(default_factory=dict)  # the holdout reference (references.json)
    holdout_check: dict[int, dict[str, Any]] = field(default_factory=dict)  # oracle step -> holdout_check.json entry

    @property
    def request_ids(self) -> list[str]:
        return [r["id"] for r in self.requests]

    @property
    def label(self) -> str:
        methods = self.plan.get("method") or []
        name = "+".join(m["name"] if isinstance(m, dict) else str(m) for m in methods) or "?"
        return f"{self.folder.name} ({name})"

    def metric(self, step: int, scope: str, name: str) -> float | None:
        for row in self.steps:
            if row["step"] == step:
                return row.get("metrics", {}).get(scope, {}).get(name)
        return None

    def forget_metrics(self) -> list[str]:
        """Metric names recorded on request scopes, in first-seen order (attack rows excluded)."""
        names: dict[str, None] = {}
        for row in self.steps:
            for scope, values in row.get("metrics", {}).items():
                if scope in self.request_ids:
                    names.update({n: None for n in values if not n.startswith("attack:")})
        return list(names)

    def set_metrics(self) -> list[tuple[str, str]]:
        pairs: dict[tuple[str, str], None] = {}
        for row in self.steps:
            for scope, values in row.get("metrics", {}).items():
                if scope in SET_SCOPES:
                    pairs.update({(scope, n): None for n in values if not n.startswith("attack:")})
        return list(pairs)

    def verdicts(self) -> list[dict[str, Any]]:
        """The verdict card of every guarded step, in step order (docs/guarded.md)."""
        return [s["verdict"] for s in self.steps if s.get("verdict")]

    def last_step(self) -> int:
        return max((s["step"] for s in self.steps), default=0)

    @property
    def long(self) -> bool:
        return len(self.requests) >= LONG_RUN

    def own_step(self, request_id: str) -> int | None:
        """The step that applied a request (several share one when coalesced)."""
        for row in self.requests:
            if row["id"] == request_id:
                return row.get("step", row.get("position"))
        return None

    def reference(self, request_id: str, metric: str) -> float | None:
        """What a model that never saw the request has: the first oracle trained without it (at
        or after its own step), else the holdout reference."""
        own = self.own_step(request_id) or 0
        for step in sorted(self.oracles):
            value = self.oracles[step].get(request_id, {}).get(metric)
            if step >= own and value is not None:
                return value
        return self.holdout.get(metric)

    def relapses(self) -> list[dict[str, Any]]:
        """One row per request whose forgetting came back (ledger flags of kind `relapse`): its
        own step and value there, the first step it relapsed, how often, and its peak."""
        rows: dict[str, dict[str, Any]] = {}
        for flag in self.flags:
            if flag.get("kind", "relapse") != "relapse":
                continue
            rid, metric, step, value = flag["request_id"], flag["metric"], flag["step"], flag["value"]
            row = rows.get(rid)
            if row is None:
                own = self.own_step(rid)
                row = rows[rid] = {"request": rid, "metric": metric, "own_step": own, "baseline": self.metric(own, rid, metric) if own else None,
                                   "threshold": flag["threshold"], "first": step, "steps": 0, "peak": value, "peak_step": step}
            row["steps"] += 1
            if value > row["peak"]:
                row["peak"], row["peak_step"] = value, step
        for row in rows.values():
            row["rise"] = row["peak"] - row["baseline"] if row["baseline"] is not None else None
        return sorted(rows.values(), key=lambda r: (r["first"], r["request"]))

    def budget_flags(self) -> list[dict[str, Any]]:
        """Steps the damage budget stepped in on (rolled back or scaled back)."""
        return [f for f in self.flags if f.get("kind") == "budget"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UnlearnkitError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def load_run(folder: str | Path) -> RunView:
    folder = Path(folder)
    results = folder / "results.json"
    if not results.exists():
        raise UnlearnkitError(f"{folder}: no results.json (not a finished run folder; run `unlearnkit run PLAN` first)")
    data = _read_json(results)
    view = RunView(folder, data.get("plan", {}), data.get("requests", []), data.get("steps", []), data.get("flags", []))
    refs = folder / "references.json"
    if refs.exists():
        ref = _read_json(refs)
        view.target = ref.get("target", {})
        view.oracles = {int(k): v for k, v in ref.get("oracles", {}).items()}
        view.holdout = ref.get("holdout", {})
    check = folder / "holdout_check.json"
    if check.exists():
        view.holdout_check = {int(k): v for k, v in _read_json(check).get("steps", {}).items()}
    attacks = folder / "attacks.json"
    if attacks.exists():
        view.attacks = _read_json(attacks).get("results", [])
    return view
