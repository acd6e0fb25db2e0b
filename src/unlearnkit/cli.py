"""The `unlearnkit` command line (typer + rich).

Each command lives in `unlearnkit/commands/<name>.py` as `<name>_command` and is registered
below, explicitly, in the order `--help` lists them. Every `UnlearnkitError` ends the command
with one `error: ...` line and exit code 1, never a traceback (`main` lists every ending).
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console

from unlearnkit.commands import (
    attack,
    benchmarks,
    compare,
    demo,
    estimate,
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
from unlearnkit import distributed
from unlearnkit.errors import UnlearnkitError
from unlearnkit.signals import Interrupted, handling_signals

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
    "estimate": estimate.estimate_command,
}
for name, command in COMMANDS.items():
    app.command(name)(command)
app.add_typer(keys.keys_app, name="keys")  # a group: keys add | list | revoke


def main() -> None:
    """Entry point: run the app; every way it can end is an exit code and at most one line.

    - an `UnlearnkitError`: `error: <message>`, its `exit_code` (default 1);
    - a usage error (an unknown option, a value out of its bounds): `error: <message>`, 2;
    - SIGINT / SIGTERM: stopped at a safe point, temporary output removed (signals.py), one
      line, 130 / 143;
    - an operating-system error (disk full, no permission): `error: <file>: <reason>`, 1;
    - anything else is a bug: one `error: internal error` line, 70 (the traceback only with
      UNLEARNKIT_DEBUG=1).
    """
    code = 0
    try:
        if distributed.launched():  # join the process group first: it picks this process's GPU
            distributed.state()
        with handling_signals():
            returned = app(standalone_mode=False, prog_name="unlearnkit")
        # Non-standalone typer returns the code of an `Exit` (e.g. 130 for a KeyboardInterrupt
        # it caught) instead of exiting with it: honour it, never turn it into 0.
        code = returned if isinstance(returned, int) else 0
    except Interrupted as exc:
        _say(f"{exc}: stopped, temporary output removed" + (" (rerun to resume)" if _is_run() else ""))
        code = exc.exit_code
    except UnlearnkitError as exc:
        _say(str(exc), error=True)
        code = getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        _say("interrupted by SIGINT")
        code = 130
    except typer.Abort:
        _say("aborted")
        code = 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"{where}{exc.strerror or exc}", error=True)
        code = 1
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # typer's bundled click: a usage error
            _say(_usage_line(exc), error=True)
            code = exc.exit_code
        elif type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):
            code = exc.exit_code
        elif os.environ.get("UNLEARNKIT_DEBUG"):
            raise
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _say(f"internal error ({type(exc).__name__}{': ' + first if first else ''}); please report it (UNLEARNKIT_DEBUG=1 shows the traceback)", error=True)
            code = 70
    sys.exit(code)


def _say(line: str, *, error: bool = False) -> None:
    """The one line a command ends with on stderr (newlines inside it escaped); a JSON log line
    where the command logs as JSON (`unlearnkit serve`: every stderr line is one object)."""
    text = " ".join(line.splitlines())  # every kind of line break, not only \n
    from unlearnkit.service.logs import logs_json

    if logs_json():
        logging.getLogger("unlearnkit.cli").log(logging.ERROR if error else logging.INFO, text)
        return
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if error:
        console.print("[bold red]error:[/] ", end="")
    console.print(text, markup=False)


def _usage_line(exc: Exception) -> str:
    message = exc.format_message().replace("Value error, ", "")  # type: ignore[attr-defined]
    context = getattr(exc, "ctx", None)
    command = context.command_path if context is not None else "unlearnkit"
    return f"{message} (see: {command} --help)"


def _is_run() -> bool:
    return len(sys.argv) > 1 and sys.argv[1] in ("run", "demo")
