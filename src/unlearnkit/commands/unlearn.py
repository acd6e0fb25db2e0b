"""`unlearnkit unlearn`: apply one forget request with a method and save the model with a record."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from unlearnkit.commands._options import DeviceOpt, FormatOpt, ModelOpt, SetOpt, parse_set
from unlearnkit.errors import UnlearnkitError


def pick_request(path: Path, request_id: str | None) -> Any:
    from unlearnkit.data.loaders import load_requests

    requests = load_requests(path)
    if request_id is not None:
        for request in requests:
            if request.id == request_id:
                return request
        raise UnlearnkitError(f"{path}: no request '{request_id}'; requests: {', '.join(r.id for r in requests)}")
    if len(requests) > 1:
        raise UnlearnkitError(f"{path}: {len(requests)} requests; choose one with --request ({', '.join(r.id for r in requests)})")
    return requests[0]


def unlearn_command(
    method: Annotated[str, typer.Option("--method", help="method name (see: unlearnkit methods)")],
    forget: Annotated[Path, typer.Option("--forget", help="forget request(s) or records (JSONL, JSON, CSV, Parquet)")],
    out: Annotated[Path, typer.Option("--out", help="folder for the unlearned model (safetensors) and unlearnkit.json")],
    model: ModelOpt = "default",
    retain: Annotated[Path | None, typer.Option("--retain", help="retain records (for methods that need them)")] = None,
    request_id: Annotated[str | None, typer.Option("--request", help="which request of the forget file")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="train a LoRA adapter and merge it")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank")] = 8,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha", help="LoRA scaling alpha")] = 16,
    sets: SetOpt = None,
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Apply one forget request with a method and save the model with a record of the run."""
    from unlearnkit.data.loaders import load_records
    from unlearnkit.methods.base import UnlearnContext, get_method
    from unlearnkit.models.stack import load_subject, save_subject

    console = Console()
    started = time.perf_counter()
    algorithm = get_method(method, parse_set(sets))  # bad name/setting: fail before loading
    request = pick_request(forget, request_id)
    retain_records = load_records(retain) if retain is not None else []
    if getattr(algorithm, "needs_retain", False) and not retain_records:
        raise UnlearnkitError(f"method '{method}': needs a retain set (--retain FILE)")
    subject = load_subject(model, fmt=fmt, device=device)
    loaded = time.perf_counter()
    lora_settings = {"r": lora_r, "lora_alpha": lora_alpha} if lora else None
    context = UnlearnContext(retain=retain_records, seed=getattr(algorithm, "seed", 0), lora=lora_settings)
    result = algorithm.unlearn(subject, request, context)
    trained = time.perf_counter()
    stats = context.stats
    record: dict[str, Any] = {
        "model": model,
        "method": method,
        "settings": algorithm.model_dump(),
        "request": request.id,
        "forget_file": str(forget),
        "forget_records": len(request.records),
        "retain_file": str(retain) if retain else None,
        "retain_records": len(retain_records),
        "lora": lora_settings,
        "steps": stats.steps if stats else None,
        "tokens": stats.tokens if stats else None,
        "stopped_early": stats.stopped_early if stats else None,
        "losses": stats.history if stats else [],
        "timings": {
            "load_seconds": loaded - started,
            "unlearn_seconds": trained - loaded,
            "train_seconds": stats.seconds if stats else None,
            "tokens_per_second": stats.tokens_per_second if stats else None,
        },
    }
    save_subject(result, out, meta=record)
    steps = f"{stats.steps} steps, {stats.tokens_per_second:.0f} tok/s, " if stats else ""
    console.print(f"{method} on {request.id}: {steps}{trained - loaded:.1f}s; saved {out} in {time.perf_counter() - trained:.1f}s")
