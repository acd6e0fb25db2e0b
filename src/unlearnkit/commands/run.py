"""`unlearnkit run PLAN`: apply a plan's removal requests in order (rerun to resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run_command(plan: Annotated[Path, typer.Argument(help="the plan file (YAML)")]) -> None:
    """Apply a plan's removal requests in order; rerun the same command to resume after a crash.
    With `accelerate_config` in the plan, the run starts itself under that launcher."""
    from unlearnkit import distributed
    from unlearnkit.commands._launch import already_launched, relaunch
    from unlearnkit.commands.ledger import print_ledger
    from unlearnkit.engine.runner import run_plan
    from unlearnkit.plan import load_plan

    loaded = load_plan(plan)
    if loaded.accelerate_config is not None and not already_launched():
        code = relaunch(loaded.accelerate_config, ["run", str(plan)])
        if code:
            raise typer.Exit(code)
        return  # the launched rank 0 printed the ledger
    folder = run_plan(loaded)
    if distributed.is_main():
        print_ledger(folder)
