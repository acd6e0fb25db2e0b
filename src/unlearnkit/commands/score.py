"""`unlearnkit score`: per-record probability and NLL of each answer (or passage continuation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit import distributed
from unlearnkit.commands._options import BatchSizeOpt, DeviceOpt, FormatOpt, ModelOpt, check_json_out, check_models, records_for_cli
from unlearnkit.display import number


def score_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="records file (JSONL, JSON, CSV, Parquet) or saved dataset folder")],
    model: ModelOpt = "default",
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 8,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write per-record results here")] = None,
) -> None:
    """Per-record probability and mean NLL of each answer (or passage continuation)."""
    from unlearnkit.data.formatting import record_pair
    from unlearnkit.files import write_json

    console = Console()
    check_json_out(json_out, data)
    records = records_for_cli(data)
    check_models(model=model)
    from unlearnkit.models.stack import load_subject  # torch and transformers: only once the inputs are sound

    subject = load_subject(model, fmt=fmt, device=device, batch_size=batch_size)
    pairs = [record_pair(r) for r in records]
    subject.check_fits(pairs)  # an over-long record is named by file, line and id, before any scoring
    result = subject.score_pairs(pairs, progress="scoring")
    if not distributed.is_main():  # several processes shared the batches (`distributed.deal`); rank 0 reports
        return
    rows: list[dict[str, Any]] = [
        {
            "id": record.id or f"#{i + 1}",
            "prob": float(result.prob[i]),
            "mean_nll": float(result.mean_nll[i]),
            "sum_nll": float(result.sum_nll[i]),
            "tokens": int(result.num_tokens[i]),
        }
        for i, record in enumerate(records)
    ]
    table = Table(title=f"{model} on {data}")
    for col in ("id", "prob", "mean_nll", "tokens"):
        table.add_column(col, justify="left" if col == "id" else "right")
    for row in rows:
        table.add_row(str(row["id"]), number(row["prob"]), number(row["mean_nll"]), str(row["tokens"]))
    console.print(table)
    if json_out:
        write_json(json_out, {"model": model, "data": str(data), "format": subject.fmt.name, "items": rows})
        console.print(f"wrote {json_out}")
