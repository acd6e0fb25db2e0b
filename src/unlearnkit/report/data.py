"""What a report shows, read back from a run folder (never from memory, so `report RUN` rebuilds it).

Sources in the run folder:
- `results.json` (written by the runner): the plan, the requests, every step with its timings
  and its metrics by scope;
- `references.json` (optional, written by `write_references`): the same suite evaluated on the
  start model ("target") and on each step's retrain oracle, for reference lines;
- `attacks.json` (optional): attack results after the last step, with the oracle's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearnkit.errors import UnlearnkitError

SET_SCOPES = ("retain", "neighbours", "real_authors", "real_facts", "general_text", "lm_eval", "utility")
Table = dict[str, dict[str, float | None]]  # scope -> metric -> value


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
    attacks = folder / "attacks.json"
    if attacks.exists():
        view.attacks = _read_json(attacks).get("results", [])
    return view
