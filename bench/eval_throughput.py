"""Throughput of the evaluation suites, what the shared forward passes save, and what the
reference form of a suite costs against unlearnkit's variant.

    .venv/bin/python bench/eval_throughput.py [--model default] [--suites quick,tofu,tofu_ours,muse,mia]
        [--limit 2] [--max-new-tokens 16] [--repeats 1] [--modes shared,per_metric]
        [--out bench/results/eval_throughput.json]

Builds a small built-in world (seed 0), then for each suite runs `evaluate` on the same model:
with the shared-pass memo (as the product runs) and, in mode `per_metric`, with `share=False`
(each metric computes its own passes, the baseline). Each timing is the median of `--repeats`
runs. Writes JSON: records evaluated, seconds, items/s, and the score items / generations
computed. Wall-clock figures depend on the machine's load; the pass counts do not.

Before/after: the script uses only what every version of unlearnkit since the shared passes has
(`build_world`, `EvalData.from_world`, `evaluate`), so it runs unchanged against an older tree:
`PYTHONPATH=OLD_TREE/src .venv/bin/python bench/eval_throughput.py ...`. A suite the tree does not
have (`tofu_ours` before it existed) is skipped and listed under `skipped`. The JSON records which
tree was measured (`unlearnkit`: its path and git commit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import unlearnkit
from unlearnkit.benchmark.world import build_world
from unlearnkit.eval.data import EvalData
from unlearnkit.eval.suites import SUITES, evaluate, get_suite, with_max_new_tokens
from unlearnkit.models.stack import load_subject
from unlearnkit.models.subject import Subject


def records_evaluated(data: EvalData) -> int:
    return sum(data.sizes().values()) + sum(len(r.probes) for r in data.requests)


def run(subject: Subject, data: EvalData, suite_name: str, limit: int, max_new_tokens: int, share: bool, repeats: int) -> dict:
    suite = replace(with_max_new_tokens(get_suite(suite_name), max_new_tokens), per_set=limit)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = evaluate(suite, subject, data, oracle=None, share=share)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    items = records_evaluated(data.limited(limit))
    return {
        "seconds": round(median, 3),
        "all_seconds": [round(s, 3) for s in seconds],
        "items": items,
        "items_per_s": round(items / median, 3),
        "rows": len(result.rows),
        **result.passes,
    }


def tree() -> dict[str, str]:
    """Which unlearnkit is measured: its source folder and, where it is a git checkout, the commit."""
    src = Path(unlearnkit.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"path": str(src), "commit": commit}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--suites", default="quick,tofu,muse,mia")
    parser.add_argument("--limit", type=int, default=2, help="records per kind and set")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="runs per timing (the median is kept)")
    parser.add_argument("--modes", default="shared,per_metric", help="shared (as the product runs) and/or per_metric (the baseline)")
    parser.add_argument("--world-size", default="small", help="the built-in world's size (tiny, small, ...)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="bench/results/eval_throughput.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    subject = load_subject(args.model, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = EvalData.from_world(build_world(Path(tmp) / "world", seed=0, size=args.world_size, num_requests=2))
    run(subject, data, "quick", 1, 1, share=True, repeats=1)  # warm-up: first calls pay for kernel set-up
    report: dict = {
        "model": args.model,
        "unlearnkit": tree(),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "limit_per_kind_and_set": args.limit,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "world_size": args.world_size,
        "suites": {},
        "skipped": [],
    }
    for name in args.suites.split(","):
        if name not in SUITES:
            report["skipped"].append(name)
            print(f"{name}: not a suite of this tree, skipped", flush=True)
            continue
        entry: dict = {}
        if "shared" in modes:
            entry["shared"] = run(subject, data, name, args.limit, args.max_new_tokens, True, args.repeats)
        if "per_metric" in modes:
            entry["per_metric"] = run(subject, data, name, args.limit, args.max_new_tokens, False, args.repeats)
        if "shared" in entry and "per_metric" in entry:
            shared, alone = entry["shared"], entry["per_metric"]
            entry |= {
                "score_items_saved": alone["score_computed"] - shared["score_computed"],
                "generations_saved": alone["generate_computed"] - shared["generate_computed"],
                "speedup": round(alone["seconds"] / shared["seconds"], 2),
            }
        report["suites"][name] = entry
        print(name, json.dumps(entry), flush=True)
    if "tofu" in report["suites"] and "tofu_ours" in report["suites"] and "shared" in modes:
        reference, ours = report["suites"]["tofu"]["shared"], report["suites"]["tofu_ours"]["shared"]
        report["tofu_reference_over_ours"] = {
            "seconds": round(reference["seconds"] / ours["seconds"], 3),
            "score_computed": round(reference["score_computed"] / max(1, ours["score_computed"]), 3),
        }
        print("tofu (reference form) / tofu_ours:", json.dumps(report["tofu_reference_over_ours"]), flush=True)
    report["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp_out.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
