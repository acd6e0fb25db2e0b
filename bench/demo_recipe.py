"""The demo's recipe under the damage budget: the first request of the small world, guarded, at
several settings from the same target, then (optionally) the whole demo with one of them.

    .venv/bin/python bench/demo_recipe.py [--variants base,retain_only,gentle,auto,base_rehearse,gentle_rehearse] [--demo gentle]
        [--flips base,retain_only] [--threads 2] [--out bench/results/demo_recipe.json]

Each variant applies request r1 of the demo's world (`unlearnkit demo`'s world, seed 0) to the
demo's prepared target exactly as `unlearnkit unlearn` does (`safety.apply.apply_request`:
probes, budget, target, the verdict card), with the world's retain set and its holdout people as
the control set; `auto` calibrates as `unlearnkit unlearn --auto` does. `--demo NAME` then runs
`unlearnkit demo` with that variant's method into runs/bench-demo-recipe-NAME and reads its last
step: forget probability, truth ratio and forget quality per request, retain probability, model
utility, and every step's verdict. Why: the shipped setting (lr 5e-5, 2 epochs) was chosen
before the budget existed; guarded, it was rolled back after two optimiser steps on every
request (README, "What `make demo` shows"). `--flips NAMES` runs those variants unguarded for
the optimiser steps the budget stopped (4) and records which collateral facts the model then
got wrong, and what it said instead (`flips` in the JSON; merged into an existing file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
GIVEN = {"alpha": 2.0, "warmup_ratio": 0.2, "answers": "given"}
# name: (method, settings, calibrate)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "base": ("npo_gd", {"lr": 5e-5, "epochs": 2, **GIVEN}, False),  # the demo's setting before this bench
    "retain_only": ("gd", {"lr": 5e-5, "epochs": 2, "gamma": 0.0, **GIVEN}, False),  # no forget term: what training alone costs
    "gentle": ("npo_gd", {"lr": 1.75e-5, "epochs": 4, **GIVEN}, False),  # the setting calibration found
    "auto": ("npo_gd", {"lr": 5e-5, "epochs": 2, **GIVEN}, True),  # calibrated from the old setting
    "kl": ("npo_kl", {"lr": 5e-5, "epochs": 2, **GIVEN}, False),  # KL to the start on retain instead of NLL
    "lora": ("npo_gd", {"lr": 5e-4, "epochs": 2, **GIVEN}, False),  # with --lora r 8
    # The retain term also rehearses real facts (prepare's rehearsal set: capitals and continents
    # of countries the world does not evaluate, disjoint from the collateral probes and the
    # utility sets): the old setting's damage was to real facts the retain set never covered.
    "base_rehearse": ("npo_gd", {"lr": 5e-5, "epochs": 2, **GIVEN}, False),
    "gentle_rehearse": ("npo_gd", {"lr": 1.75e-5, "epochs": 4, **GIVEN}, False),
}
REHEARSE = {"base_rehearse", "gentle_rehearse"}


def run_variant(name: str, subject: Any, request: Any, retain: list[Any], control: list[Any], rehearsal: list[Any]) -> dict[str, Any]:
    from unlearnkit.methods.base import UnlearnContext, get_method
    from unlearnkit.models.weights import scale_change, snapshot
    from unlearnkit.safety.apply import apply_request
    from unlearnkit.safety.probes import build_probes
    from unlearnkit.safety.settings import Calibration, Guard

    method_name, settings, calibrate = VARIANTS[name]
    guard = Guard(calibrate=Calibration(enabled=calibrate))
    start = snapshot(subject.model)
    probes = build_probes(subject, request, guard, retain=retain, control=control)
    lora = {"r": 8, "lora_alpha": 16} if name == "lora" else None
    tick = time.perf_counter()
    trained_retain = retain + rehearsal if name in REHEARSE else retain  # the probes measure the world's retain set either way
    applied = apply_request(subject, request, [get_method(method_name, settings)], UnlearnContext(retain=trained_retain, seed=0, lora=lora), guard, probes)
    seconds = time.perf_counter() - tick
    scale_change(subject.model, start, 0.0)  # the next variant starts from the same target
    card = applied.card.to_json() if applied.card else {}
    return {"variant": name, "method": method_name, "settings": settings, "calibrate": calibrate, "lora": lora,
            "seconds": seconds, "train_steps": applied.steps, **card}


def flips(name: str, subject: Any, request: Any, retain: list[Any], steps: int = 4) -> dict[str, Any]:
    """The collateral facts a variant's first `steps` optimiser steps, unguarded, make the model
    get wrong: question, answer, the model's greedy answer before and after."""
    from unlearnkit.data.knowledge import answer_given
    from unlearnkit.methods.base import UnlearnContext, get_method
    from unlearnkit.models.weights import scale_change, snapshot
    from unlearnkit.safety.measure import answers_to
    from unlearnkit.safety.probes import build_probes
    from unlearnkit.safety.settings import Guard

    method_name, settings, _ = VARIANTS[name]
    guard = Guard()
    facts = build_probes(subject, request, guard, retain=retain).collateral
    before = answers_to(subject, facts, guard.max_new_tokens)
    start = snapshot(subject.model)
    torch.manual_seed(0)
    changed = get_method(method_name, {**settings, "max_steps": steps}).unlearn(subject, request, UnlearnContext(retain=retain, seed=0))
    after = answers_to(changed, facts, guard.max_new_tokens)
    scale_change(subject.model, start, 0.0)
    lost = [{"question": f.question, "answer": f.answer, "before": b, "after": a}
            for f, b, a in zip(facts, before, after) if answer_given(f.answer or "", b) and not answer_given(f.answer or "", a)]
    return {"variant": name, "steps": steps, "probed": len(facts), "lost": lost}


