"""What several commands share: their common options with their bounds, the one `--set`
parser, record files, and the checks that run before a command loads or writes anything.

Every command validates all of its inputs first (options by their bounds here, then files,
plans, requests, model sources and output paths), and only then loads a model or creates
output, so a bad input is one `error:` line with nothing written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from unlearnkit.errors import UnlearnkitError


# -- option bounds ------------------------------------------------------------------------------
def bounded(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> Callable[[Any], Any]:
    """A typer callback refusing a number outside its interval, NaN and the infinities (for a
    repeatable option, each value)."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    interval = f"{left}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{right}"
    if high is None and not low_open and low is not None:
        interval = f"at least {low:g}"

    def check(value: Any) -> Any:
        for number in value if isinstance(value, list | tuple) else [value]:
            if number is None:
                continue
            if isinstance(number, float) and not math.isfinite(number):
                raise typer.BadParameter(f"{number} is not a finite number")
            below = low is not None and (number <= low if low_open else number < low)
            above = high is not None and (number >= high if high_open else number > high)
            if below or above:
                raise typer.BadParameter(f"{number:g} is out of bounds (use {interval})")
        return value

    return check


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        raise typer.BadParameter(f"'{value}' is not a device (use cpu, cuda, cuda:N or auto)")
    return value


def _format(value: str) -> str:
    from unlearnkit.data.formatting import PromptFormat

    try:
        PromptFormat.parse(value)
    except UnlearnkitError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="'default', a HF folder, a .gguf file, a hub id, or a folder unlearnkit saved")]
FormatOpt = Annotated[str, typer.Option("--format", callback=_format, help="prompt format: auto, chat, plain, raw, or a template with {question}")]
DeviceOpt = Annotated[str, typer.Option("--device", callback=_device, help="cpu, cuda or auto")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", callback=bounded(1), help="items per forward pass")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE (repeatable)")]
BenchmarkOpt = Annotated[str | None, typer.Option("--benchmark", help="tofu:forget01|forget05|forget10, muse:news|books, wmdp:bio|cyber|chem (see: unlearnkit benchmarks)")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="a local copy of the benchmark's hub files (default: read the hub)")]
SeedOpt = Annotated[int, typer.Option(callback=bounded(0, 2**63 - 1), help="random seed")]


# -- checks before anything is loaded or written ------------------------------------------------
def check_json_out(path: Path | None, *inputs: Path | str | None, option: str = "--json") -> None:
    """A `--json FILE` output: a .json name, not a folder, not one of the command's inputs."""
    if path is not None:
        from unlearnkit.files import check_output_file

        check_output_file(path, option, suffixes=(".json",), inputs=inputs)


def check_models(**sources: str | None) -> None:
    """Each named model source exists or can be reached (`--model`, `--target`, ...)."""
    from unlearnkit.models.loading import check_source

    for source in sources.values():
        if source is not None:
            check_source(source)


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
