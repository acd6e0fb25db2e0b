"""`unlearnkit methods`: the unlearning methods, their family, needs and hyperparameters."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


def describe_methods() -> list[dict[str, Any]]:
    """Every registered method with its family, needs, description and hyperparameter defaults."""
    from unlearnkit.methods.base import METHODS

    out = []
    for name, cls in METHODS.items():
        settings = {key: field.default for key, field in cls.model_fields.items()}
        out.append({"name": name, "family": cls.family, "needs": list(cls.needs), "description": cls.description, "settings": settings})
    return out


def methods_command(as_json: Annotated[bool, typer.Option("--json", help="print JSON (with hyperparameter defaults)")] = False) -> None:
    """The unlearning methods: family, what data each needs, and what it does."""
    console = Console()
    rows = describe_methods()
    if as_json:
        console.print_json(data=rows, default=str)
        return
    table = Table(title="Unlearning methods (hyperparameters: unlearnkit methods --json)")
    for column in ("name", "family", "needs", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["family"], ", ".join(row["needs"]) or "-", row["description"])
    console.print(table)
