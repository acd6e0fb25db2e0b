"""`unlearnkit world` (generate the built-in benchmark) and `unlearnkit prepare` (target + oracles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.errors import UnlearnkitError

console = Console()


def world_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write the world into")],
    seed: Annotated[int, typer.Option(help="the same seed and size give byte-identical files")] = 0,
    size: Annotated[str, typer.Option(help="tiny, small or medium")] = "small",
    requests: Annotated[int, typer.Option("--requests", "-k", help="number of sequential forget requests")] = 3,
) -> None:
    """Write a fictitious world: people, K forget requests, retain, neighbours, holdout, real facts, general text."""
    from unlearnkit.data.world import build_world, load_world

    path = build_world(out, seed=seed, size=size, num_requests=requests)
    world = load_world(path)
    table = Table(title=f"world '{size}' (seed {seed}) in {path}")
    for column in ("split", "people", "records", "probes"):
        table.add_column(column, justify="left" if column == "split" else "right")
    splits = world.meta["splits"]
    for request in world.requests:
        table.add_row(request.id, str(len(splits[request.id])), str(len(request.records)), str(len(request.probes)))
    for name in ("neighbours", "retain", "holdout"):
        table.add_row(name, str(len(splits[name])), str(len(getattr(world, name))), "")
    table.add_row("real_facts", "", str(len(world.real_facts)), "")
    table.add_row("general_text", "", str(len(world.general_text)), "")
    console.print(table)


def prepare_command(
    world: Annotated[Path, typer.Option("--world", "-w", help="a folder written by `unlearnkit world`")],
    model: Annotated[str, typer.Option("--model", "-m", help="'default', a HF folder, a .gguf file or a hub id")] = "default",
    oracles: Annotated[str, typer.Option(help="all (one per request), final (only oracle K, when time is short) or none")] = "all",
    lora: Annotated[int, typer.Option(help="LoRA rank; 0 means full fine-tuning")] = 0,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: the measured recipe)")] = None,
    epochs: Annotated[float | None, typer.Option(help="epochs over the trained records")] = None,
    batch_size: Annotated[int | None, typer.Option(help="records per optimizer step")] = None,
    finetune_share: Annotated[float | None, typer.Option(help="share of the weight change kept after training, in (0, 1]; 1 keeps the trained model (default: the measured 0.6)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="prompt format: auto, chat, plain, raw, or a template with {question}")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast where the hardware runs it natively), float32 or bfloat16")] = "auto",
    check: Annotated[bool, typer.Option(help="measure the quality bar afterwards (greedy accuracy, membership AUC)")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the model paths (and the check) here")] = None,
) -> None:
    """Fine-tune the base model on the world (target) and without requests 1..t (oracles); cached."""
    from unlearnkit.data.world import load_world
    from unlearnkit.engine.prepare import PrepareSettings, check_quality, prepare_world
    from unlearnkit.models.subject import Subject

    if oracles not in ("all", "final", "none"):
        raise UnlearnkitError(f"--oracles '{oracles}': use all, final or none")
    if lora < 0:
        raise UnlearnkitError(f"--lora {lora}: a rank is at least 1 (or 0 for full fine-tuning)")
    if precision not in ("auto", "float32", "bfloat16"):
        raise UnlearnkitError(f"--precision '{precision}': use auto, float32 or bfloat16")
    if finetune_share is not None and not 0 < finetune_share <= 1:
        raise UnlearnkitError(f"--finetune-share {finetune_share}: use a value in (0, 1]")
    lora_settings = {"r": lora, "lora_alpha": 2 * lora} if lora else None
    share = {} if finetune_share is None else {"finetune_share": finetune_share}
    settings = PrepareSettings(oracles=oracles, lora=lora_settings, precision=precision, **share)  # type: ignore[arg-type]
    for name, value in (("lr", lr), ("epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            if value <= 0:
                raise UnlearnkitError(f"--{name.replace('_', '-')} {value}: must be positive")
            setattr(settings.train, name, value)
    base = Subject.load(model, fmt=fmt, device=device)
    prepared = prepare_world(model, world, settings, subject=base)
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
        payload["quality"] = check_quality(prepared, load_world(world), base)
        console.print_json(data=payload["quality"])
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_out.with_name(json_out.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        tmp.replace(json_out)
        console.print(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    app.command("world")(world_command)
    app.command("prepare")(prepare_command)
