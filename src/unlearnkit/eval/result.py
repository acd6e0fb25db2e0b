"""What a suite run produces: rows (scope, metric, value) plus per-item values, the settings
used and timings; round-trips through JSON so an oracle's results can be precomputed once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unlearnkit.eval.metric import MetricResult, finite
from unlearnkit.files import write_json


@dataclass
class Row:
    scope: str  # a request id, "<id>/probes", "retain", "neighbours", "real_facts", "general_text", "utility"
    metric: str
    value: float | None
    items: int
    seconds: float


@dataclass
class SuiteResult:
    suite: str
    subject: str
    rows: list[Row] = field(default_factory=list)
    results: dict[str, MetricResult] = field(default_factory=dict)  # "scope|metric" -> result
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def key(scope: str, metric: str) -> str:
        return f"{scope}|{metric}"

    def add(self, row: Row, result: MetricResult | None = None) -> None:
        self.rows.append(row)
        if result is not None:
            self.results[self.key(row.scope, row.metric)] = result

    def value(self, scope: str, metric: str) -> float | None:
        return next((r.value for r in self.rows if r.scope == scope and r.metric == metric), None)

    def result(self, scope: str, metric: str) -> MetricResult | None:
        return self.results.get(self.key(scope, metric))

    def scopes(self) -> list[str]:
        return list(dict.fromkeys(r.scope for r in self.rows))

    def aggregates(self) -> dict[str, dict[str, float | None]]:
        """{scope: {metric: value}}, the headline numbers."""
        table: dict[str, dict[str, float | None]] = {}
        for row in self.rows:
            table.setdefault(row.scope, {})[row.metric] = finite(row.value)
        return table

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "subject": self.subject,
            "aggregates": self.aggregates(),
            "rows": [asdict(r) | {"value": finite(r.value)} for r in self.rows],
            "per_item": {k: v.to_json() for k, v in self.results.items()},
            "settings": self.settings,
            "timings": self.timings,
            "passes": self.passes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SuiteResult:
        return cls(
            suite=data["suite"],
            subject=data.get("subject", ""),
            rows=[Row(**r) for r in data.get("rows", [])],
            results={k: MetricResult.from_json(v) for k, v in data.get("per_item", {}).items()},
            settings=data.get("settings", {}),
            timings=data.get("timings", {}),
            passes=data.get("passes", {}),
        )

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (temporary name, then rename)."""
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> SuiteResult:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
