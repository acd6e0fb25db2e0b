"""`unlearnkit estimate`: memory per device of a run, by part and shipped accelerate config."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.commands._options import bounded
from unlearnkit.errors import UnlearnkitError

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def estimate_command(
    model: Annotated[str, typer.Option("--model", help="default, a model folder, or a known hub id (docs/scale.md)")] = "default",
    method: Annotated[str, typer.Option("--method", help="method name (see: unlearnkit methods)")] = "npo",
    lora: Annotated[bool, typer.Option("--lora", help="train a LoRA adapter (rank --lora-r)")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", callback=bounded(1, 4096), help="LoRA rank")] = 8,
    processes: Annotated[int, typer.Option("--processes", callback=bounded(1, 100_000), help="processes (GPUs)")] = 1,
    dtype: Annotated[str, typer.Option(help="weight dtype: bfloat16, float16 or float32")] = "bfloat16",
    seq_len: Annotated[int, typer.Option("--seq-len", callback=bounded(1, 10_000_000), help="tokens per row")] = 512,
    batch_size: Annotated[int | None, typer.Option("--batch-size", callback=bounded(1, 1_000_000), help="rows per micro-batch (default: the method's)")] = None,
    gpu_gb: Annotated[float, typer.Option("--gpu-gb", help="memory of one GPU, GB")] = 80.0,
) -> None:
    """Memory per device for weights, gradients, optimizer, frozen reference and activations."""
    from unlearnkit.methods.base import get_method
    from unlearnkit.methods.footprint import CONFIGS, GB, HEADROOM, fits, footprint
    from unlearnkit.models.shape import model_shape

    if dtype not in DTYPE_BYTES:
        raise UnlearnkitError(f"--dtype '{dtype}': use bfloat16, float16 or float32")
    if gpu_gb <= 0:
        raise UnlearnkitError(f"--gpu-gb {gpu_gb}: must be positive")
    algorithm = get_method(method)
    shape = model_shape(model)
    rank = lora_r if lora else None
    rows = {name: footprint(shape, algorithm, config=name, processes=processes, lora_rank=rank, weight_bytes=DTYPE_BYTES[dtype],
                            seq_len=seq_len, batch=batch_size) for name in CONFIGS}
    table = Table(title=f"{model}: {shape.params / 1e9:.2f} B parameters; {method}{' + LoRA r=' + str(lora_r) if lora else ''}; "
                        f"{processes} process(es); GB per device")
    table.add_column("config (configs/accelerate/)")
    parts = list(next(iter(rows.values())))
    for part in parts:
        table.add_column(part, justify="right")
    table.add_column(f"fits {gpu_gb:g} GB")
    for name, values in rows.items():
        table.add_row(f"{name}.yaml", *(f"{values[p] / GB:.2f}" for p in parts), "yes" if fits(values, gpu_gb) else "no")
    console = Console()
    console.print(table)
    fitting = [name for name, values in rows.items() if fits(values, gpu_gb)]
    console.print(f"fits in {HEADROOM:.0%} of {gpu_gb:g} GB: {', '.join(f'{n}.yaml' for n in fitting) if fitting else 'none (try --lora, more processes, or a smaller --batch-size)'}")
