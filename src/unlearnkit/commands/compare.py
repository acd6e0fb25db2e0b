"""`unlearnkit compare RUN [RUN ...]`: runs side by side, and forgetting against utility."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.display import number


def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="run folders")],
    out: Annotated[Path, typer.Option(help="HTML file for the table and the plot")] = Path("compare.html"),
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the rows as JSON here")] = None,
) -> None:
    """Side-by-side table of runs and a plot of forgetting against utility."""
    from unlearnkit.commands._options import check_json_out
    from unlearnkit.files import check_output_file, write_json, write_text
    from unlearnkit.report.compare import compare as build

    console = Console()
    check_output_file(out, "--out", suffixes=(".html", ".htm"))
    check_json_out(json_out)
    rows, page = build(runs)
    # One row per measure and one column per run: a dozen measures fit a terminal, a dozen runs rarely do.
    table = Table(title="runs after their last step")
    table.add_column("measure")
    for row in rows:
        table.add_column(str(row["run"]), justify="right", overflow="fold")
    for column in list(rows[0])[1:]:
        table.add_row(column, *(number(row.get(column)) for row in rows))
    console.print(table)
    write_text(out, page)
    if json_out is not None:
        write_json(json_out, rows)
    console.print(f"comparison: {out}")
