"""`unlearnkit world`: write a built-in fictitious world (the benchmark's data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.commands._options import bounded


def world_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the world into")],
    seed: Annotated[int, typer.Option(callback=bounded(0, 2**63 - 1), help="the same seed and size give byte-identical files")] = 0,
    size: Annotated[Literal["tiny", "small", "medium", "stream"], typer.Option(help="tiny, small, medium, or stream (one person per request, for long streams: --requests 100)")] = "small",
    requests: Annotated[int, typer.Option("--requests", "-k", callback=bounded(1, 1000), help="number of sequential forget requests")] = 3,
) -> None:
    """Write a fictitious world: people, K forget requests, retain, neighbours, holdout, real facts, general text."""
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.data.world import WORLD_MARKER, load_world
    from unlearnkit.files import check_output_folder

    console = Console()
    check_output_folder(out, (WORLD_MARKER,), "--out")  # a world it wrote before is replaced; nothing else is
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
