"""`unlearnkit world`: write a built-in fictitious world (the benchmark's data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def world_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the world into")],
    seed: Annotated[int, typer.Option(help="the same seed and size give byte-identical files")] = 0,
    size: Annotated[str, typer.Option(help="tiny, small, medium, or stream (one person per request, for long streams: --requests 100)")] = "small",
    requests: Annotated[int, typer.Option("--requests", "-k", help="number of sequential forget requests")] = 3,
) -> None:
    """Write a fictitious world: people, K forget requests, retain, neighbours, holdout, real facts, general text."""
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.data.world import load_world

    console = Console()
    path = build_world(out, seed=seed, size=size, num_requests=requests)
    world = load_world(path)
    table = Table(title=f"world '{size}' (seed {seed}) in {path}")
    for column in ("split", "people", "records", "probes"):
        table.add_column(column, justify="left" if column == "split" else "right")
    splits = world.meta["splits"]
    for request in world.requests:
        table.add_row(request.id, str(len(splits[request.id])), str(len(request.records)), str(len(request.probes)))
    for name in ("neighbours", "retain", "holdout"):
        table.add_row(name, str(len(splits[name])), str(len(getattr(world, name))), "")
    table.add_row("real_facts", "", str(len(world.real_facts)), "")
    table.add_row("general_text", "", str(len(world.general_text)), "")
    console.print(table)
