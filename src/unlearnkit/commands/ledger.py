"""`unlearnkit ledger RUN`: a run's history (requests, steps, one metric per request and step, flags).

`--check` reads the ledger without writing and lists what is wrong (exit 1 if anything is);
`--repair` rebuilds a damaged ledger from the run folder, keeping the damaged file
(engine/repair.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.display import number
from unlearnkit.errors import UnlearnkitError


def ledger_command(
    run: Annotated[Path, typer.Argument(help="a run folder (or its ledger.sqlite)")],
    metric: Annotated[str, typer.Option("--metric", help="the metric shown per request and step")] = "probability",
    long: Annotated[bool, typer.Option("--long", help="also list every metric row")] = False,
    check: Annotated[bool, typer.Option("--check", help="check the ledger file and its contents, writing nothing")] = False,
    repair: Annotated[bool, typer.Option("--repair", help="rebuild a damaged ledger from the run folder (the damaged file is kept)")] = False,
) -> None:
    """Print a run's history: requests, steps with timings, a metric per request and step, flags."""
    from unlearnkit.engine import repair as repairs

    path = repairs.ledger_path(run)
    if check and repair:
        raise UnlearnkitError("give one of --check or --repair")
    if repair:
        if not run.is_dir() and not path.parent.is_dir():
            raise UnlearnkitError(f"{run}: no such run folder")
        if path.exists() and not repairs.inspect(path):
            Console().print(f"{path}: sound; nothing to repair")
            return
        for line in repairs.summary(*repairs.repair(run)):
            Console().print(line, highlight=False)
        return
    if not path.exists():
        raise UnlearnkitError(f"{run}: no ledger.sqlite here (not a run folder)")
    if check:
        problems = repairs.inspect(path)
        for problem in problems:
            Console().print(f"ledger problem: {problem}", highlight=False, soft_wrap=True)
        if problems:
            raise UnlearnkitError(f"{path}: {len(problems)} problem(s); rebuild it from the run folder with `unlearnkit ledger {path.parent} --repair`")
        Console().print(f"{path}: sound")
        return
    print_ledger(run, metric, long)


def print_ledger(run: Path, metric: str = "probability", long: bool = False) -> None:
    from unlearnkit.engine.ledger import Ledger

    console = Console()  # made per call, so the terminal width (COLUMNS) is read now
    path = run if run.suffix == ".sqlite" else run / "ledger.sqlite"
    if not path.exists():
        raise UnlearnkitError(f"{run}: no ledger.sqlite here (not a run folder)")
    ledger = Ledger(path)
    requests = ledger.requests()
    table = Table(title=f"requests ({path})")
    for column in ("#", "id", "kind", "received", "sha256", "records", "status", "step"):
        table.add_column(column)
    for r in requests:  # `step`: the step that applied it (several share one when coalesced)
        table.add_row(str(r["position"]), r["id"], r["kind"], r["received_at"][:19], r["sha256"][:12], str(r["records"]), r["status"],
                      "-" if r["step"] is None else str(r["step"]))
    console.print(table)

    steps = ledger.steps()
    table = Table(title="steps (seconds)")
    verdicts = ledger.verdicts()
    for column in ("step", "request", "method", "verdict", "unlearn", "checkpoint", "eval", "tokens", "train steps", "checkpoint file"):
        table.add_column(column, justify="right" if column in ("unlearn", "checkpoint", "eval", "tokens", "train steps") else "left")
    for s in steps:
        eval_s = f"{s.eval_s:.1f}" if s.eval_s is not None else "pending"
        verdict = verdicts[s.step]["verdict"] if s.step in verdicts else "unguarded"
        table.add_row(str(s.step), s.request_id, s.method, verdict, f"{s.unlearn_s:.1f}", f"{s.checkpoint_s:.1f}", eval_s,
                      str(s.tokens), str(s.train_steps), s.checkpoint + ("" if s.kept else " (pruned)"))
    console.print(table)

    # One metric as a matrix: how each request's value moves as later requests are applied.
    values = {(row["step"], row["scope"]): row["value"] for row in ledger.metrics() if row["name"] == metric}
    if values:
        scopes = list(dict.fromkeys(scope for _, scope in values))
        table = Table(title=f"{metric} per scope (rows) after each step (columns)")
        table.add_column("scope")
        for s in steps:
            table.add_column(str(s.step), justify="right")
        for scope in scopes:
            table.add_row(scope, *[number(values.get((s.step, scope))) for s in steps])
        console.print(table)

    if long:
        table = Table(title="all metrics")
        for column in ("step", "scope", "metric", "value"):
            table.add_column(column)
        for row in ledger.metrics():
            table.add_row(str(row["step"]), row["scope"], row["name"], number(row["value"]))
        console.print(table)

    flags = ledger.flags()
    if flags:
        table = Table(title="flags")
        for column in ("step", "request", "kind", "metric", "value", "threshold"):
            table.add_column(column)
        for f in flags:
            table.add_row(str(f["step"]), f["request_id"], f["kind"], f["metric"], number(f["value"]), number(f["threshold"]))
        console.print(table)
    problems = ledger.check()
    for problem in problems:
        console.print(f"[red]ledger problem:[/red] {problem}")
    ledger.close()
