"""`unlearnkit report RUN`: rebuild a run folder's report.html from what the run wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def report_command(run: Annotated[Path, typer.Argument(help="a run folder")], out: Annotated[Path | None, typer.Option(help="HTML file")] = None) -> None:
    """Rebuild a run folder's report.html from its results, references and attacks."""
    from unlearnkit.files import check_output_file
    from unlearnkit.report.html import write_report

    if out is not None:
        check_output_file(out, "--out", suffixes=(".html", ".htm"))
    Console().print(f"report: {write_report(run, out)}")
