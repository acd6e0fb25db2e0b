"""Issue 7's measurement: every attack's recovered fraction next to the oracle's, on the default
model, after one NPO request and after one SSU request (each from the same target).

    .venv/bin/python bench/attacks_measure.py [--recipe quick|prepare] [--people-facts 6] [--out ...]

Steps: build a tiny world with one request; make the target and the oracle; unlearn the request
with NPO and with SSU; run all attacks on both unlearned models with the target and the oracle.

Recipes for the target and the oracle:
- `prepare`: `benchmark.prepare.prepare_world` (every trained person's QA and biography), cached.
- `quick` (what fits a shared 2-core CPU): the shared loop (`training.train`, `FineTune`) on
  the QA facts only of the forgotten person and of their neighbour (`--people-facts` each);
  the oracle on the neighbour's alone. The request is cut to the same facts.
Settings are scaled down (`settings()`); the JSON keeps them, the timings and every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from unlearnkit.data.schema import Record
from unlearnkit.benchmark.world import build_world
from unlearnkit.data.world import load_world
from unlearnkit.training import FineTune, TrainConfig, train
from unlearnkit.benchmark.prepare import PrepareSettings, default_train_config, prepare_world
from unlearnkit.eval.attacks import AttackResult, run_attacks
from unlearnkit.eval.data import EvalData
from unlearnkit.methods.base import UnlearnContext, get_method
from unlearnkit.models.subject import Subject
from unlearnkit.models.stack import load_subject

# Method settings: the defaults' learning rates barely move a model fine-tuned for 8 steps, so
# both get the larger rate that the project's own examples use (docs/sequential.md).
METHODS: dict[str, dict[str, Any]] = {"npo": {"lr": 5e-5}, "ssu": {"lr": 1e-4}}
QUICK_TRAIN = TrainConfig(lr=5e-4, max_steps=8, batch_size=8, schedule="constant", weight_decay=0.0, seed=0)
ATTACKS = ["leak_at_k", "quantize", "relearn", "paraphrase", "two_hop", "mixed", "in_context", "multi_turn"]


def settings(limit: int) -> dict[str, dict[str, Any]]:
    # One greedy length everywhere, so the plain forget questions are answered once per model.
    common = {"limit": limit, "max_new_tokens": 24}
    return {
        "leak_at_k": {**common, "n": 8, "ks": [1, 4, 8]},
        "quantize": {**common, "bits": [8, 4]},
        "relearn": {**common, "steps": 4, "batch_size": 2, "lr": 1e-4},
        **{name: dict(common) for name in ("paraphrase", "two_hop", "in_context", "multi_turn")},
        "mixed": {**common, "max_new_tokens": 32},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="tiny", help="world size (tiny: one person per request)")
    parser.add_argument("--recipe", default="quick", choices=["quick", "prepare"])
    parser.add_argument("--people-facts", type=int, default=4, help="quick recipe: QA facts per person")
    parser.add_argument("--limit", type=int, default=4, help="QA records per request and attack")
    parser.add_argument("--epochs", type=float, default=None, help="target/oracle fine-tuning epochs (default: prepare's)")
    parser.add_argument("--methods", default="npo,ssu", help="name or name:key=value;key=value, comma-separated")
    parser.add_argument("--out", default="bench/results/attacks_measure.json")
    parser.add_argument("--world", default="bench/results/attacks_world")
    parser.add_argument("--table", help="only print the markdown tables of this results JSON")
    args = parser.parse_args()
    if args.table:
        for run in json.loads(Path(args.table).read_text())["runs"]:
            print_table(run["method"], [AttackResult.from_json(r) for r in run["results"]])
        return
    torch.manual_seed(0)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    world_dir = Path(args.world)
    if not (world_dir / "world.json").exists():
        build_world(world_dir, seed=0, size=args.size, num_requests=1)
    world = load_world(world_dir)
    data = EvalData.from_world(world_dir)
    if args.recipe == "prepare":
        # An existing world with K requests (the demo's) uses its first request and oracle-1,
        # which `unlearnkit demo` has already cached.
        train_config = default_train_config()
        if args.epochs is not None:
            train_config = train_config.model_copy(update={"epochs": args.epochs})
        prepare = PrepareSettings(train=train_config, oracles="all" if len(world.requests) > 1 else "final")
        prepared = prepare_world("default", world_dir, prepare)
        target, oracle = load_subject(prepared.target, device="cpu"), load_subject(prepared.oracles[1], device="cpu")
        data = replace(data, requests=data.requests[:1])
    else:
        target, oracle, data = quick_models(data, args.people_facts)
    target.name, oracle.name = "target", "oracle"
    timings["prepare_s"] = time.perf_counter() - tick
    request = data.requests[0]
    chosen = settings(args.limit)
    runs = []
    for spec in args.methods.split(","):
        method_name, _, extra = spec.partition(":")
        overrides = {k: json.loads(v) for k, v in (pair.split("=", 1) for pair in extra.split(";") if pair)}
        tick = time.perf_counter()
        method = get_method(method_name, {**METHODS.get(method_name, {}), **overrides})
        unlearned = method.unlearn(target.clone(), request, UnlearnContext(retain=world.retain, seed=0))
        unlearned.name = method_name
        timings[f"{method_name}_unlearn_s"] = time.perf_counter() - tick
        print(f"{method_name}: unlearned in {timings[f'{method_name}_unlearn_s']:.0f} s", flush=True)
        tick = time.perf_counter()
        results = run_attacks(ATTACKS, unlearned, data, target, oracle, chosen)
        timings[f"{method_name}_attacks_s"] = time.perf_counter() - tick
        runs.append({"method": method_name, "settings": method.model_dump(mode="json"), "results": [r.to_json() for r in results]})
        write(args.out, args, chosen, runs, timings)  # after each method: a partial result survives
        print_table(method_name, results)


def quick_models(data: EvalData, per_person: int) -> tuple[Subject, Subject, EvalData]:
    """Target and oracle through the shared loop on a few QA facts (see the module doc)."""
    request = data.requests[0]
    forgotten = [r for r in request.records if r.kind == "qa"][:per_person]
    related = {p.meta.get("via") for p in request.probes}
    neighbour = [r for r in data.neighbours if r.kind == "qa" and r.meta.get("person") in related][:per_person]
    base = load_subject("default", device="cpu")
    models = []
    for records in (forgotten + neighbour, neighbour):
        subject = base.clone()
        examples: list[Any] = [{"x": subject.encode_record(r, where=r.id or "")} for r in records]
        stats = train(subject, examples, FineTune(), QUICK_TRAIN, description="quick fine-tune")
        print(f"fine-tuned on {len(records)} facts: {stats.steps} steps, loss {stats.history[0]['loss']:.3f} -> {stats.history[-1]['loss']:.3f}", flush=True)
        models.append(subject)
    cut = request.model_copy(update={"records": forgotten, "probes": [p for p in request.probes if p.meta.get("via") in related]})
    # The trained, kept facts are the neighbour's: they are what the mixed prompt's retain half asks.
    return models[0], models[1], replace(data, requests=[cut], retain=neighbour)


def write(path: str, args: argparse.Namespace, chosen: dict[str, Any], runs: list[dict[str, Any]], timings: dict[str, float]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "world": {"size": args.size, "seed": 0, "num_requests": 1},
        "recipe": args.recipe,
        "quick_train": QUICK_TRAIN.model_dump() if args.recipe == "quick" else None,
        "people_facts": args.people_facts,
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
            print(f"<!-- {result.attack}: {note} -->", flush=True)


if __name__ == "__main__":
    main()
