"""`unlearnkit attack`: run robustness attacks on an unlearned model, print a summary table,
optionally write every result as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.commands._options import BatchSizeOpt, DeviceOpt, FormatOpt, check_json_out, check_models, parse_set
from unlearnkit.display import number
from unlearnkit.errors import UnlearnkitError

console = Console()


def print_results(results: list[Any]) -> None:
    table = Table(title="robustness attacks (recovered = (after − before) / (target − before))")
    columns = ("attack", "request", "variant", "metric", "before", "after", "target", "recovered", "oracle before", "oracle after", "oracle recovered")
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:4] else "right")
    for result in results:
        for row in result.rows:
            metric = f"{row.metric} (kept)" if row.collateral else row.metric
            table.add_row(
                result.attack, result.request, row.variant, metric,
                *(number(v) for v in (row.before, row.after, row.target, row.recovered, row.oracle_before, row.oracle_after, row.oracle_recovered)),
            )
    console.print(table)
    for result in results:
        for note in result.notes:
            console.print(f"{result.attack} {result.request}: {note}", highlight=False)


def attack_command(
    model: Annotated[str, typer.Option("--model", "-m", help="the unlearned model: 'default', a HF folder, a .gguf file, a saved wrapped model")],
    attack: Annotated[str, typer.Option("--attack", "-a", help="attack name(s), comma-separated: leak_at_k, quantize, relearn, paraphrase, two_hop, mixed, in_context, multi_turn")],
    data: Annotated[list[str], typer.Option("--data", "-d", help="a WORLD folder, or files as ROLE=PATH (as for `eval`); repeatable")],
    target: Annotated[str | None, typer.Option("--target", help="the model before unlearning (gives recovered fractions)")] = None,
    oracle: Annotated[str | None, typer.Option("--oracle", help="the retrain oracle, attacked the same way")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write every result here")] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="ATTACK.KEY=VALUE, e.g. leak_at_k.n=16 (repeatable)")] = None,
    request: Annotated[list[str] | None, typer.Option("--request", "-r", help="attack only this request id (repeatable)")] = None,
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8,
) -> None:
    """Attack an unlearned model (sampling, quantization, relearning, probes): how much comes back?"""
    from unlearnkit.eval.attacks import build_attacks, parse_names, run_attacks
    from unlearnkit.eval.data import EvalData
    from unlearnkit.files import write_json
    from unlearnkit.models.stack import load_subject

    names = parse_names(attack)
    parsed = parse_set(settings, grouped=True)
    build_attacks(names, parsed)  # bad names and settings fail before any model loads
    specs = [part for item in data for part in item.split(",") if part]
    check_json_out(json_out, *(spec.rpartition("=")[2] for spec in specs))
    eval_data = EvalData.load(specs)
    if not eval_data.requests:
        raise UnlearnkitError(f"--data {', '.join(specs)}: no forget requests to attack")
    unknown = sorted(set(request or []) - {r.id for r in eval_data.requests})
    if unknown:
        raise UnlearnkitError(f"--request {unknown[0]}: no such request in --data (requests: {', '.join(r.id for r in eval_data.requests)})")
    check_models(model=model, target=target, oracle=oracle)
    subject = load_subject(model, fmt=fmt, device=device, batch_size=batch_size, name=model)
    target_subject = load_subject(target, fmt=fmt, device=device, batch_size=batch_size, name=f"target:{target}") if target else None
    oracle_subject = load_subject(oracle, fmt=fmt, device=device, batch_size=batch_size, name=f"oracle:{oracle}") if oracle else None
    results = run_attacks(names, subject, eval_data, target_subject, oracle_subject, parsed, requests=request)
    print_results(results)
    if json_out:
        payload = {
            "model": model, "target": target, "oracle": oracle, "data": specs, "attacks": names,
            "results": [r.to_json() for r in results],
        }
        write_json(json_out, payload)
        console.print(f"wrote {json_out}")
