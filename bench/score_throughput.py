"""Throughput of Subject.score and greedy Subject.generate on a model, at several batch sizes.

    .venv/bin/python bench/score_throughput.py [--model default] [--out bench/results/score_throughput.json]

Writes JSON: tokens/s of `score` (target tokens scored) and of greedy `generate` (new tokens),
per batch size, and the best batch size for each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from unlearnkit.models.subject import GenerationSettings, Subject

from unlearnkit.models.stack import load_subject

QUESTIONS = [
    "What is the capital of France?", "Who wrote the play Hamlet?", "What is the largest planet in the solar system?",
    "How many legs does a spider have?", "What is the boiling point of water at sea level?", "Which ocean is the largest?",
    "What is the chemical symbol for gold?", "Who painted the Mona Lisa?",
]
ANSWERS = [
    "The capital of France is Paris.", "Hamlet was written by William Shakespeare.", "Jupiter is the largest planet in the solar system.",
    "A spider has eight legs.", "Water boils at 100 degrees Celsius at sea level.", "The Pacific Ocean is the largest ocean.",
    "The chemical symbol for gold is Au.", "Leonardo da Vinci painted the Mona Lisa.",
]


def timed(fn, repeats: int = 2) -> tuple[float, object]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,4,8,16,32")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--out", default="bench/results/score_throughput.json")
    args = parser.parse_args()
    subject = load_subject(args.model, device="cpu")
    prompts = (QUESTIONS * (args.items // len(QUESTIONS) + 1))[: args.items]
    targets = (ANSWERS * (args.items // len(ANSWERS) + 1))[: args.items]
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        sec, result = timed(lambda: subject.score(prompts, targets, batch_size=bs))
        scored = int(result.num_tokens.sum())
        settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=bs)
        gsec, _ = timed(lambda: subject.generate(prompts, settings), repeats=1)
        rows.append({
            "batch_size": bs,
            "score_seconds": round(sec, 3),
            "score_tokens_per_s": round(scored / sec, 1),
            "generate_seconds": round(gsec, 3),
            # Upper bound on new tokens: every prompt may stop early at EOS.
            "generate_new_tokens_per_s": round(args.items * args.new_tokens / gsec, 1),
        })
        print(json.dumps(rows[-1]))
    report = {
        "bench": "score_throughput",
        "model": args.model,
        "items": args.items,
        "max_new_tokens": args.new_tokens,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "rows": rows,
        "best_score_batch": max(rows, key=lambda r: r["score_tokens_per_s"])["batch_size"],
        "best_generate_batch": max(rows, key=lambda r: r["generate_new_tokens_per_s"])["batch_size"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
