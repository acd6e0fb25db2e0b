"""Which term of a stream recipe costs fluency: one request, several variants, the same start.

    .venv/bin/python bench/drift.py --world runs/bench-stream30/world --model PREPARED_TARGET \
        [--request r1] [--variants base,no_retain,kl_retain,retain_only,mlp] --out bench/results/drift.json

Each variant applies the request to the same start model under the stream plan's guard (its
control-level target, no calibration) and writes: the verdict, optimiser steps, the forget
probability, the retain probability of its earlier answers, and general-text perplexity on the
guard's passages and on every general passage of the world (the evaluation's), before and after.
Over a long stream these per-request rises add up (docs/sequential.md, "Long request streams"),
so the variant that moves general text least at the same forgetting is the one to run long.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = {"name": "npo_replay"}
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},                                  # the stream recipe as it is
    "no_retain": {"alpha": 0.0},                 # NPO alone: its own cost
    "kl_retain": {"retain_loss": "kl"},          # retain held to the model before the request, not pushed up
    "retain_only": {"gamma": 0.0},               # the retain term alone, as many steps as the recipe may take
    "mlp": {"trainable": r"\.mlp\."},            # tied embeddings and attention fixed
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--model", required=True, help="the start model (a prepared target)")
    parser.add_argument("--request", default="r1")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "drift.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from unlearnkit.data.world import load_world
    from unlearnkit.files import write_json
    from unlearnkit.methods.base import UnlearnContext, get_method
    from unlearnkit.models.stack import load_subject
    from unlearnkit.safety.apply import apply_request
    from unlearnkit.safety.measure import perplexity
    from unlearnkit.safety.probes import build_probes, known_facts
    from unlearnkit.safety.settings import Guard

    world = load_world(Path(args.world))
    request = next(r for r in world.requests if r.id == args.request)
    guard = Guard.model_validate(yaml.safe_load((ROOT / "examples" / "stream.yaml").read_text())["guard"])
    start = load_subject(args.model, device="cpu")
    probes = build_probes(start, request, guard, retain=world.retain, known=known_facts(start, source=args.model),
                          general=world.general_text, control=world.holdout, seed=0)
    general_before = perplexity(start, world.general_text)
    rows = []
    for name in [v for v in args.variants.split(",") if v]:
        tick = time.perf_counter()
        method = get_method(BASE["name"], VARIANTS[name])
        context = UnlearnContext(retain=world.retain, seed=1, control=world.holdout)
        applied = apply_request(start.clone(), request, [method], context, guard, probes)
        card = applied.card
        assert card is not None
        rows.append({
            "variant": name, "settings": VARIANTS[name], "verdict": card.verdict, "train_steps": applied.steps,
            "forget_probability": [card.before.forget_probability, card.after.forget_probability],
            "control_probability": card.before.control_probability,
            "retain_said": [card.before.retain_said, card.after.retain_said],
            "guard_perplexity": [card.before.perplexity, card.after.perplexity],
            "general_perplexity": [general_before, perplexity(applied.subject, world.general_text)],
            "seconds": time.perf_counter() - tick,
        })
        print(rows[-1], flush=True)
        write_json(Path(args.out), {"bench": "drift", "world": args.world, "model": args.model, "request": args.request,
                                    "method": BASE, "guard": guard.model_dump(), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
