"""`unlearnkit eval`: run an evaluation suite on a model, print a table, write JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit import distributed
from unlearnkit.commands._options import BatchSizeOpt, BenchmarkOpt, DataDirOpt, DeviceOpt, FormatOpt, ModelOpt, bounded, check_json_out, check_models
from unlearnkit.display import number
from unlearnkit.errors import UnlearnkitError

console = Console()


def print_result(result: object) -> None:
    from unlearnkit.eval.result import SuiteResult

    assert isinstance(result, SuiteResult)
    table = Table(title=f"suite '{result.suite}' on {result.subject}")
    for column, justify in (("scope", "left"), ("metric", "left"), ("value", "right"), ("items", "right"), ("seconds", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in result.rows:
        table.add_row(row.scope, row.metric, number(row.value), str(row.items), f"{row.seconds:.2f}")
    console.print(table)
    from unlearnkit.eval.suites import missing_utility

    for name, missing in missing_utility(result).items():
        console.print(f"[yellow]{name}: not computed, missing {', '.join(missing)}[/yellow]")
    passes = result.passes
    console.print(
        f"forward passes: {passes.get('score_computed', 0)} of {passes.get('score_requested', 0)} asked for; "
        f"generations: {passes.get('generate_computed', 0)} of {passes.get('generate_requested', 0)}; "
        f"{result.timings.get('total', 0.0):.1f}s"
    )


def eval_command(
    data: Annotated[list[str] | None, typer.Option("--data", "-d", help="a WORLD folder, or files as ROLE=PATH (roles: requests, retain, neighbours, holdout, real_authors, real_facts, general_text); repeatable")] = None,
    benchmark: BenchmarkOpt = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = "default",
    suite: Annotated[str | None, typer.Option("--suite", "-s", help="quick, tofu, tofu_ours, muse, muse_ours, wmdp, mia or full (default: the benchmark's, else quick)")] = None,
    oracle: Annotated[str | None, typer.Option("--oracle", help="the retrain oracle: a model, or a JSON result of the same suite")] = None,
    reference_logs: Annotated[Path | None, typer.Option("--reference-logs", help="a retain model's evaluation file as the oracle: open-unlearning's *_EVAL.json or TOFU's eval_log_aggregated.json")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write aggregates, per-item values, settings and timings here")] = None,
    ou_dir: Annotated[Path | None, typer.Option("--ou-dir", help="also write the results in open-unlearning's layout: DIR/<NAME>_EVAL.json and <NAME>_SUMMARY.json")] = None,
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8,
    max_new_tokens: Annotated[int | None, typer.Option(callback=bounded(1, 1_000_000), help="cap every generation (default: each metric's reference length)")] = None,
    limit: Annotated[int | None, typer.Option(callback=bounded(1), help="records per kind and set (default: the suite's own; quick uses 8)")] = None,
    lm_eval: Annotated[str | None, typer.Option("--lm-eval", help="lm-evaluation-harness tasks, comma-separated (mmlu, wmdp_bio, ...): their accuracies join the utility (needs unlearnkit[lm-eval])")] = None,
    lm_eval_include: Annotated[Path | None, typer.Option("--lm-eval-include", help="a folder of task YAMLs of your own for --lm-eval")] = None,
    lm_eval_limit: Annotated[int | None, typer.Option("--lm-eval-limit", callback=bounded(1), help="questions per lm-eval task (default: all)")] = None,
) -> None:
    """Evaluate a model with a suite (forget metrics per request, retain, utility, membership)."""
    from unlearnkit.eval.suites import Oracle, evaluate, get_suite, with_max_new_tokens
    from unlearnkit.files import check_output_place, write_json
    from unlearnkit.models.stack import load_subject

    specs = [part for item in data or [] for part in item.split(",") if part]
    check_json_out(json_out, *(spec.rpartition("=")[2] for spec in specs), oracle, reference_logs)
    if ou_dir is not None:
        check_output_place(ou_dir, "--ou-dir")
    if lm_eval_include is not None and not lm_eval_include.is_dir():
        raise UnlearnkitError(f"--lm-eval-include {lm_eval_include}: no such folder")
    eval_data, default_suite = load_eval_data(specs, benchmark, data_dir)
    chosen = get_suite(default_suite if suite is None else suite)  # "" is refused by name, not read as the default
    if max_new_tokens is not None:
        chosen = with_max_new_tokens(chosen, max_new_tokens)
    if limit is not None:
        chosen = replace(chosen, per_set=limit)
    reference: Oracle = None
    if oracle is not None and reference_logs is not None:
        raise UnlearnkitError("give one of --oracle or --reference-logs")
    if reference_logs is not None:
        from unlearnkit.eval.interop import reference_oracle

        wanted = [e.oracle for e in chosen.entries if e.oracle]
        reference = reference_oracle(reference_logs, wanted, [r.id for r in eval_data.requests], chosen.name)
    if oracle is not None and oracle.endswith(".json"):  # read before any model loads
        reference = load_oracle_result(oracle, chosen.name)
    check_models(model=model, oracle=None if oracle is None or oracle.endswith(".json") else oracle)
    subject = load_subject(model, fmt=fmt, device=device, batch_size=batch_size)
    if oracle is not None and not oracle.endswith(".json"):
        reference = load_subject(oracle, fmt=fmt, device=device, batch_size=batch_size)
    result = evaluate(chosen, subject, eval_data, oracle=reference)
    if lm_eval:
        from unlearnkit.eval.lm_eval import add_lm_eval, run_lm_eval

        tasks = [t.strip() for t in lm_eval.split(",") if t.strip()]
        scores = run_lm_eval(subject, tasks, include_path=lm_eval_include, limit=lm_eval_limit)
        add_lm_eval(result, scores, chosen.utility_name if chosen.utility else None)
    if not distributed.is_main():  # several processes scored it together (`distributed.deal`); rank 0 reports
        return
    result.settings |= {"model": model, "oracle": oracle, "reference_logs": str(reference_logs) if reference_logs else None,
                        "data": specs, "benchmark": benchmark, "format": subject.fmt.name, "batch_size": batch_size,
                        "lm_eval": {"tasks": lm_eval, "include": str(lm_eval_include) if lm_eval_include else None, "limit": lm_eval_limit} if lm_eval else None}
    print_result(result)
    if json_out:
        write_json(json_out, result.to_json())
        console.print(f"wrote {json_out}")
    if ou_dir:
        from unlearnkit.eval.interop import write_ou_logs

        logs, summary = write_ou_logs(result, ou_dir)
        console.print(f"wrote {logs} and {summary}")


def load_oracle_result(path: str, suite: str) -> Any:
    """`--oracle RESULT.json`: a suite result written by `eval --json`, of the same suite."""
    from unlearnkit.eval.result import SuiteResult

    if not Path(path).is_file():
        raise UnlearnkitError(f"--oracle {path}: no such file")
    try:
        reference = SuiteResult.load(path)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = "invalid JSON" if isinstance(exc, ValueError) else f"no {exc}" if isinstance(exc, KeyError) else "unexpected content"
        raise UnlearnkitError(f"--oracle {path}: not a suite result written by `unlearnkit eval --json` ({reason})") from None
    if reference.suite != suite:
        raise UnlearnkitError(f"--oracle {path}: results of suite '{reference.suite}', not '{suite}'")
    return reference


def load_eval_data(specs: list[str], benchmark: str | None, data_dir: Path | None) -> tuple[Any, str]:
    """The data to evaluate (a benchmark, the user's files, or both) and the default suite."""
    from unlearnkit.data.benchmarks import load_benchmark
    from unlearnkit.eval.data import EvalData

    if benchmark is None and data_dir is not None:
        raise UnlearnkitError("--data-dir: name the benchmark it holds (--benchmark)")
    if benchmark is None and not specs:
        raise UnlearnkitError("--data or --benchmark: nothing to evaluate")
    eval_data, default_suite = EvalData(), "quick"
    if benchmark is not None:
        bench = load_benchmark(benchmark, data_dir)
        eval_data, default_suite = EvalData.from_benchmark(bench), bench.suite
    if specs:
        eval_data = eval_data.merged(EvalData.load(specs))
    if not eval_data.requests and not any(eval_data.sizes().values()):
        raise UnlearnkitError("--data: no records to evaluate")
    return eval_data, default_suite
