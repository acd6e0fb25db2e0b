"""What several commands share: their common options, the one `--set` parser, record files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from unlearnkit.errors import UnlearnkitError

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="'default', a HF folder, a .gguf file, a hub id, or a folder unlearnkit saved")]
FormatOpt = Annotated[str, typer.Option("--format", help="prompt format: auto, chat, plain, raw, or a template with {question}")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="items per forward pass")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE (repeatable)")]
BenchmarkOpt = Annotated[str | None, typer.Option("--benchmark", help="tofu:forget01|forget05|forget10, muse:news|books, wmdp:bio|cyber|chem (see: unlearnkit benchmarks)")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="a local copy of the benchmark's hub files (default: read the hub)")]


def parse_value(raw: str) -> Any:
    """A `--set` value: JSON where it parses (numbers such as 1e-4, lists, true/false, null);
    a YAML flow list or mapping (`[forget_share, retain]`); else the text itself (so `no` or
    `No idea` stay text, unlike YAML's booleans)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    if raw.strip().startswith(("[", "{")):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            pass
    return raw


def parse_set(pairs: list[str] | None, *, grouped: bool = False) -> dict[str, Any]:
    """`KEY=VALUE` strings to a dict. `grouped=True` reads `GROUP.KEY=VALUE` into
    `{group: {key: value}}` (an attack's settings: `leak_at_k.n=16`)."""
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if grouped:
            group, dot, name = key.partition(".")
            if not sep or not dot or not group or not name:
                raise UnlearnkitError(f"--set '{pair}': use ATTACK.KEY=VALUE (e.g. leak_at_k.n=16)")
            settings.setdefault(group, {})[name] = parse_value(raw)
        else:
            if not sep or not key:
                raise UnlearnkitError(f"--set '{pair}': expected key=value")
            settings[key] = parse_value(raw)
    return settings


def records_for_cli(path: Path) -> list[Any]:
    """The records of a file: every request's records for a requests file, else the records."""
    from unlearnkit.data.loaders import load_records, load_requests, read_rows

    rows = read_rows(path)
    if any("records" in row for _, row in rows):
        return [r for req in load_requests(path) for r in req.records]
    return load_records(path)
