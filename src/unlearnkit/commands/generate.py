"""`unlearnkit generate`: answers to the records' questions, greedy or sampled."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit import distributed
from unlearnkit.commands._options import DeviceOpt, FormatOpt, ModelOpt, SeedOpt, bounded, check_json_out, check_models, records_for_cli


def generate_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="records file: questions (QA) or passage prompts")],
    model: ModelOpt = "default",
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
    n: Annotated[int, typer.Option("--n", callback=bounded(1, 1024), help="samples per prompt")] = 1,
    temperature: Annotated[float, typer.Option(callback=bounded(0, 100), help="0 means greedy")] = 0.0,
    top_p: Annotated[float, typer.Option(callback=bounded(0, 1, low_open=True), help="nucleus sampling mass")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(callback=bounded(1, 1_000_000), help="tokens to generate")] = 48,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    seed: SeedOpt = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the generations here")] = None,
) -> None:
    """Generate answers for the records' questions (greedy, or n samples with temperature)."""
    from unlearnkit.data.formatting import record_pair
    from unlearnkit.files import write_json

    console = Console()
    check_json_out(json_out, data)
    records = records_for_cli(data)
    check_models(model=model)
    from unlearnkit.models.stack import load_subject  # torch and transformers: only once the inputs are sound
    from unlearnkit.models.subject import GenerationSettings

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n, stop=stop or [], seed=seed)
    subject = load_subject(model, fmt=fmt, device=device)
    pairs = [record_pair(r) for r in records]
    subject.check_fits(pairs, new_tokens=max_new_tokens)  # named by file, line and id, before generating
    outputs: list[dict[str, Any]] = [{} for _ in records]
    for templated in (True, False):  # questions through the prompt format, passage prompts raw
        idx = [i for i, pair in enumerate(pairs) if pair.template == templated]
        if not idx:
            continue
        texts = subject.generate([pairs[i].prompt for i in idx], settings, template=templated, progress="generating")
        for j, i in enumerate(idx):
            outputs[i] = {"id": records[i].id or f"#{i + 1}", "prompt": pairs[i].prompt, "expected": pairs[i].target, "outputs": texts[j]}
    if not distributed.is_main():  # several processes shared the batches (`distributed.deal`); rank 0 reports
        return
    table = Table(title=f"{model}: {'greedy' if settings.greedy else f'{n} samples at T={temperature}'}")
    for col in ("id", "prompt", "expected", "output"):
        table.add_column(col, overflow="fold")
    for row in outputs:
        for k, text in enumerate(row["outputs"]):
            table.add_row(str(row["id"]) if k == 0 else "", row["prompt"] if k == 0 else "", row["expected"] if k == 0 else "", text)
    console.print(table)
    if json_out:
        write_json(json_out, {"model": model, "settings": settings.model_dump(), "items": outputs})
        console.print(f"wrote {json_out}")
