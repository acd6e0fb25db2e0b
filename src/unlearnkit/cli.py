"""The `unlearnkit` command line (typer + rich).

Each command lives in `unlearnkit/commands/<name>.py` as `<name>_command` and is registered
below, explicitly, in the order `--help` lists them. Every `UnlearnkitError` ends the command
with one `error: ...` line and exit code 1, never a traceback.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from unlearnkit.commands import (
    attack,
    benchmarks,
    compare,
    demo,
    eval as eval_,
    generate,
    keys,
    ledger,
    methods,
    models,
    prepare,
    report,
    run,
    score,
    serve,
    unlearn,
    world,
)
from unlearnkit.errors import UnlearnkitError

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

app = typer.Typer(
    name="unlearnkit",
    help="Make a language model forget content as removal requests arrive, and measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMANDS = {
    "demo": demo.demo_command,
    "models": models.models_command,
    "score": score.score_command,
    "generate": generate.generate_command,
    "methods": methods.methods_command,
    "unlearn": unlearn.unlearn_command,
    "eval": eval_.eval_command,
    "benchmarks": benchmarks.benchmarks_command,
    "attack": attack.attack_command,
    "world": world.world_command,
    "prepare": prepare.prepare_command,
    "run": run.run_command,
    "ledger": ledger.ledger_command,
    "report": report.report_command,
    "compare": compare.compare_command,
    "serve": serve.serve_command,
}
for name, command in COMMANDS.items():
    app.command(name)(command)
app.add_typer(keys.keys_app, name="keys")  # a group: keys add | list | revoke


def main() -> None:
    """Entry point: run the app, turning our errors into one line."""
    try:
        app(standalone_mode=False)
    except UnlearnkitError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 1))
    except typer.Abort:
        Console(stderr=True).print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors of typer's bundled click: print its own short message, keep its exit code.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        raise
