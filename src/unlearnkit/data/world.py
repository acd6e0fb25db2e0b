"""A built-in world folder read back (written by `unlearnkit world`, see docs/contracts.md).

The generator lives in `unlearnkit.benchmark.world`; reading the folder is here, below every
package that needs it (evaluation, prepare, the runner), so none of them imports the generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from unlearnkit.data.loaders import load_records, load_requests
from unlearnkit.data.schema import ForgetRequest, Record
from unlearnkit.errors import DataError

WORLD_MARKER = "world.json"  # a folder holding it is a world unlearnkit wrote (and may replace)
WORLD_FILES = (
    "world.json", "people.jsonl", "requests.jsonl", "retain.jsonl", "neighbours.jsonl",
    "holdout.jsonl", "real_facts.jsonl", "general_text.jsonl",
)


class Person(BaseModel):
    """One fictitious person: attribute values and outgoing relations (relation -> person id)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    gender: str
    split: str
    attributes: dict[str, str]
    relations: dict[str, str] = {}

    @property
    def first(self) -> str:
        return self.name.split(" ", 1)[0]


@dataclass
class World:
    """A world folder read back: records per split and the people behind them."""

    requests: list[ForgetRequest]
    retain: list[Record]
    neighbours: list[Record]
    holdout: list[Record]
    real_facts: list[Record]
    general_text: list[Record]
    people: dict[str, Person]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def trained(self, without: int = 0) -> list[Record]:
        """Records the target trains on (without=0), or oracle t (without requests 1..t)."""
        kept = [r for request in self.requests[without:] for r in request.records]
        return kept + self.retain + self.neighbours


def load_world(world_dir: str | Path) -> World:
    """Read a WORLD folder back, validating every file with the project loaders."""
    path = Path(world_dir)
    missing = [name for name in WORLD_FILES if not (path / name).exists()]
    if missing:
        raise DataError(f"{path}: not a world folder (missing {', '.join(missing)}; create one with `unlearnkit world`)")
    try:
        meta = json.loads((path / "world.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path / 'world.json'} line {exc.lineno}: invalid JSON ({exc.msg})") from None
    people: dict[str, Person] = {}
    for number, line in enumerate((path / "people.jsonl").read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            person = Person.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise DataError(f"{path / 'people.jsonl'} line {number}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        people[person.id] = person
    return World(
        requests=load_requests(path / "requests.jsonl"),
        retain=load_records(path / "retain.jsonl"),
        neighbours=load_records(path / "neighbours.jsonl"),
        holdout=load_records(path / "holdout.jsonl"),
        real_facts=load_records(path / "real_facts.jsonl"),
        general_text=load_records(path / "general_text.jsonl"),
        people=people,
        meta=meta,
        path=path,
    )
