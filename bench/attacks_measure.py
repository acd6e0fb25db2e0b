"""Issue 7's measurement: every attack's recovered fraction next to the oracle's, on the default
model, after one NPO request and after one SSU request (each from the same target).

    .venv/bin/python bench/attacks_measure.py [--size tiny] [--limit 6] [--out bench/results/attacks_measure.json]

Steps: build a world with one request, prepare (or load from the cache) the target and the
oracle, unlearn the request with NPO and with SSU (their default settings), then run all
attacks on both unlearned models with the target and the oracle. Settings are scaled down for
a shared 2-core CPU (see SETTINGS); the JSON keeps them, the timings and every row.
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

from unlearnkit.data.world import build_world, load_world
from unlearnkit.engine.prepare import PrepareSettings, default_train_config, prepare_world
from unlearnkit.eval.attacks import run_attacks
from unlearnkit.eval.data import EvalData
from unlearnkit.methods.base import UnlearnContext, get_method
from unlearnkit.models.subject import Subject

ATTACKS = ["leak_at_k", "quantize", "relearn", "paraphrase", "two_hop", "mixed", "in_context", "multi_turn"]


def settings(limit: int) -> dict[str, dict[str, Any]]:
    common = {"limit": limit}
    return {
        "leak_at_k": {**common, "n": 16, "ks": [1, 4, 16], "max_new_tokens": 32},
        "quantize": {**common, "bits": [8, 4], "max_new_tokens": 32},
        "relearn": {**common, "steps": 10, "lr": 5e-5, "max_new_tokens": 32},
        **{name: {**common, "max_new_tokens": 32} for name in ("paraphrase", "two_hop", "in_context", "multi_turn")},
        "mixed": {**common, "max_new_tokens": 48},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny", help="world size (tiny: one person per request)")
    parser.add_argument("--limit", type=int, default=6, help="QA records per request and attack")
    parser.add_argument("--epochs", type=float, default=8, help="target/oracle fine-tuning epochs")
    parser.add_argument("--methods", default="npo,ssu")
    parser.add_argument("--out", default="bench/results/attacks_measure.json")
    parser.add_argument("--world", default="bench/results/attacks_world")
    args = parser.parse_args()
    torch.manual_seed(0)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    world_dir = Path(args.world)
    if not (world_dir / "world.json").exists():
        build_world(world_dir, seed=0, size=args.size, num_requests=1)
    world = load_world(world_dir)
    prepare = PrepareSettings(train=default_train_config().model_copy(update={"epochs": args.epochs}), oracles="final")
    prepared = prepare_world("default", world_dir, prepare)
    timings["prepare_s"] = time.perf_counter() - tick
    target = Subject.load(str(prepared.target), device="cpu")
    target.name = "target"
    oracle = Subject.load(str(prepared.oracles[1]), device="cpu")
    oracle.name = "oracle"
    data = EvalData.from_world(world_dir)
    request = data.requests[0]
    chosen = settings(args.limit)
    runs = []
    for method_name in args.methods.split(","):
        tick = time.perf_counter()
        method = get_method(method_name)
        unlearned = method.unlearn(target.clone(), request, UnlearnContext(retain=world.retain, seed=0))
        unlearned.name = method_name
        timings[f"{method_name}_unlearn_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        results = run_attacks(ATTACKS, unlearned, data, target, oracle, chosen)
        timings[f"{method_name}_attacks_s"] = time.perf_counter() - tick
        runs.append({"method": method_name, "settings": method.model_dump(mode="json"), "results": [r.to_json() for r in results]})
        write(args.out, args, chosen, runs, timings)  # after each method: a partial result survives
        print_table(method_name, results)


def write(path: str, args: argparse.Namespace, chosen: dict[str, Any], runs: list[dict[str, Any]], timings: dict[str, float]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "world": {"size": args.size, "seed": 0, "num_requests": 1},
        "prepare_epochs": args.epochs,
        "attack_settings": chosen,
        "timings": timings,
        "runs": runs,
    }
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out)


def print_table(method: str, results: list[Any]) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"\n## {method}\n\n| attack | variant | metric | before | after | target | recovered | oracle before | oracle after | oracle recovered |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        for row in result.rows:
            metric = f"{row.metric} (kept)" if row.collateral else row.metric
            values = (row.before, row.after, row.target, row.recovered, row.oracle_before, row.oracle_after, row.oracle_recovered)
            print(f"| {result.attack} | {row.variant} | {metric} | " + " | ".join(fmt(v) for v in values) + " |")
        for note in result.notes:
            print(f"<!-- {result.attack}: {note} -->")


if __name__ == "__main__":
    main()