def demo_figures(folder: Path) -> dict[str, Any]:
    results = json.loads((folder / "results.json").read_text())
    last = results["steps"][-1]["metrics"]
    ids = [r for r in last if r.startswith("r")]
    return {
        "forget": {r: {k: last[r].get(k) for k in ("probability", "truth_ratio", "forget_quality")} for r in ids},
        "retain_probability": last["retain"]["probability"], "quick_utility": last["utility"]["quick_utility"],
        "perplexity": last["general_text"]["perplexity"],
        "steps": [{"step": s["step"], "unlearn_s": s["unlearn_s"], "eval_s": s["eval_s"], "verdict": (s.get("verdict") or {}).get("verdict"),
                   "violations": (s.get("verdict") or {}).get("violations"), "unseen": (s.get("verdict") or {}).get("unseen")}
                  for s in results["steps"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="base,retain_only,gentle,auto", help=f"comma-separated, of {','.join(VARIANTS)}")
    parser.add_argument("--demo", default=None, help="also run the whole demo with this variant's method")
    parser.add_argument("--flips", default="", help="comma-separated variants to run unguarded for 4 steps: which collateral facts go")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo_recipe.json")
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    flip_names = [n for n in args.flips.split(",") if n]
    unknown = [n for n in names + flip_names + ([args.demo] if args.demo else []) if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants/--demo: unknown {unknown}; known: {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from unlearnkit.benchmark.prepare import PrepareSettings, prepare_world, rehearsal_for
    from unlearnkit.benchmark.world import build_world
    from unlearnkit.data.world import load_world
    from unlearnkit.files import write_json
    from unlearnkit.models.stack import load_subject

    world_dir = Path("runs/bench-demo-recipe/world")
    if not (world_dir / "world.json").exists():
        build_world(world_dir, seed=0, size="small")
    prepared = prepare_world("default", world_dir, PrepareSettings())  # the demo's target, from the cache after make demo
    world = load_world(world_dir)
    request = world.requests[0]
    subject = load_subject(str(prepared.target))
    machine = {"cpu_count": os.cpu_count(), "threads": args.threads, "platform": platform.platform(), "load_avg_at_start": list(os.getloadavg())}
    # `--flips` alone adds to an existing file; anything else starts it afresh.
    merge = args.out.exists() and not names and not args.demo
    payload: dict[str, Any] = json.loads(args.out.read_text()) if merge else {
        "bench": "demo_recipe", "model": "the demo's prepared target (default model, small world, seed 0)", "request": request.id,
        "machine": machine, "variants": [],
    }
    for name in names:
        print(f"variant {name}")
        payload["variants"].append(run_variant(name, subject, request, world.retain, world.holdout, rehearsal_for(world)))
        write_json(args.out, payload)
    if flip_names:
        payload["flips"] = [{**flips(name, subject, request, world.retain), "machine": machine} for name in flip_names]
        write_json(args.out, payload)
    if args.demo:
        from unlearnkit.demo import run_demo

        method_name, settings, _ = VARIANTS[args.demo]
        folder = Path(f"runs/bench-demo-recipe-{args.demo}")
        tick = time.perf_counter()
        run_demo(folder, method={"name": method_name, "settings": settings})
        payload["demo"] = {"variant": args.demo, "seconds": time.perf_counter() - tick, **demo_figures(folder)}
    if not merge:
        payload["load_avg_at_end"] = list(os.getloadavg())
    write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
