"""`unlearnkit eval`: run an evaluation suite on a model, print a table, write JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.errors import UnlearnkitError

console = Console()


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3e}" if value != 0 and abs(value) < 1e-3 else f"{value:.4f}"


def print_result(result: object) -> None:
    from unlearnkit.eval.result import SuiteResult

    assert isinstance(result, SuiteResult)
    table = Table(title=f"suite '{result.suite}' on {result.subject}")
    for column, justify in (("scope", "left"), ("metric", "left"), ("value", "right"), ("items", "right"), ("seconds", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in result.rows:
        table.add_row(row.scope, row.metric, _format(row.value), str(row.items), f"{row.seconds:.2f}")
    console.print(table)
    passes = result.passes
    console.print(
        f"forward passes: {passes.get('score_computed', 0)} of {passes.get('score_requested', 0)} asked for; "
        f"generations: {passes.get('generate_computed', 0)} of {passes.get('generate_requested', 0)}; "
        f"{result.timings.get('total', 0.0):.1f}s"
    )


def load_any_subject(source: str, fmt: str, device: str, batch_size: int) -> object:
    """A model, or a saved Subject folder (a checkpoint of an inference-time method, with its
    wrapper.json), so that unlearned checkpoints of every kind are evaluated the same way."""
    from unlearnkit.models.subject import Subject

    path = Path(source)
    if (path / "wrapper.json").exists() or (path / "unlearnkit_subject.json").exists():
        from unlearnkit.methods.inference_base import load_subject

        subject = load_subject(path, device=device)
        subject.batch_size = batch_size
        return subject
    return Subject.load(source, fmt=fmt, device=device, batch_size=batch_size)


def eval_command(
    data: Annotated[list[str], typer.Option("--data", "-d", help="a WORLD folder, or files as ROLE=PATH (roles: requests, retain, neighbours, holdout, real_facts, general_text); repeatable")],
    model: Annotated[str, typer.Option("--model", "-m", help="'default', a HF folder, a .gguf file or a hub id")] = "default",
    suite: Annotated[str, typer.Option("--suite", "-s", help="quick, tofu, muse, mia or full")] = "quick",
    oracle: Annotated[str | None, typer.Option("--oracle", help="the retrain oracle: a model, or a JSON result of the same suite")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write aggregates, per-item values, settings and timings here")] = None,
    fmt: Annotated[str, typer.Option("--format", help="prompt format: auto, chat, plain, raw, or a template with {question}")] = "auto",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto")] = "auto",
    batch_size: Annotated[int, typer.Option(help="items per forward pass")] = 8,
    max_new_tokens: Annotated[int | None, typer.Option(help="cap every generation (default: each metric's reference length)")] = None,
    limit: Annotated[int | None, typer.Option(help="records per kind and set (default: the suite's own; quick uses 8)")] = None,
) -> None:
    """Evaluate a model with a suite (forget metrics per request, retain, utility, membership)."""
    from unlearnkit.cli import write_json
    from unlearnkit.eval.data import EvalData
    from unlearnkit.eval.result import SuiteResult
    from unlearnkit.eval.suites import Oracle, evaluate, get_suite, with_max_new_tokens
    from unlearnkit.models.subject import Subject

    chosen = get_suite(suite)
    if max_new_tokens is not None:
        chosen = with_max_new_tokens(chosen, max_new_tokens)
    if limit is not None:
        chosen = replace(chosen, per_set=limit)
    specs = [part for item in data for part in item.split(",") if part]
    eval_data = EvalData.load(specs)
    if not eval_data.requests and not any(eval_data.sizes().values()):
        raise UnlearnkitError("--data: no records to evaluate")
    subject = load_any_subject(model, fmt, device, batch_size)
    assert isinstance(subject, Subject)
    reference: Oracle = None
    if oracle is not None:
        if oracle.endswith(".json"):
            reference = SuiteResult.load(oracle)
            if reference.suite != chosen.name:
                raise UnlearnkitError(f"--oracle {oracle}: results of suite '{reference.suite}', not '{chosen.name}'")
        else:
            reference = load_any_subject(oracle, fmt, device, batch_size)  # type: ignore[assignment]
    result = evaluate(chosen, subject, eval_data, oracle=reference)
    result.settings |= {"model": model, "oracle": oracle, "data": specs, "format": subject.fmt.name, "batch_size": batch_size}
    print_result(result)
    if json_out:
        write_json(json_out, result.to_json())
        console.print(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
