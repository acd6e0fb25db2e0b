"""`unlearnkit methods` (what is available) and `unlearnkit unlearn` (apply one request)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.errors import UnlearnkitError

console = Console()


def describe_methods() -> list[dict[str, Any]]:
    """Every registered method with its family, needs, description and hyperparameter defaults."""
    from unlearnkit.methods.base import METHODS

    out = []
    for name, cls in METHODS.items():
        settings = {key: field.default for key, field in cls.model_fields.items()}
        out.append({"name": name, "family": cls.family, "needs": list(cls.needs), "description": cls.description, "settings": settings})
    return out


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings to a dict; values are JSON where they parse (numbers, lists, booleans), else text."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UnlearnkitError(f"--set '{pair}': expected key=value")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        settings[key.strip()] = value
    return settings


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


def register(app: typer.Typer) -> None:
    @app.command("methods")
    def methods_command(as_json: Annotated[bool, typer.Option("--json", help="print JSON (with hyperparameter defaults)")] = False) -> None:
        """The unlearning methods: family, what data each needs, and what it does."""
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

    @app.command("unlearn")
    def unlearn_command(
        method: Annotated[str, typer.Option("--method", help="method name (see: unlearnkit methods)")],
        forget: Annotated[Path, typer.Option("--forget", help="forget request(s) or records (JSONL, JSON, CSV, Parquet)")],
        out: Annotated[Path, typer.Option("--out", help="folder for the unlearned model (safetensors) and unlearnkit.json")],
        model: Annotated[str, typer.Option("--model", "-m", help="'default', a HF folder, a .gguf file or a hub id")] = "default",
        retain: Annotated[Path | None, typer.Option("--retain", help="retain records (for methods that need them)")] = None,
        request_id: Annotated[str | None, typer.Option("--request", help="which request of the forget file")] = None,
        lora: Annotated[bool, typer.Option("--lora", help="train a LoRA adapter and merge it")] = False,
        lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank")] = 8,
        lora_alpha: Annotated[int, typer.Option("--lora-alpha", help="LoRA scaling alpha")] = 16,
        sets: Annotated[list[str] | None, typer.Option("--set", help="hyperparameter key=value (repeatable)")] = None,
        fmt: Annotated[str, typer.Option("--format", help="prompt format: auto, chat, plain, raw, or a template with {question}")] = "auto",
        device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto")] = "auto",
    ) -> None:
        """Apply one forget request with a method and save the model with a record of the run."""
        from unlearnkit.data.loaders import load_records
        from unlearnkit.methods.base import UnlearnContext, get_method
        from unlearnkit.methods.inference_base import MANIFEST, WrappedSubject, load_subject, save_subject
        from unlearnkit.models.loading import save_model
        from unlearnkit.models.subject import Subject

        started = time.perf_counter()
        algorithm = get_method(method, parse_settings(sets or []))  # bad name/setting: fail before loading
        request = pick_request(forget, request_id)
        retain_records = load_records(retain) if retain is not None else []
        if getattr(algorithm, "needs_retain", False) and not retain_records:
            raise UnlearnkitError(f"method '{method}': needs a retain set (--retain FILE)")
        if (Path(model) / MANIFEST).exists():  # a saved stack of inference-time wrappers
            subject = load_subject(model, device=device)
        else:
            subject = Subject.load(model, fmt=fmt, device=device)
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
        if isinstance(result, WrappedSubject):  # inference-time methods: save the whole stack
            save_subject(result, out)
            (out / "unlearnkit.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        else:
            save_model(result.model, result.tokenizer, out, meta=record)
        saved = time.perf_counter()
        record["timings"]["save_seconds"] = saved - trained
        tmp = out / "unlearnkit.json.tmp"  # the record again, now with the save time (atomic rename)
        tmp.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        tmp.replace(out / "unlearnkit.json")
        steps = f"{stats.steps} steps, {stats.tokens_per_second:.0f} tok/s, " if stats else ""
        console.print(f"{method} on {request.id}: {steps}{trained - loaded:.1f}s; saved {out}")
