"""What a suite measures: forget requests and the record sets around them.

`EvalData.from_world(dir)` reads a WORLD folder (docs/contracts.md); `EvalData.from_files(specs)`
reads user files, each given as `ROLE=PATH` (roles: requests, retain, neighbours, holdout,
real_authors, real_facts, general_text) or as a bare path whose file name says its role
(`retain.jsonl`); any other bare path is read as forget requests.

`real_facts` are real-world facts (TOFU's world facts), `real_authors` TOFU's real authors: with
the retain set they make TOFU's model utility.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from unlearnkit.data.benchmarks import BenchmarkData
from unlearnkit.data.loaders import load_records, load_requests
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.data.world import load_world
from unlearnkit.errors import DataError, did_you_mean

RECORD_ROLES = ("retain", "neighbours", "holdout", "real_authors", "real_facts", "general_text")
ROLES = ("requests", *RECORD_ROLES)


@dataclass
class EvalData:
    requests: list[ForgetRequest] = field(default_factory=list)
    retain: list[Record] = field(default_factory=list)
    neighbours: list[Record] = field(default_factory=list)
    holdout: list[Record] = field(default_factory=list)
    real_facts: list[Record] = field(default_factory=list)
    general_text: list[Record] = field(default_factory=list)
    real_authors: list[Record] = field(default_factory=list)
    # A request's records as measured, where a benchmark measures other items than it unlearns.
    measured: dict[str, list[Record]] = field(default_factory=dict)
    # KnowMem's in-context examples per scope ("forget", "retain"), where a benchmark has its own.
    shots: dict[str, list[Record]] = field(default_factory=dict)

    @classmethod
    def from_world(cls, world_dir: str | Path) -> EvalData:
        world = load_world(world_dir)
        return cls(world.requests, world.retain, world.neighbours, world.holdout, world.real_facts, world.general_text)

    @classmethod
    def from_benchmark(cls, bench: BenchmarkData) -> EvalData:
        """A loaded benchmark (`data.benchmarks.load_benchmark`) as evaluation data."""
        sets = {role: list(bench.sets.get(role, [])) for role in RECORD_ROLES}
        return cls(requests=list(bench.requests), measured=dict(bench.measured), shots=dict(bench.shots), **sets)

    def merged(self, other: EvalData) -> EvalData:
        """These sets with `other`'s added (a benchmark plus the user's own files)."""
        sets = {role: getattr(self, role) + getattr(other, role) for role in RECORD_ROLES}
        return replace(self, requests=self.requests + other.requests, measured=self.measured | other.measured,
                       shots=self.shots | other.shots, **sets)

    @classmethod
    def from_files(cls, specs: list[str]) -> EvalData:
        data = cls()
        for spec in specs:
            role, _, path = spec.partition("=") if "=" in spec else (_role_of(Path(spec)), "", spec)
            if role not in ROLES:
                raise DataError(f"--data '{spec}': unknown role '{role}'{did_you_mean(role, ROLES)}; roles: {', '.join(ROLES)}")
            if role == "requests":
                data.requests += load_requests(path)
            else:
                getattr(data, role).extend(load_records(path))
        return data

    @classmethod
    def load(cls, specs: list[str]) -> EvalData:
        """One WORLD folder, or files (see the module docstring)."""
        if len(specs) == 1 and Path(specs[0]).is_dir() and (Path(specs[0]) / "requests.jsonl").exists():
            return cls.from_world(specs[0])
        return cls.from_files(specs)

    def limited(self, per_set: int | None) -> EvalData:
        """The first `per_set` records of each kind (and benchmark split) in every set and request
        (None: everything)."""
        if per_set is None:
            return self
        cut = lambda records: _first_of_each_source(records, per_set)  # noqa: E731
        return replace(
            self,
            requests=[r.model_copy(update={"records": cut(r.records), "probes": cut(r.probes)}) for r in self.requests],
            measured={rid: cut(records) for rid, records in self.measured.items()},
            **{role: cut(getattr(self, role)) for role in RECORD_ROLES},
        )

    def sizes(self) -> dict[str, int]:
        sizes = {f"request:{r.id}": len(self.measured.get(r.id, r.records)) for r in self.requests}
        return sizes | {role: len(getattr(self, role)) for role in RECORD_ROLES}


def _role_of(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    return stem if stem in RECORD_ROLES else "requests"


def _first_of_each_source(records: list[Record], per_kind: int) -> list[Record]:
    """The first `per_kind` records of each kind of each benchmark split (`meta["source"]`)."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(str(record.meta.get("source", "")), []).append(record)
    return [r for group in groups.values() for r in _first_of_each_kind(group, per_kind)]


def _first_of_each_kind(records: list[Record], per_kind: int) -> list[Record]:
    counts: dict[str, int] = {}
    kept = []
    for record in records:
        counts[record.kind] = counts.get(record.kind, 0) + 1
        if counts[record.kind] <= per_kind:
            kept.append(record)
    return kept
