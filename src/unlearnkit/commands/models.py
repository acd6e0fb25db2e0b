"""`unlearnkit models`: what the embedded default model is, where it is cached, whether it is ready."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def models_command(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """What the embedded default model is, where it is cached, and whether it is ready."""
    from unlearnkit.models.loading import cache_dir, default_status

    console = Console()
    status = default_status()
    status["cache_dir"] = str(cache_dir())
    if as_json:
        console.print_json(data=status)
        return
    table = Table(title="Embedded default model", show_header=False)
    for key, value in status.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print("Other sources: a local HF folder, a .gguf file, or a hub id (where a hub is reachable).")
