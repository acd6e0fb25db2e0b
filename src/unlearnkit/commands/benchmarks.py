"""`unlearnkit benchmarks`: the field's benchmarks that `--benchmark` reads (TOFU, MUSE, WMDP)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def benchmarks_command() -> None:
    """The benchmarks `eval`, `unlearn` and `run` read with --benchmark NAME [--data-dir DIR]."""
    from unlearnkit.data.benchmarks import BENCHMARKS

    table = Table(title="Benchmarks (--benchmark NAME; --data-dir DIR: a local copy of the hub files)")
    for column in ("name", "suite", "hub datasets", "streams (run)", "what"):
        table.add_column(column, overflow="fold")
    for bench in BENCHMARKS.values():
        names = ", ".join(f"{bench.family}:{v}" for v in bench.variants)
        table.add_row(names, bench.suite, ", ".join(bench.repos), ", ".join(bench.streams) or "-", bench.description)
    Console().print(table)
