"""Throughput of the evaluation suites, and what the shared forward passes save.

    .venv/bin/python bench/eval_throughput.py [--model default] [--suites quick,tofu,muse,mia]
        [--limit 2] [--max-new-tokens 16] [--out bench/results/eval_throughput.json]

Builds a small built-in world (seed 0), then for each suite runs `evaluate` twice on the same
model: with the shared-pass memo (as the product runs) and with `share=False` (each metric
computes its own passes, the baseline). Writes JSON: records evaluated, seconds, items/s, and the
score items / generations computed with and without sharing. Wall-clock figures depend on the
machine's load; the pass counts do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from unlearnkit.benchmark.world import build_world
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.suites import evaluate, get_suite, with_max_new_tokens
from unlearnkit.models.subject import Subject
from unlearnkit.models.stack import load_subject


def records_evaluated(data: EvalData) -> int:
    return sum(data.sizes().values()) + sum(len(r.probes) for r in data.requests)


def run(subject: Subject, data: EvalData, suite_name: str, limit: int, max_new_tokens: int, share: bool) -> dict:
    suite = replace(with_max_new_tokens(get_suite(suite_name), max_new_tokens), per_set=limit)
    start = time.perf_counter()
    result = evaluate(suite, subject, data, oracle=None, share=share)
    seconds = time.perf_counter() - start
    items = records_evaluated(data.limited(limit))
    return {"seconds": round(seconds, 2), "items": items, "items_per_s": round(items / seconds, 3), "rows": len(result.rows), **result.passes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--suites", default="quick,tofu,muse,mia")
    parser.add_argument("--limit", type=int, default=2, help="records per kind and set")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="bench/results/eval_throughput.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    subject = load_subject(args.model, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = EvalData.from_world(build_world(Path(tmp) / "world", seed=0, size="small", num_requests=2))
    run(subject, data, "quick", 1, 1, share=True)  # warm-up: first calls pay for kernel set-up
    report: dict = {
        "model": args.model,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "limit_per_kind_and_set": args.limit,
        "max_new_tokens": args.max_new_tokens,
        "suites": {},
    }
    for name in args.suites.split(","):
        shared = run(subject, data, name, args.limit, args.max_new_tokens, share=True)
        alone = run(subject, data, name, args.limit, args.max_new_tokens, share=False)
        report["suites"][name] = {
            "shared": shared,
            "per_metric": alone,
            "score_items_saved": alone["score_computed"] - shared["score_computed"],
            "generations_saved": alone["generate_computed"] - shared["generate_computed"],
            "speedup": round(alone["seconds"] / shared["seconds"], 2),
        }
        print(name, json.dumps(report["suites"][name]), flush=True)
    report["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp_out.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
