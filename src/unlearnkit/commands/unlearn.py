"""`unlearnkit unlearn`: apply one forget request, guarded, and save the model with its record.

By default the run is guarded (docs/guarded.md): the model is measured before and after on the
request, the retain set, collateral facts it knew and general text; training stops at the
forget target or rolls back within the damage budget; `--auto` (the default) calibrates the
learning rate with a few trials from the same start. A verdict card is printed and stored in
`unlearnkit.json`; `--strict` turns any verdict but `forgotten` into exit code 3.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from unlearnkit.commands._options import BenchmarkOpt, DataDirOpt, DeviceOpt, FormatOpt, ModelOpt, SetOpt, bounded, check_models, parse_set
from unlearnkit.errors import UnlearnkitError, VerdictError

# The one method that met the bar on real knowledge (bench/real_knowledge.py, docs/methods.md
# "Real knowledge"): every question of the request refused, plain and paraphrased, with the kept
# and never-mentioned facts intact. It guards the model's answers; the weights keep the facts
# (a weight method such as npo_gd, guarded, removes part of them; its verdict says how much).
DEFAULT_METHOD = "guardrail"


def pick_request(path: Path | str, request_id: str | None, requests: list[Any] | None = None) -> Any:
    """The request to apply: the only one of the file (or of `requests`), or the one named."""
    from unlearnkit.data.loaders import load_requests

    requests = load_requests(path) if requests is None else requests
    if request_id is not None:
        for request in requests:
            if request.id == request_id:
                return request
        raise UnlearnkitError(f"{path}: no request '{request_id}'; requests: {', '.join(r.id for r in requests)}")
    if len(requests) > 1:
        raise UnlearnkitError(f"{path}: {len(requests)} requests; choose one with --request ({', '.join(r.id for r in requests)})")
    return requests[0]


def forget_and_retain(forget: Path | None, retain: Path | None, benchmark: str | None, data_dir: Path | None, request_id: str | None) -> tuple[Any, list[Any], str]:
    """The request, the retain records and where they came from: the files, or a benchmark's
    request and the retain set its unlearning keeps (`--retain` replaces it)."""
    from unlearnkit.data.benchmarks import load_benchmark
    from unlearnkit.data.loaders import load_records

    if (forget is None) == (benchmark is None):
        raise UnlearnkitError("give exactly one of --forget FILE or --benchmark NAME")
    if benchmark is None and data_dir is not None:
        raise UnlearnkitError("--data-dir: name the benchmark it holds (--benchmark)")
    if benchmark is not None:
        bench = load_benchmark(benchmark, data_dir, training=True)
        request = pick_request(benchmark, request_id, bench.requests)
        kept = load_records(retain) if retain is not None else (bench.train_retain or bench.sets.get("retain", []))
        return request, kept, f"benchmark {benchmark}"
    assert forget is not None
    return pick_request(forget, request_id), load_records(retain) if retain is not None else [], str(forget)


def guard_settings(guard: bool, auto: bool, strict: bool, sets: list[str] | None) -> Any:
    """The `Guard` of this call: the defaults, `--auto`/`--strict`, and `--guard KEY=VALUE`
    (dotted keys into the plan's `guard` section, e.g. budget.retain_drop=0.1)."""
    from pydantic import ValidationError

    from unlearnkit.safety.settings import Guard

    tree: dict[str, Any] = {"enabled": guard, "strict": strict, "calibrate": {"enabled": auto}}
    for key, value in parse_set(sets).items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return Guard.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UnlearnkitError(f"--guard-set {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def unlearn_command(
    out: Annotated[Path, typer.Option("--out", help="folder for the unlearned model (safetensors) and unlearnkit.json")],
    forget: Annotated[Path | None, typer.Option("--forget", help="forget request(s) or records (JSONL, JSON, CSV, Parquet)")] = None,
    benchmark: BenchmarkOpt = None,
    data_dir: DataDirOpt = None,
    method: Annotated[str, typer.Option("--method", help="method name (see: unlearnkit methods)")] = DEFAULT_METHOD,
    model: ModelOpt = "default",
    retain: Annotated[Path | None, typer.Option("--retain", help="retain records (kept, and measured against the budget)")] = None,
    control: Annotated[Path | None, typer.Option("--control", help="never-seen records of the same kind (target probability: control)")] = None,
    request_id: Annotated[str | None, typer.Option("--request", help="which request of the forget file")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="train a LoRA adapter and merge it")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", callback=bounded(1, 4096), help="LoRA rank")] = 8,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", callback=bounded(1, 1_000_000), help="LoRA scaling alpha")] = 16,
    sets: SetOpt = None,
    auto: Annotated[bool, typer.Option("--auto/--no-auto", help="calibrate the learning rate with trials from the same start")] = True,
    guard: Annotated[bool, typer.Option("--guard/--no-guard", help="damage budget, forget target and verdict (docs/guarded.md)")] = True,
    guard_sets: Annotated[list[str] | None, typer.Option("--guard-set", help="guard setting KEY=VALUE, e.g. budget.retain_drop=0.1 or target.probability=control (repeatable)")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="exit with code 3 unless the verdict is 'forgotten'")] = False,
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Apply one forget request with a method, guarded, and save the model with a record and a verdict."""
    from unlearnkit import distributed
    from unlearnkit.data.loaders import load_records
    from unlearnkit.engine.faults import crash_point
    from unlearnkit.files import check_output_folder
    from unlearnkit.methods.base import UnlearnContext, get_method
    from unlearnkit.models.stack import MODEL_MARKERS, load_subject, save_subject
    from unlearnkit.safety.apply import apply_request
    from unlearnkit.safety.probes import build_probes

    console = Console()
    started = time.perf_counter()
    # An existing --out is replaced only when it is a model unlearnkit saved (never a file of yours).
    check_output_folder(out, MODEL_MARKERS, "--out")
    algorithm = get_method(method, parse_set(sets))  # bad name/setting: fail before loading
    settings = guard_settings(guard, auto, strict, guard_sets)
    request, retain_records, forget_source = forget_and_retain(forget, retain, benchmark, data_dir, request_id)
    control_records = load_records(control) if control is not None else []
    if getattr(algorithm, "needs_retain", False) and not retain_records:
        raise UnlearnkitError(f"method '{method}': needs a retain set (--retain FILE)")
    if settings.target.probability == "control" and not control_records:
        raise UnlearnkitError("--guard-set target.probability=control: needs a control set (--control FILE)")
    check_models(model=model)
    subject = load_subject(model, fmt=fmt, device=device)
    loaded = time.perf_counter()
    probes = build_probes(subject, request, settings, retain=retain_records, control=control_records) if settings.enabled else None
    lora_settings = {"r": lora_r, "lora_alpha": lora_alpha} if lora else None
    context = UnlearnContext(retain=retain_records, seed=getattr(algorithm, "seed", 0), lora=lora_settings)
    applied = apply_request(subject, request, [algorithm], context, settings, probes)
    trained = time.perf_counter()
    stats = applied.stats[-1] if applied.stats else None
    record: dict[str, Any] = {
        "model": model,
        "method": method,
        "settings": algorithm.model_dump(),
        "guard": settings.model_dump(),
        "request": request.id,
        "forget_file": forget_source,
        "forget_records": len(request.records),
        "retain_file": str(retain) if retain else None,
        "retain_records": len(retain_records),
        "lora": lora_settings,
        "steps": applied.steps if applied.stats else None,
        "tokens": applied.tokens if applied.stats else None,
        "stop_reason": stats.stop_reason if stats else None,
        "losses": stats.history if stats else [],
        "checks": stats.checks if stats else [],
        "verdict": applied.card.to_json() if applied.card else None,
        "timings": {
            "load_seconds": loaded - started,
            "unlearn_seconds": trained - loaded,
            "train_seconds": stats.seconds if stats else None,
            "tokens_per_second": stats.tokens_per_second if stats else None,
        },
    }
    with distributed.main_writes() as writer:  # several processes trained it together; one saves it
        if writer:
            save_subject(applied.subject, out, meta=record, before_rename=lambda: crash_point("save", 1))
    if not distributed.is_main():
        return
    steps = f"{applied.steps} steps, {stats.tokens_per_second:.0f} tok/s, " if stats else ""
    if applied.card is not None:
        console.print(applied.card.table())
    console.print(f"{method} on {request.id}: {steps}{trained - loaded:.1f}s; saved {out} in {time.perf_counter() - trained:.1f}s")
    if settings.strict and applied.card is not None and not applied.card.forgotten:
        raise VerdictError(f"request '{request.id}': verdict '{applied.card.verdict}' (--strict); the model is saved at {out}")
