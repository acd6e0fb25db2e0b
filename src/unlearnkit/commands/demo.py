"""`unlearnkit demo`: the whole product on the embedded default model (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from unlearnkit.commands._options import SeedOpt, SetOpt, bounded, check_models, parse_set


def demo_command(
    out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/demo"),
    size: Annotated[Literal["tiny", "small", "medium", "stream"], typer.Option(help="world size: tiny, small, medium or stream")] = "small",
    seed: SeedOpt = 0,
    method: Annotated[str | None, typer.Option(help="method name instead of the default")] = None,
    sets: SetOpt = None,
    requests: Annotated[int | None, typer.Option(callback=bounded(1, 1000), help="apply only the world's first N requests")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="base model")] = "default",
    attacks: Annotated[str, typer.Option(help="attacks after the last step, comma-separated ('' for none)")] = "leak_at_k,quantize",
) -> None:
    """The whole product on the embedded default: world, target, oracles, 3 requests, report."""
    from unlearnkit.demo import DEFAULT_METHOD, run_demo
    from unlearnkit.eval.attacks import parse_names
    from unlearnkit.files import check_output_folder
    from unlearnkit.methods.base import get_method
    from unlearnkit.plan import RUN_MARKER

    chosen = parse_names([a.strip() for a in attacks.split(",") if a.strip()]) if attacks.strip() else []
    settings = parse_set(sets)
    name = method or DEFAULT_METHOD["name"]
    base = DEFAULT_METHOD["settings"] if name == DEFAULT_METHOD["name"] else {}
    get_method(name, {**base, **settings})  # a bad method or setting: one line before the world is written
    check_output_folder(out, (RUN_MARKER,), "--out", beside_ours=True)
    check_models(model=model)
    run_demo(out, size=size, seed=seed, method={"name": name, "settings": {**base, **settings}}, model=model,
             attacks=chosen, requests=requests)
