"""`unlearnkit prepare`: the target and the retrain oracles of a built-in world (cached)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from unlearnkit.commands._options import DeviceOpt, FormatOpt, ModelOpt, bounded, check_json_out, check_models
from unlearnkit.errors import UnlearnkitError


def prepare_command(
    world: Annotated[Path, typer.Option("--world", "-w", help="a folder written by `unlearnkit world`")],
    model: ModelOpt = "default",
    oracles: Annotated[str, typer.Option(help="all (one per request), final (only oracle K, when time is short), none, or the steps that get one: 25,50,100")] = "all",
    lora: Annotated[int, typer.Option(callback=bounded(0, 4096), help="LoRA rank; 0 means full fine-tuning")] = 0,
    lr: Annotated[float | None, typer.Option(callback=bounded(0, 1, low_open=True), help="learning rate (default: the measured recipe)")] = None,
    epochs: Annotated[float | None, typer.Option(callback=bounded(0, 10_000, low_open=True), help="epochs over the trained records")] = None,
    batch_size: Annotated[int | None, typer.Option(callback=bounded(1, 1_000_000), help="records per micro-batch")] = None,
    grad_accum: Annotated[int | None, typer.Option(callback=bounded(1, 1_000_000), help="micro-batches per optimizer step (a multiple of the process count: docs/scale.md)")] = None,
    finetune_share: Annotated[float | None, typer.Option(help="share of the weight change kept after training, in (0, 1]; 1 keeps the trained model (default: the measured 0.6)")] = None,
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast where the hardware runs it natively), float32 or bfloat16")] = "auto",
    check: Annotated[bool, typer.Option(help="measure the quality bar afterwards (greedy accuracy, membership AUC)")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the model paths (and the check) here")] = None,
) -> None:
    """Fine-tune the base model on the world (target) and without requests 1..t (oracles); cached."""
    from unlearnkit import distributed
    from unlearnkit.benchmark.prepare import PrepareSettings, check_quality, parse_oracles, prepare_world
    from unlearnkit.data.world import load_world
    from unlearnkit.files import write_json
    from unlearnkit.models.stack import load_subject

    console = Console()
    check_json_out(json_out, world)
    choice = parse_oracles(oracles)
    if lora < 0:
        raise UnlearnkitError(f"--lora {lora}: a rank is at least 1 (or 0 for full fine-tuning)")
    if precision not in ("auto", "float32", "bfloat16"):
        raise UnlearnkitError(f"--precision '{precision}': use auto, float32 or bfloat16")
    if finetune_share is not None and not 0 < finetune_share <= 1:
        raise UnlearnkitError(f"--finetune-share {finetune_share}: use a value in (0, 1]")
    load_world(world)  # a missing or malformed world: one line before any model loads
    lora_settings = {"r": lora, "lora_alpha": 2 * lora} if lora else None
    share = {} if finetune_share is None else {"finetune_share": finetune_share}
    try:
        settings = PrepareSettings(oracles=choice, lora=lora_settings, precision=precision, **share)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise UnlearnkitError(f"--oracles '{oracles}': {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    for name, value in (("lr", lr), ("epochs", epochs), ("batch_size", batch_size), ("grad_accum", grad_accum)):
        if value is not None:
            if value <= 0:
                raise UnlearnkitError(f"--{name.replace('_', '-')} {value}: must be positive")
            setattr(settings.train, name, value)
    check_models(model=model)
    base = load_subject(model, fmt=fmt, device=device)
    prepared = prepare_world(model, world, settings, subject=base)
    if not distributed.is_main():  # several processes trained together; rank 0 reports and checks
        return
    table = Table(title=f"prepared {world} from {model}")
    for column in ("model", "removed", "path", "trained now", "seconds"):
        table.add_column(column)
    for m in prepared.models:
        seconds = m.stats.get("seconds")
        table.add_row(m.name, ",".join(m.removed) or "-", str(m.path), "yes" if m.trained_now else "cached", f"{seconds:.0f}" if seconds else "-")
    console.print(table)
    payload: dict[str, object] = {
        "world": str(world),
        "model": model,
        "target": str(prepared.target),
        "oracles": {str(t): str(p) for t, p in prepared.oracles.items()},
        "models": [{"name": m.name, "path": str(m.path), "removed": m.removed, "trained_now": m.trained_now, "stats": m.stats} for m in prepared.models],
    }
    if check:
        with distributed.solo():
            payload["quality"] = check_quality(prepared, load_world(world), base)
        console.print_json(data=payload["quality"])
    if json_out:
        write_json(json_out, payload)
        console.print(f"wrote {json_out}")
