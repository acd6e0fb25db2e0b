"""`unlearnkit run PLAN`: apply a plan's removal requests in order (rerun to resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run_command(plan: Annotated[Path, typer.Argument(help="the plan file (YAML)")]) -> None:
    """Apply a plan's removal requests in order; rerun the same command to resume after a crash."""
    from unlearnkit.commands.ledger import print_ledger
    from unlearnkit.engine.runner import run_plan
    from unlearnkit.plan import load_plan

    folder = run_plan(load_plan(plan))
    print_ledger(folder)
