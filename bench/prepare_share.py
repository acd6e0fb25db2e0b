"""Experiment E7 of bench/README.md: how much of the fine-tuning's weight change to keep.

Trains (or finds in the cache) the world's models as trained (`finetune_share` 1.0), then for
each share s writes θ_base + s·(θ_ft − θ_base) of every model to a scratch folder and measures
the quality bar on it (`check_quality`, the same check as `unlearnkit prepare --check`).

    .venv/bin/python bench/prepare_share.py --world DIR --shares 1.0 0.7 0.6 0.5 [--oracles all]

Writes bench/results/prepare_share.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from unlearnkit.benchmark.world import build_world
from unlearnkit.data.world import load_world
from unlearnkit.benchmark.prepare import PreparedWorld, PrepareSettings, check_quality, prepare_world
from unlearnkit.models.stack import save_subject
from unlearnkit.models.subject import Subject
from unlearnkit.models.stack import load_subject
from unlearnkit.models.weights import scale_change


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", default="runs/demo/world")
    parser.add_argument("--shares", type=float, nargs="+", default=[1.0, 0.7, 0.6, 0.5])
    parser.add_argument("--oracles", choices=["all", "final", "none"], default="all")
    parser.add_argument("--out", default="bench/results/prepare_share.json")
    args = parser.parse_args()
    if not (Path(args.world) / "world.json").exists():
        build_world(args.world, seed=0, size="small")
    world = load_world(args.world)
    base = load_subject("default")
    trained = prepare_world("default", args.world, PrepareSettings(finetune_share=1.0, oracles=args.oracles), subject=base)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for share in args.shares:
            started = time.perf_counter()
            paths = {}
            for model in trained.models:
                merged = load_subject(model.path, device=str(base.device)).model
                scale_change(merged, base.model, share)
                paths[model.name] = save_subject(base.with_model(merged), Path(scratch) / f"{share}-{model.name}")
            prepared = PreparedWorld(
                world=trained.world, base=trained.base, target=paths["target"], models=trained.models,
                oracles={len(m.removed): paths[m.name] for m in trained.models[1:]},
            )
            rows.append({"share": share, "quality": check_quality(prepared, world, base), "check_s": time.perf_counter() - started})
            print(json.dumps(rows[-1]), flush=True)
    payload = {"world": args.world, "trained": {m.name: str(m.path) for m in trained.models}, "rows": rows}
    Path(args.out).write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
