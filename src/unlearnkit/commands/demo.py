"""`unlearnkit demo`, `unlearnkit report RUN` and `unlearnkit compare RUN [RUN ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def demo(
    out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/demo"),
    size: Annotated[str, typer.Option(help="world size: tiny, small or medium")] = "small",
    seed: Annotated[int, typer.Option(help="world seed")] = 0,
    method: Annotated[str | None, typer.Option(help="method name instead of the default")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="method hyperparameter key=value (repeatable)")] = None,
    requests: Annotated[int | None, typer.Option(help="apply only the world's first N requests")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="base model")] = "default",
    attacks: Annotated[str, typer.Option(help="attacks after the last step, comma-separated ('' for none)")] = "leak_at_k,quantize",
) -> None:
    """The whole product on the embedded default: world, target, oracles, 3 requests, report."""
    from unlearnkit.commands.methods import parse_settings
    from unlearnkit.demo import DEFAULT_METHOD, run_demo

    chosen = [a for a in attacks.split(",") if a.strip()]
    settings = parse_settings(sets or [])
    name = method or DEFAULT_METHOD["name"]
    base = DEFAULT_METHOD["settings"] if name == DEFAULT_METHOD["name"] else {}
    run_demo(out, size=size, seed=seed, method={"name": name, "settings": {**base, **settings}}, model=model,
             attacks=chosen, requests=requests)


def report(run: Annotated[Path, typer.Argument(help="a run folder")], out: Annotated[Path | None, typer.Option(help="HTML file")] = None) -> None:
    """Rebuild a run folder's report.html from its results, references and attacks."""
    from unlearnkit.report.html import write_report

    console.print(f"report: {write_report(run, out)}")


def compare(
    runs: Annotated[list[Path], typer.Argument(help="run folders")],
    out: Annotated[Path, typer.Option(help="HTML file for the table and the plot")] = Path("compare.html"),
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the rows as JSON here")] = None,
) -> None:
    """Side-by-side table of runs and a plot of forgetting against utility."""
    from unlearnkit.report.compare import compare as build
    from unlearnkit.report.html import fmt

    rows, page = build(runs)
    # One row per measure and one column per run: a dozen measures fit a terminal, a dozen runs rarely do.
    table = Table(title="runs after their last step")
    table.add_column("measure")
    for row in rows:
        table.add_column(str(row["run"]), justify="right", overflow="fold")
    for column in list(rows[0])[1:]:
        table.add_row(column, *(fmt(row.get(column)) for row in rows))
    console.print(table)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    if json_out is not None:
        import json

        json_out.write_text(json.dumps(rows, indent=2) + "\n")
    console.print(f"comparison: {out}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
    app.command()(report)
    app.command()(compare)
