"""The `unlearnkit` command line (typer + rich).

Core commands live here; each area adds its own in `unlearnkit/commands/<area>.py` through a
`register(app)` function, found automatically. Every `UnlearnkitError` ends the command with one
`error: ...` line and exit code 1, never a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.errors import UnlearnkitError

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

app = typer.Typer(
    name="unlearnkit",
    help="Make a language model forget content as removal requests arrive, and measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="'default', a HF folder, a .gguf file or a hub id")]
FormatOpt = Annotated[str, typer.Option("--format", help="prompt format: auto, chat, plain, raw, or a template with {question}")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto")]


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """What the embedded default model is, where it is cached, and whether it is ready."""
    from unlearnkit.models.loading import cache_dir, default_status

    status = default_status()
    status["cache_dir"] = str(cache_dir())
    if as_json:
        console.print_json(data=status)
        return
    table = Table(title="Embedded default model", show_header=False)
    for key, value in status.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print("Other sources: a local HF folder, a .gguf file, or a hub id (where a hub is reachable).")


def _records_for_cli(path: Path) -> list[Any]:
    from unlearnkit.data.loaders import load_records, load_requests, read_rows

    rows = read_rows(path)
    if any("records" in row for _, row in rows):
        return [r for req in load_requests(path) for r in req.records]
    return load_records(path)


def _by_template(records: list[Any]) -> list[tuple[bool, list[int]]]:
    """Record positions split into (templated QA/MC, raw passages): passages are scored and
    continued as plain text, without the chat template or an EOS."""
    groups = [(True, [i for i, r in enumerate(records) if r.kind != "passage"]), (False, [i for i, r in enumerate(records) if r.kind == "passage"])]
    return [(templated, idx) for templated, idx in groups if idx]


@app.command()
def score(
    data: Annotated[Path, typer.Option("--data", "-d", help="records file (JSONL, JSON, CSV, Parquet) or saved dataset folder")],
    model: ModelOpt = "default",
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="items per forward pass")] = 8,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write per-record results here")] = None,
) -> None:
    """Per-record probability and mean NLL of each answer (or passage continuation)."""
    from unlearnkit.models.subject import Subject

    records = _records_for_cli(data)
    subject = Subject.load(model, fmt=fmt, device=device, batch_size=batch_size)
    rows: list[dict[str, Any]] = [{} for _ in records]
    for templated, idx in _by_template(records):
        pairs = [records[i].as_pair() for i in idx]
        result = subject.score([p for p, _ in pairs], [t for _, t in pairs], template=templated, add_eos=templated, progress="scoring")
        for j, i in enumerate(idx):
            rows[i] = {
                "id": records[i].id or f"#{i + 1}",
                "prob": float(result.prob[j]),
                "mean_nll": float(result.mean_nll[j]),
                "sum_nll": float(result.sum_nll[j]),
                "tokens": int(result.num_tokens[j]),
            }
    table = Table(title=f"{model} on {data}")
    for col in ("id", "prob", "mean_nll", "tokens"):
        table.add_column(col, justify="left" if col == "id" else "right")
    for row in rows:
        table.add_row(str(row["id"]), f"{row['prob']:.4f}", f"{row['mean_nll']:.4f}", str(row["tokens"]))
    console.print(table)
    if json_out:
        write_json(json_out, {"model": model, "data": str(data), "format": subject.fmt.name, "items": rows})
        console.print(f"wrote {json_out}")


@app.command()
def generate(
    data: Annotated[Path, typer.Option("--data", "-d", help="records file: questions (QA) or passage prompts")],
    model: ModelOpt = "default",
    fmt: FormatOpt = "auto",
    device: DeviceOpt = "auto",
    n: Annotated[int, typer.Option("--n", help="samples per prompt")] = 1,
    temperature: Annotated[float, typer.Option(help="0 means greedy")] = 0.0,
    top_p: Annotated[float, typer.Option(help="nucleus sampling mass")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 48,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the generations here")] = None,
) -> None:
    """Generate answers for the records' questions (greedy, or n samples with temperature)."""
    from unlearnkit.models.subject import GenerationSettings, Subject

    records = _records_for_cli(data)
    subject = Subject.load(model, fmt=fmt, device=device)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n, stop=stop or [], seed=seed)
    outputs: list[dict[str, Any]] = []
    for templated, idx in _by_template(records):
        prompts = [records[i].as_pair()[0] for i in idx]
        texts = subject.generate(prompts, settings, template=templated, progress="generating")
        outputs += [{"id": records[i].id or f"#{i + 1}", "prompt": prompts[j], "expected": records[i].as_pair()[1], "outputs": texts[j]} for j, i in enumerate(idx)]
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


def _register_area_commands() -> None:
    import unlearnkit.commands as commands

    for module in pkgutil.iter_modules(commands.__path__):
        if not module.name.startswith("_"):
            mod = importlib.import_module(f"unlearnkit.commands.{module.name}")
            if hasattr(mod, "register"):
                mod.register(app)


_register_area_commands()


def main() -> None:
    """Entry point: run the app, turning our errors into one line."""
    try:
        app(standalone_mode=False)
    except UnlearnkitError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        Console(stderr=True).print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors of typer's bundled click: print its own short message, keep its exit code.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Exit" and hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        raise
