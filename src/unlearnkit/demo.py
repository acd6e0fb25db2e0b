"""The main job, end to end on the embedded default: `unlearnkit demo` (what `make demo` runs).

The demo is a plan for the one runner (`engine.runner.run_plan`), nothing besides it:

1. build the small fictitious world (deterministic from the seed);
2. prepare the target (the default model fine-tuned on the world) and the retrain oracles
   (cached by content hash: a warm run loads them);
3. apply the three removal requests one after another with the default method, evaluating
   every request so far with the `quick` suite after each step (a killed demo resumes where it
   stopped);
4. the final stages: the suite on the target and on each oracle (reference lines), leak@k
   sampling and 4-bit quantization on the last step's model and on the oracle, `report.html`;
5. print a summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from unlearnkit.display import number
from unlearnkit.files import write_json
from unlearnkit.plan import Plan, parse_plan

# Chosen by bench/compare_methods.sh on the small world's first request (docs/methods.md,
# "The demo's default"): NPO + retain NLL at lr 1e-4 for 3 epochs reached the oracle by the
# KS forget-quality test (p 0.28) and by membership AUC (0.56 vs the oracle's 0.55) while model
# utility stayed within 0.01 of the target; it recovered least under leak@k and 4-bit
# quantization, and it was the cheapest of the methods that forgot (82 s per request).
DEFAULT_METHOD: dict[str, Any] = {
    "name": "npo_gd",
    # Sequential runs need a gentler setting than one request does (bench/README.md, "The
    # demo's method: three requests in a row"): at a constant 1e-4 the second request broke the model (retain
    # probability 0.98 -> 0.03). Half the rate with twice the retain weight held. On the merged
    # target (prepare's finetune_share 0.6, whose facts sit less firmly) 3 epochs over-forgot
    # (r3 probability 0.03 vs the oracle's 0.26) and cost retain 0.92 -> 0.77 (oracle 0.88);
    # 2 epochs kept retain and utility at the oracle's and took a third less time.
    # `answers: given`: the recipe as measured (the world's target answers in the world's own
    # words, so the model's own answers would be the given ones, at the cost of a generation
    # pass per request).
    # Under the damage budget (docs/guarded.md) lr 5e-5 was rolled back after two optimiser
    # steps on every request: at that rate even training on the retain set alone flips 2 of the
    # 16 real facts the budget probes. A gentler rate for twice the epochs is what calibration
    # (`unlearnkit unlearn --auto`) chose on r1, and it stays within the budget on all three
    # requests (bench/demo_recipe.py, docs/methods.md "Under the damage budget").
    "settings": {"lr": 1.75e-5, "alpha": 2.0, "epochs": 4, "warmup_ratio": 0.2, "answers": "given"},
}
# The demo calibrates as `unlearnkit unlearn` does by default (docs/guarded.md, "Calibration"):
# on the prepared target of 2026-12-02 the setting above was rolled back to the start on r1 at
# its first check (2 of 15 retain questions lost after 5 optimiser steps), so r1 was not
# unlearned at all; calibrated, the first trial (twice the steps, so a warm-up twice as long)
# forgot r1 within the budget (docs/methods.md, "Under the damage budget").
DEFAULT_GUARD: dict[str, Any] = {"calibrate": {"enabled": True}}
DEFAULT_ATTACKS = ["leak_at_k", "quantize"]
# World answers are a few tokens; 6 questions per request keep both attacks under a minute per request.
ATTACK_SETTINGS: dict[str, dict[str, Any]] = {
    "leak_at_k": {"n": 8, "ks": [1, 4, 8], "max_new_tokens": 24, "limit": 6},
    "quantize": {"bits": [4], "max_new_tokens": 24, "limit": 6},
}


def demo_plan(out: Path, world: Path, method: dict[str, Any] | None = None, model: str = "default",
              requests: int | None = None, attacks: list[str] | None = None, guard: dict[str, Any] | None = None) -> Plan:
    """The demo's plan; `guard` replaces its guard settings (`DEFAULT_GUARD`: the default budget
    and target, calibrated) with a recipe's own, as bench/stream.py runs the stream plan's on the demo."""
    chosen = DEFAULT_ATTACKS if attacks is None else attacks
    return parse_plan(
        {
            "guard": DEFAULT_GUARD if guard is None else guard,
            "model": model,
            "method": method or DEFAULT_METHOD,
            "requests": [{"world": str(world), "first": requests}],
            "evaluation": {"suite": "quick"},
            "prepare": True,
            "output": str(out),
            "seed": 0,
            "checkpoints": {"keep": "last:1"},
            "relapse": {"metric": "probability", "threshold": 0.5},
            "final": {
                "references": True,
                "attacks": chosen,
                "attack_settings": {k: v for k, v in ATTACK_SETTINGS.items() if k in chosen},
            },
        },
        where="demo plan",
        base=Path.cwd(),
    )


def run_demo(out: str | Path = "runs/demo", size: str = "small", seed: int = 0, method: dict[str, Any] | None = None,
             model: str = "default", attacks: list[str] | None = None, requests: int | None = None,
             guard: dict[str, Any] | None = None) -> Path:
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.engine.runner import run_plan

    out = Path(out)
    started = time.perf_counter()
    world = out / "world"
    if not (world / "world.json").exists():
        build_world(world, seed=seed, size=size)
    world_s = time.perf_counter() - started
    run_plan(demo_plan(out, world, method, model, requests, attacks, guard))
    write_json(out / "demo_timings.json", {"world_s": world_s, "total_s": time.perf_counter() - started})
    print_summary(out)
    return out / "report.html"


def print_summary(out: Path, console: Console | None = None) -> None:
    from unlearnkit.report.data import load_run

    console = console or Console()
    view = load_run(out)
    last = view.last_step()
    oracle = view.oracles.get(last, {})
    table = Table(title=f"After {last} requests ({view.label})")
    for col in ("scope", "metric", "target", "unlearned", "oracle"):
        table.add_column(col, justify="left" if col in ("scope", "metric") else "right")
    show = [m for m in ("probability", "truth_ratio", "forget_quality", "mia_min_k") if m in view.forget_metrics()]
    for rid in view.request_ids:
        for metric in show:
            table.add_row(rid, metric, number(view.target.get(rid, {}).get(metric)), number(view.metric(last, rid, metric)), number(oracle.get(rid, {}).get(metric)))
    for scope, metric in view.set_metrics():
        table.add_row(scope, metric, number(view.target.get(scope, {}).get(metric)), number(view.metric(last, scope, metric)), number(oracle.get(scope, {}).get(metric)))
    console.print(table)
    for result in view.attacks:
        fractions = [r["recovered"] for r in result["rows"] if r.get("recovered") is not None]
        oracle_fr = [r["oracle_recovered"] for r in result["rows"] if r.get("oracle_recovered") is not None]
        if fractions:
            console.print(f"attack {result['attack']} on {result['request']}: recovered {sum(fractions) / len(fractions):.2f}"
                          + (f" (oracle {sum(oracle_fr) / len(oracle_fr):.2f})" if oracle_fr else ""))
    console.print(f"report: {out / 'report.html'}")
